"""Table 3: RoBERTa-base on BioNLP (JNLPBA): entity-level micro F1 x100 on the test set."""

from __future__ import annotations

from autolora_exp.tables.layout import (BASELINES, entry, method_label, missing_cells, models_of, ordered,
                                        params_entry, rows_of, task_label)
from autolora_exp.tables.load import Collection
from autolora_exp.tables.render import Entry, Table
from autolora_exp.tables.section import Section


def table3(col: Collection, experiment: str) -> Section:
    title = "Table 3: sequence labelling"
    section = Section(experiment, title, failures=list(col.failures), runs=len(col.runs))
    tasks = ordered({k[1] for k in col.cells()} | {k[1] for k in col.failed_cells()}, ["bionlp"])
    for model in models_of(col):
        rows: list[list[Entry]] = []
        for method, variant in rows_of(col, BASELINES):
            keys = [(experiment, t, model, method, variant) for t in tasks]
            rows.append([method_label(method, variant), params_entry(col, keys), *[entry(col, k) for k in keys]])
            section.missing += missing_cells(col, keys)
        header = ["Method", "Params"] + [f"{task_label(t)} F1" for t in tasks]
        notes = [f"Model: {model}. Entity-level micro F1 x100 on the test set (seqeval, conlleval style), "
                 "median over seeds [min–max], n = seeds."]
        section.tables.append(Table(f"{title} ({model})", header, rows, notes))
    return section
