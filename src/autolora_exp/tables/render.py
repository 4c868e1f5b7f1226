"""Tables as data, written as Markdown and LaTeX.

A :class:`Table` is a header and rows of entries. An entry is a label (``str``), a number
aggregated over seeds (:class:`Value`, printed as ``median [min-max] n=N``), or a
:class:`Missing` cell (printed ``-`` when nothing ran, ``failed`` when every run of the cell
failed). Footnotes travel with the table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from autolora_exp.tables.load import Stat

MISSING_MD = "–"


@dataclass(frozen=True)
class Value:
    """An aggregated number; ``scale`` and ``digits`` set how it prints (x100 for accuracies)."""

    stat: Stat
    scale: float = 1.0
    digits: int = 1
    #: runs of this cell that failed (their records are listed under the table)
    failed: int = 0
    #: extra marker after the number (a footnote sign)
    mark: str = ""
    #: print the spread and n (False for derived numbers such as an average of medians)
    spread: bool = True

    def number(self, x: float) -> str:
        return f"{x * self.scale:.{self.digits}f}"

    def md(self) -> str:
        text = self.number(self.stat.median) + self.mark
        if self.spread:
            text += f" [{self.number(self.stat.lo)}–{self.number(self.stat.hi)}] n={self.stat.n}"
        if self.failed:
            text += f" (+{self.failed} failed)"
        return text

    def tex(self) -> str:
        text = self.number(self.stat.median) + _tex_mark(self.mark)
        if self.spread:
            text += (rf"\,{{\scriptsize[{self.number(self.stat.lo)}--{self.number(self.stat.hi)}]"
                     rf"$_{{n={self.stat.n}}}$}}")
        if self.failed:
            text += rf"\,{{\scriptsize(+{self.failed} failed)}}"
        return text


@dataclass(frozen=True)
class Missing:
    """A cell with no completed run: ``failed`` of its runs failed (0 = none was found)."""

    failed: int = 0

    def md(self) -> str:
        return f"failed ({self.failed})" if self.failed else MISSING_MD

    def tex(self) -> str:
        return rf"\textit{{failed ({self.failed})}}" if self.failed else "--"


Entry = Union[str, Value, Missing]


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[Entry]]
    notes: list[str] = field(default_factory=list)
    #: rows after which a rule is drawn (e.g. before a reference row)
    rules_after: list[int] = field(default_factory=list)

    def entries(self) -> list[Entry]:
        return [e for row in self.rows for e in row]


def _md_text(entry: Entry) -> str:
    return entry if isinstance(entry, str) else entry.md()


def _tex_text(entry: Entry) -> str:
    return tex_escape(entry) if isinstance(entry, str) else entry.tex()


def _tex_mark(mark: str) -> str:
    return {"†": r"$^\dagger$", "‡": r"$^\ddagger$", "*": r"$^*$"}.get(mark, tex_escape(mark))


def tex_escape(text: str) -> str:
    """Escape LaTeX specials; the few non-ASCII signs the tables use become math."""
    out = []
    for ch in text:
        if ch in "&%$#_{}":
            out.append("\\" + ch)
        elif ch == "~":
            out.append(r"\textasciitilde{}")
        elif ch == "^":
            out.append(r"\textasciicircum{}")
        elif ch == "\\":
            out.append(r"\textbackslash{}")
        else:
            out.append({"η": r"$\eta$", "–": "--", "×": r"$\times$", "†": r"$^\dagger$",
                        "‡": r"$^\ddagger$", "≥": r"$\geq$", "↓": r"$\downarrow$", "↑": r"$\uparrow$"}.get(ch, ch))
    return "".join(out)


def to_markdown(table: Table) -> str:
    lines = [f"### {table.title}", "", "| " + " | ".join(h.replace("|", "\\|") for h in table.header) + " |",
             "|" + "|".join(["---"] + [":-:"] * (len(table.header) - 1)) + "|"]
    for row in table.rows:
        lines.append("| " + " | ".join(_md_text(e).replace("|", "\\|") for e in row) + " |")
    if table.notes:
        lines.append("")
        lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def to_latex(table: Table) -> str:
    """A ``table`` float with a ``tabular`` (booktabs rules); notes as a footnotesize paragraph."""
    cols = "l" + "c" * (len(table.header) - 1)
    lines = [r"\begin{table}[t]", r"\centering", r"\resizebox{\linewidth}{!}{%",
             rf"\begin{{tabular}}{{{cols}}}", r"\toprule",
             " & ".join(tex_escape(h) for h in table.header) + r" \\", r"\midrule"]
    for i, row in enumerate(table.rows):
        lines.append(" & ".join(_tex_text(e) for e in row) + r" \\")
        if i in table.rules_after and i != len(table.rows) - 1:
            lines.append(r"\midrule")
    lines += [r"\bottomrule", r"\end{tabular}}", rf"\caption{{{tex_escape(table.title)}}}"]
    if table.notes:
        lines.append(r"\par\footnotesize " + " ".join(tex_escape(n) for n in table.notes))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
