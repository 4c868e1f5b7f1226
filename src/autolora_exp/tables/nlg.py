"""Table 2: GPT2-medium on E2E and WebNLG.

Rows are methods with their trainable parameters; columns the metrics the paper reports on
each test set, printed on the LoRA paper's scales: E2E BLEU, METEOR and ROUGE-L x100, NIST
and CIDEr as they are; WebNLG BLEU x100, METEOR and TER as fractions (TER: lower is better).
The metric modules return BLEU, METEOR, ROUGE-L and TER as fractions (see metrics/nlg).
"""

from __future__ import annotations

from autolora_exp.tables.layout import (BASELINES, Fmt, entry, method_label, missing_cells, models_of, ordered,
                                        params_entry, rows_of, task_label)
from autolora_exp.tables.load import Collection
from autolora_exp.tables.render import Entry, Table
from autolora_exp.tables.section import Section

#: task -> [(metric key in result.json, column label, format)]
NLG_COLUMNS = {
    "e2e": [("bleu", "BLEU", Fmt(100, 1)), ("nist", "NIST", Fmt(1, 2)), ("meteor", "METEOR", Fmt(100, 1)),
            ("rouge_l", "ROUGE-L", Fmt(100, 1)), ("cider", "CIDEr", Fmt(1, 2))],
    "webnlg": [("bleu", "BLEU", Fmt(100, 1)), ("meteor", "METEOR", Fmt(1, 2)), ("ter", "TER ↓", Fmt(1, 2))],
}


def table2(col: Collection, experiment: str) -> Section:
    title = "Table 2: natural language generation"
    section = Section(experiment, title, failures=list(col.failures), runs=len(col.runs))
    tasks = ordered({k[1] for k in col.cells()} | {k[1] for k in col.failed_cells()}, list(NLG_COLUMNS))
    for model in models_of(col):
        header = ["Method", "Params"]
        columns = []
        for task in tasks:
            # a task outside the layout shows its primary metric
            specs = NLG_COLUMNS.get(task) or [(None, "primary", Fmt(1, 3))]
            for metric, label, fmt in specs:
                header.append(f"{task_label(task)} {label}")
                columns.append((task, metric, fmt))
        rows: list[list[Entry]] = []
        for method, variant in rows_of(col, BASELINES):
            keys = [(experiment, t, model, method, variant) for t in tasks]
            rows.append([method_label(method, variant), params_entry(col, keys),
                         *[entry(col, (experiment, t, model, method, variant), metric=m, fmt=f) for t, m, f in columns]])
            section.missing += missing_cells(col, keys)
        notes = [f"Model: {model}. Test-set scores, median over seeds [min–max], n = seeds. "
                 "E2E: BLEU, METEOR, ROUGE-L x100; NIST, CIDEr raw. WebNLG: BLEU x100; METEOR, TER fractions "
                 "(TER: lower is better)."]
        section.tables.append(Table(f"{title} ({model})", header, rows, notes))
    return section
