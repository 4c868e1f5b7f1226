"""Figure 3: the rank AutoLoRA learns for every LoRA layer (QQP, MNLI, E2E in the paper).

One heatmap per (task, model, method) with a search: layer types x blocks, each cell the
layer's rank (rank 0, no LoRA, in grey: :func:`~autolora_exp.rank_heatmap.rank_heatmap`). Over seeds a
layer's rank is summarised by its lower median (an observed rank, so the map still shows
integers); the title says how many seeds. A table gives the mean
learned rank per run (the statistic the authors' recorded searches report), aggregated over
seeds.
"""

from __future__ import annotations

import re
from functools import partial
from pathlib import Path
from statistics import median_low

from autolora_exp.rank_heatmap import rank_heatmap
from autolora_exp.tables.layout import Fmt, entry, method_label, ordered, task_label
from autolora_exp.tables.load import CellKey, Collection, Run
from autolora_exp.tables.render import Entry, Missing, Table
from autolora_exp.tables.section import Section

FIGURE3_TASKS = ("glue/qqp", "glue/mnli", "e2e")


def median_ranks(runs: list[Run], which: str = "ranks") -> dict[str, int]:
    """Per layer, the lower median of the runs' ranks (``which``: see :func:`add_rank_heatmaps`)."""
    per_run = [getattr(run, which) or {} for run in runs]
    layers = sorted({layer for ranks in per_run for layer in ranks})
    return {layer: median_low([ranks[layer] for ranks in per_run if layer in ranks]) for layer in layers}


def heatmap_png(path: Path, ranks: dict[str, int], title: str) -> Path:
    return rank_heatmap(ranks, path, title=title)


def add_rank_heatmaps(section: Section, col: Collection, keys: list[CellKey], prefix: str,
                      which: str = "ranks") -> None:
    """One heatmap per cell whose runs have ranks (``which``: ``ranks``, those a search found, or
    ``trained_ranks``, those the final model trained with): each layer's lower-median rank over
    the seeds (:func:`median_ranks`), named ``<prefix>_<task>_<model>_<method>[_<variant>].png``."""
    cells = col.cells()
    for key in keys:
        _, task, model, method, variant = key
        searched = [r for r in cells.get(key, []) if getattr(r, which)]
        if not searched:
            continue
        label = method_label(method, variant)
        slug = re.sub(r"[^A-Za-z0-9.=-]+", "-", variant).strip("-")
        name = f"{prefix}_{task.replace('/', '-')}_{model}_{method}{'_' + slug if slug else ''}.png"
        section.figures[name] = partial(heatmap_png, ranks=median_ranks(searched, which),
                                        title=f"{task_label(task)} | {model} | {label} | n={len(searched)}")


def figure3(col: Collection, experiment: str) -> Section:
    title = "Figure 3: learned ranks"
    section = Section(experiment, title, failures=list(col.failures), runs=len(col.runs))
    cells, failed = col.cells(), col.failed_cells()
    keys = sorted(set(cells) | set(failed))
    tasks = ordered({k[1] for k in keys}, FIGURE3_TASKS)
    rows: list[list[Entry]] = []
    for task in tasks:
        task_keys = [k for k in keys if k[1] == task]
        if not task_keys:
            rows.append([task_label(task), "–", "AutoLoRA", Missing()])
            section.missing.append(f"{task_label(task)} | any model | AutoLoRA")
            continue
        for key in task_keys:
            _, _, model, method, variant = key
            rows.append([task_label(task), model, method_label(method, variant),
                         entry(col, key, value="mean_rank", fmt=Fmt(1, 2))])
        add_rank_heatmaps(section, col, task_keys, "figure3")
    section.tables.append(Table(title + ": mean rank per layer", ["Task", "Model", "Method", "Mean rank"], rows,
                                ["Mean over the searched layers of the rank the search found (k = 8: ranks 0..8; 0, no "
                                 "LoRA on the layer, only under the sigmoid rule), "
                                 "median over seeds [min–max], n = seeds. The heatmaps show each layer's "
                                 "lower-median rank over the seeds."]))
    return section
