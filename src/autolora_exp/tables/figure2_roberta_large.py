"""Figure 2: RoBERTa-large on MRPC, QQP and SST-2, as grouped bars (and the same numbers as a table).

One group of bars per task, one bar per method: the median over seeds of the dev accuracy
x100, the error bar spanning min-max, n printed above the bar. A cell without a completed run
gets no bar but the word "missing" (or "failed") at its place, so an absent result is seen.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from autolora_exp.atomic import atomic_save_figure
from autolora_exp.tables.layout import (BASELINES, entry, method_label, missing_cells, models_of, ordered,
                                        params_entry, rows_of, task_label)
from autolora_exp.tables.load import Collection
from autolora_exp.tables.render import Entry, Missing, Table, Value
from autolora_exp.tables.section import Section

FIGURE2_TASKS = ("glue/mrpc", "glue/qqp", "glue/sst2")


def bars_png(path: Path, tasks: list[str], series: list[tuple[str, list[Entry]]], title: str,
             ylabel: str = "dev score x100") -> Path:
    """Grouped bars: ``series`` = [(method label, one entry per task)]."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    fig = Figure(figsize=(max(5.0, 1.6 * len(tasks) + 2.5), 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(len(series), 1)
    values = [e.stat for _, entries in series for e in entries if isinstance(e, Value)]
    top = max((s.hi * 100 for s in values), default=100.0)
    bottom = min((s.lo * 100 for s in values), default=0.0)
    floor = max(0.0, bottom - 0.15 * max(top - bottom, 1.0))
    for i, (label, entries) in enumerate(series):
        xs = [t + (i - (len(series) - 1) / 2) * width for t in range(len(tasks))]
        for x, e in zip(xs, entries):
            if isinstance(e, Value):
                s = e.stat
                ax.bar(x, s.median * 100 - floor, width, bottom=floor, color=f"C{i}")
                ax.errorbar(x, s.median * 100, yerr=[[(s.median - s.lo) * 100], [(s.hi - s.median) * 100]],
                            color="black", capsize=2, linewidth=0.8)
                bad = ", ".join(s.nonfinite_counts())  # seeds left out of the bar (NaN scores)
                ax.text(x, s.hi * 100, f"n={s.n}" + (f" (+{bad})" if bad else ""), ha="center", va="bottom", fontsize=6)
            else:
                ax.text(x, floor, "failed" if isinstance(e, Missing) and e.failed else "missing",
                        rotation=90, ha="center", va="bottom", fontsize=7, color="gray")
    ax.set_xticks(range(len(tasks)), [task_label(t) for t in tasks])
    ax.set_ylim(floor, top + 0.12 * max(top - floor, 1.0))
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    # one legend entry per method, even when none of its bars exists
    handles = [Patch(color=f"C{i}", label=label) for i, (label, _) in enumerate(series)]
    ax.legend(handles=handles, fontsize=7, ncols=min(len(series), 5), loc="upper center", bbox_to_anchor=(0.5, -0.1))
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=150)


def figure2(col: Collection, experiment: str) -> Section:
    title = "Figure 2: RoBERTa-large"
    section = Section(experiment, title, failures=list(col.failures), runs=len(col.runs))
    tasks = ordered({k[1] for k in col.cells()} | {k[1] for k in col.failed_cells()}, FIGURE2_TASKS)
    for model in models_of(col):
        series = []
        rows: list[list[Entry]] = []
        for method, variant in rows_of(col, BASELINES):
            keys = [(experiment, t, model, method, variant) for t in tasks]
            entries = [entry(col, k) for k in keys]
            series.append((method_label(method, variant), entries))
            rows.append([method_label(method, variant), params_entry(col, keys), *entries])
            section.missing += missing_cells(col, keys)
        header = ["Method", "Params"] + [task_label(t) for t in tasks]
        notes = [f"Model: {model}. Median over seeds of the dev accuracy x100 [min–max], n = seeds."]
        section.tables.append(Table(f"{title} ({model})", header, rows, notes))
        section.figures[f"figure2_{model}.png"] = partial(bars_png, tasks=tasks, series=series,
                                                          title=f"{model}: median over seeds, bars min–max")
    return section
