"""Any other experiment in the folder (a plain run, a new sweep): its primary metric per
method and task, so that no result is left out of the output."""

from __future__ import annotations

from autolora_exp.tables.layout import Fmt, entry, method_label, rows_of, task_label
from autolora_exp.tables.load import Collection
from autolora_exp.tables.render import Entry, Table
from autolora_exp.tables.section import Section


def generic(col: Collection, experiment: str) -> Section:
    section = Section(experiment, f"Runs of '{experiment}'", failures=list(col.failures), runs=len(col.runs))
    keys = set(col.cells()) | set(col.failed_cells())
    columns = sorted({(k[1], k[2]) for k in keys})
    primaries = {(r.task, r.model): r.primary for r in col.runs}
    header = ["Method"] + [f"{task_label(t)}, {m} ({primaries.get((t, m), '?')})" for t, m in columns]
    rows: list[list[Entry]] = []
    for method, variant in rows_of(col, []):
        rows.append([method_label(method, variant),
                     *[entry(col, (experiment, t, m, method, variant), fmt=Fmt(1, 4)) for t, m in columns]])
    section.tables.append(Table(section.title, header, rows,
                                ["The task's primary metric as the run reports it (unscaled), median over seeds "
                                 "[min–max], n = seeds; test split where the task has one, else the first dev split."]))
    return section
