"""Tables as data, written as Markdown and LaTeX.

A :class:`Table` is a header and rows of entries. An entry is a label (``str``), a number
aggregated over seeds (:class:`Value`, printed as ``median [min-max] n=N``, or
``n=2 of 4, 1 NaN, 1 failed`` when some runs of the cell gave no finite value), or a
:class:`Missing` cell (printed ``-`` when nothing ran, ``failed (k)`` when every run of the
cell failed, ``– (k NaN)`` when every completed run's value is NaN). Footnotes travel with
the table.
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

    def count(self) -> str:
        """``3``, or ``2 of 4, 1 NaN, 1 failed``: the seeds behind the number, and the others."""
        others = self.stat.nonfinite_counts() + ([f"{self.failed} failed"] if self.failed else [])
        if not others:
            return str(self.stat.n)
        return f"{self.stat.n} of {self.stat.n + len(self.stat.nonfinite) + self.failed}, " + ", ".join(others)

    def md(self) -> str:
        text = self.number(self.stat.median) + self.mark
        if self.spread:
            text += f" [{self.number(self.stat.lo)}–{self.number(self.stat.hi)}] n={self.count()}"
        return text

    def tex(self) -> str:
        text = self.number(self.stat.median) + _tex_mark(self.mark)
        if self.spread:
            count = self.count()
            # n as a subscript; the runs left out (NaN, failed) as text after it
            n, _, others = count.partition(", ")
            text += (rf"\,{{\scriptsize[{self.number(self.stat.lo)}--{self.number(self.stat.hi)}]"
                     rf"$_{{n={tex_escape(n)}}}$" + (f" ({tex_escape(others)})" if others else "") + "}")
        return text


@dataclass(frozen=True)
class Missing:
    """A cell with no finite value: ``failed`` of its runs failed, ``nonfinite`` (e.g.
    ``["2 NaN"]``) completed with a NaN/inf value; neither = no run was found."""

    failed: int = 0
    nonfinite: tuple[str, ...] = ()

    def md(self) -> str:
        if self.nonfinite:
            return f"{MISSING_MD} (" + ", ".join([*self.nonfinite, *([f"{self.failed} failed"] if self.failed else [])]) + ")"
        return f"failed ({self.failed})" if self.failed else MISSING_MD

    def tex(self) -> str:
        if self.nonfinite or self.failed:
            return rf"\textit{{{tex_escape(self.md())}}}"
        return "--"


def value_or_missing(stat: Stat | None, scale: float = 1.0, digits: int = 1, failed: int = 0) -> "Value | Missing":
    """A cell: the number when some run gave a finite value, else what happened to its runs."""
    if stat is None:
        return Missing(failed)
    if not stat.n:
        return Missing(failed, tuple(stat.nonfinite_counts()))
    return Value(stat, scale, digits, failed)


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
