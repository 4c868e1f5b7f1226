"""Table 5: training cost on SST-2, MNLI and QQP, normalised to AdaLoRA = 1.

Rows: AdaLoRA, LoRA with a grid search over its rank (the ``lora_grid`` method: LoRA trained at
every rank of the grid on D_tr, the best on D_val retrained), AutoLoRA. The cost of a run is
the wall time of its training phases, ``phases.search.wall_s + phases.train.wall_s`` in
result.json (:data:`~autolora_exp.tables.load.COST_PHASES`): the grid or the meta-learning
search, then the final training, each summed over every attempt of the run (a preempted run
counts the time of all its attempts: ``phases.<phase>.attempts``).

    normalised cost of a run = its cost / median over seeds of AdaLoRA's cost (same task, model)

aggregated over seeds (median [min-max], n); AdaLoRA's own row is then 1 at the median. A
second table gives the seconds; a third the rank each search chose (lora_grid: its one rank;
AutoLoRA: the mean over layers).
"""

from __future__ import annotations

from statistics import median

from autolora_exp.tables.layout import Fmt, entry, method_label, missing_cells, models_of, ordered, rows_of, task_label
from autolora_exp.tables.load import Collection, aggregate
from autolora_exp.tables.render import Entry, Missing, Table, value_or_missing
from autolora_exp.tables.section import Section

TABLE5_TASKS = ("glue/sst2", "glue/mnli", "glue/qqp")
TABLE5_METHODS = ("adalora", "lora_grid", "autolora")


def table5(col: Collection, experiment: str) -> Section:
    title = "Table 5: training cost"
    section = Section(experiment, title, failures=list(col.failures), runs=len(col.runs))
    cells, failed = col.cells(), col.failed_cells()
    tasks = ordered({k[1] for k in cells} | {k[1] for k in failed}, TABLE5_TASKS)
    grids = sorted({tuple(r.config_ranks) for r in col.runs if r.method == "lora_grid" and r.config_ranks})
    for model in models_of(col):
        rows = rows_of(col, TABLE5_METHODS)
        norm_rows: list[list[Entry]] = []
        raw_rows: list[list[Entry]] = []
        rank_rows: list[list[Entry]] = []
        for method, variant in rows:
            label = method_label(method, variant)
            keys = [(experiment, t, model, method, variant) for t in tasks]
            norm, raw = [label], [label]
            for key in keys:
                n_failed = len(failed.get(key, []))
                costs = {r.seed: r.cost_s for r in cells.get(key, []) if r.cost_s is not None}
                base = [r.cost_s for r in cells.get((experiment, key[1], model, "adalora", ""), []) if r.cost_s is not None]
                stat = aggregate(costs.items())
                raw.append(value_or_missing(stat, 1.0, 0, n_failed))
                if stat and base:
                    scale = median(base)
                    norm.append(value_or_missing(aggregate((s, c / scale) for s, c in costs.items()), 1.0, 2, n_failed))
                else:
                    norm.append(Missing(n_failed))
            norm_rows.append(norm)
            raw_rows.append(raw)
            if method != "adalora":
                rank_rows.append([label, *[entry(col, k, value="mean_rank", fmt=Fmt(1, 2)) for k in keys]])
            section.missing += missing_cells(col, keys)
        header = ["Method"] + [task_label(t) for t in tasks]
        grid_note = ("Grid: r ∈ {" + "}, {".join(", ".join(map(str, g)) for g in grids) + "} (method.ranks).") if grids else ""
        section.tables.append(Table(
            f"{title}, normalised to AdaLoRA = 1 ({model})", header, norm_rows,
            [f"Model: {model}. Cost = wall time of search + training (result.json phases, summed over a resumed "
             "run's attempts), divided by the median "
             "AdaLoRA cost of the task; median [min–max] over seeds, n = seeds. Without AdaLoRA runs a cell "
             "cannot be normalised (see the seconds below). " + grid_note]))
        section.tables.append(Table(f"{title}, seconds ({model})", header, raw_rows,
                                    ["Wall seconds of search + training, median [min–max], n = seeds."]))
        section.tables.append(Table(f"{title}: the ranks the searches chose ({model})", header, rank_rows,
                                    ["LoRA + grid search: the rank it selected on D_val (one for all layers); "
                                     "AutoLoRA: the mean over layers of its learned ranks; median [min–max], n = seeds."]))
    return section
