"""Paired per-seed comparisons beside a GLUE table: each AutoLoRA row against LoRA r=4 and AdaLoRA.

A median [min–max] per method hides whether two methods differ on the same seeds; this table
shows, per task, the mean paired difference (method - reference) x100 over the seeds both
ran, its 95% percentile bootstrap interval and how many seeds went up
(:mod:`autolora_exp.paired_bootstrap`). The table needs a cell with at least two shared seeds;
only cells with ``MIN_SEEDS`` (5) shared seeds get an interval; a row is shown only when its
reference ran.
"""

from __future__ import annotations

from collections.abc import Sequence

from autolora_exp.paired_bootstrap import MIN_SEEDS, describe, paired_difference
from autolora_exp.tables.layout import method_label, rows_of, task_label
from autolora_exp.tables.load import Collection
from autolora_exp.tables.render import Table

#: (method, variant) the AutoLoRA rows are compared against, in this order
REFERENCES = (("lora", "r=4"), ("adalora", ""))


def compared_rows(col: Collection, layout: Sequence[str]) -> list[tuple[str, str]]:
    """The rows compared against the references: AutoLoRA and its presets and ablations."""
    return [(m, v) for m, v in rows_of(col, layout) if m.startswith("autolora")]


def seed_scores(cells: dict, key: tuple[str, str, str, str, str]) -> dict[int, float]:
    """seed -> primary score of the runs of one cell (``cells``: :meth:`Collection.cells`)."""
    return {r.seed: r.scores[r.primary] for r in cells.get(key, []) if r.primary in r.scores}


def paired_table(col: Collection, experiment: str, model: str, tasks: Sequence[str], layout: Sequence[str],
                 level: float = 0.95) -> Table | None:
    """None when no compared row shares two seeds with a reference on any task."""
    rows, any_pair, cells_of = [], False, col.cells()
    for ref in REFERENCES:
        for method, variant in compared_rows(col, layout):
            cells = []
            for task in tasks:
                a = seed_scores(cells_of, (experiment, task, model, method, variant))
                b = seed_scores(cells_of, (experiment, task, model, *ref))
                diff = paired_difference(a, b, level=level)
                any_pair |= diff is not None and diff.n >= 2
                cells.append(describe(diff))
            if any(c != "–" for c in cells):
                rows.append([method_label(method, variant), method_label(*ref), *cells])
    if not any_pair:
        return None
    notes = [f"Model: {model}. Mean over the shared seeds of (method - reference), dev score x100, "
             f"[{level:.0%} percentile bootstrap interval of that mean, 10,000 resamples]; "
             "n = seeds both ran; k/n up = seeds where the method scored higher.",
             f"The interval is given from n = {MIN_SEEDS} seeds on (below, n same-signed differences would "
             "exclude 0 by chance too often); one that excludes 0 separates the two at that level. It is at "
             "most as wide as the spread of the differences."]
    return Table(f"Paired differences against LoRA r=4 and AdaLoRA ({model})",
                 ["Method", "Against", *[task_label(t) for t in tasks]], rows, notes)
