"""Table 1 (every method on GLUE) and Table 4 (AutoLoRA's ablations on GLUE).

Rows are methods with their trainable parameters, columns the eight GLUE tasks and their
average. A cell is the median over seeds of the task's metric x100 (CoLA: Matthews
correlation, STS-B: Spearman, the others: accuracy; MNLI: matched), with its min-max range
and the number of seeds. Avg is the mean over tasks of the per-task medians, as the LoRA
paper's Avg. column; with a task missing it is the mean over the tasks present, marked †.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from autolora_exp.tables.layout import (ABLATIONS, BASELINES, EVIDENCE, GLUE_TASKS, entry, method_label,
                                        missing_cells, models_of, ordered, params_entry, rows_of, task_label)
from autolora_exp.tables.load import Collection, Stat
from autolora_exp.tables.paired import paired_table
from autolora_exp.tables.ranks import add_rank_heatmaps
from autolora_exp.tables.render import Entry, Missing, Table, Value
from autolora_exp.tables.section import Section

#: AutoLoRA's GLUE average as the paper reports it (RoBERTa-base, Table 1); the only paper
#: number the tables show, as a reference row of the full-scale Table 1
PAPER_AUTOLORA_GLUE_AVG = 85.5


def task_columns(col: Collection, paper_columns: bool = True) -> list[str]:
    """The task columns: the paper's eight GLUE tasks (a task not run is a missing cell), then any
    other task found; with ``paper_columns=False`` only the tasks that ran, in the paper's order."""
    found = {k[1] for k in col.cells()} | {k[1] for k in col.failed_cells()}
    if paper_columns:
        return ordered(found, GLUE_TASKS)
    return [t for t in GLUE_TASKS if t in found] + sorted(found - set(GLUE_TASKS))


def glue_table(col: Collection, experiment: str, model: str, methods: Sequence[str], title: str,
               reference_row: bool = False, paper_columns: bool = True) -> Table:
    tasks = task_columns(col, paper_columns)
    header = ["Method", "Params"] + [task_label(t) for t in tasks] + ["Avg."]
    rows: list[list[Entry]] = []
    partial = False
    for method, variant in rows_of(col, methods):
        keys = [(experiment, t, model, method, variant) for t in tasks]
        cells = [entry(col, k) for k in keys]
        medians = [c.stat.median for c in cells if isinstance(c, Value)]
        avg: Entry = Missing()
        if medians:
            complete = len(medians) == len(tasks)
            partial |= not complete
            avg = Value(Stat((fmean(medians),), (0,)), scale=100.0, spread=False, mark="" if complete else "†")
        rows.append([method_label(method, variant), params_entry(col, keys), *cells, avg])
    notes = [f"Model: {model}. Median over seeds of the dev score x100 [min–max], n = seeds; "
             "CoLA: Matthews correlation, STS-B: Spearman, others: accuracy (MNLI: matched).",
             "Avg.: mean over tasks of the per-task medians."]
    no_epochs = sorted({method_label(r.method, r.variant) for r in col.runs if r.best_epoch is None})
    if no_epochs:
        notes.append(f"{', '.join(no_epochs)}: the final model's score, whatever --select says: its search trains "
                     "the final model (rank chosen on D_val), which has no epochs to select among.")
    if partial:
        notes.append("†: mean over the tasks present only (a task is missing or failed).")
    table = Table(title, header, rows, notes)
    if reference_row:
        table.rules_after.append(len(rows) - 1)
        table.rows.append(["AutoLoRA (paper, reported)", "", *([""] * len(tasks)), f"{PAPER_AUTOLORA_GLUE_AVG:.1f}"])
        table.notes.append("Last row: the GLUE average the AutoLoRA paper reports for RoBERTa-base; "
                           "its per-task numbers are not reproduced here.")
    return table


def _section(col: Collection, experiment: str, methods: Sequence[str], title: str, reference: bool,
             paper_columns: bool = True) -> Section:
    section = Section(experiment, title, failures=list(col.failures), runs=len(col.runs))
    for model in models_of(col):
        sub = Collection([r for r in col.runs if r.model == model], [f for f in col.failures if f.model == model])
        is_paper_model = model == "roberta-base" and not experiment.startswith("mini/")
        section.tables.append(glue_table(sub, experiment, model, methods, f"{title} ({model})",
                                         reference_row=reference and is_paper_model, paper_columns=paper_columns))
        tasks = task_columns(sub, paper_columns)
        present = [t for t in tasks if any(k[1] == t for k in sub.cells())]
        paired = paired_table(sub, experiment, model, present, methods)
        if paired is not None:
            section.tables.append(paired)
        section.missing += missing_cells(sub, [(experiment, t, model, m, v) for m, v in rows_of(sub, methods)
                                               for t in tasks])
    return section


def table1(col: Collection, experiment: str) -> Section:
    return _section(col, experiment, BASELINES, "Table 1: GLUE, every method", reference=True)


def table4(col: Collection, experiment: str) -> Section:
    return _section(col, experiment, ABLATIONS, "Table 4: AutoLoRA ablations on GLUE", reference=False)


#: the evidence rows whose ranks differ per layer: their heatmaps go beside the tables
RANK_ALLOCATING = ("adalora", "autolora", "autolora_authors", "autolora_eta0")


def evidence(col: Collection, experiment: str) -> Section:
    """Issue 15's comparison (scripts/bench_quality.py --settings): Table 1's layout with the
    LoRA ranks, AdaLoRA and the AutoLoRA presets, their paired differences, and a rank heatmap
    per task and rank-allocating method (each layer's lower-median rank over the seeds)."""
    section = _section(col, experiment, EVIDENCE, "GLUE at the learning-curve settings: AutoLoRA against its "
                       "baselines", reference=False, paper_columns=False)  # only the tasks the curves chose
    keys = sorted(k for k in col.cells() if k[3] in RANK_ALLOCATING)
    add_rank_heatmaps(section, col, keys, "ranks", which="trained_ranks")
    if keys:
        section.notes.append("Rank heatmaps: per task and method, each layer's lower-median rank over the seeds "
                             "of the ranks the final model trained with (AdaLoRA: those its budget schedule left; "
                             "AutoLoRA: the thresholded ranks of its search, which the retrain used).")
    return section
