"""What the paper's tables look like: task columns, method rows, labels, and how numbers print.

Shared by the table modules. A layout lists the cells the paper has; whatever else a folder
holds (another task, another method) is appended after them, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from autolora_exp.glue_tasks import GLUE_TASK_NAMES
from autolora_exp.tables.load import Collection, CellKey
from autolora_exp.tables.render import Entry, value_or_missing

#: GLUE in the benchmark's own order (the order of the experiments' sweeps)
GLUE_TASKS = tuple(f"glue/{name}" for name in GLUE_TASK_NAMES)
TASK_LABELS = {
    "glue/cola": "CoLA", "glue/sst2": "SST-2", "glue/mrpc": "MRPC", "glue/qqp": "QQP", "glue/stsb": "STS-B",
    "glue/mnli": "MNLI", "glue/qnli": "QNLI", "glue/rte": "RTE", "e2e": "E2E", "webnlg": "WebNLG",
    "bionlp": "BioNLP", "wnut16": "WNUT-16", "bbc_news": "BBC News",
}
#: Table 1's rows, in the paper's order (full fine-tuning first, the proposed method last)
BASELINES = ("full_ft", "adapter", "lora", "adalora", "sora", "dylora", "autolora")
#: issue 15's comparison: the baselines, then the three AutoLoRA searches
EVIDENCE = ("full_ft", "lora", "adalora", "autolora", "autolora_authors", "autolora_eta0")
ABLATIONS = ("autolora", "autolora_no_cst", "autolora_sigmoid", "autolora_eta0",
             "autolora_authors", "autolora_authors_no_cst", "autolora_authors_sigmoid", "autolora_authors_eta0")


def method_labels() -> dict[str, str]:
    """Result name (``method.name``) -> row label: each method's ``table_labels`` from the
    method registry (autolora_exp.contract.register_method, beside the method)."""
    from autolora_exp.contract import discover_methods

    return {name: label for spec in discover_methods().values() for name, label in spec.table_labels.items()}


def task_label(task: str) -> str:
    return TASK_LABELS.get(task, task)


def method_label(method: str, variant: str = "") -> str:
    label = method_labels().get(method, method)
    return f"{label} ({variant})" if variant else label


def ordered(found: Iterable[str], layout: Sequence[str]) -> list[str]:
    """Every layout item (found or not), then the other found items, sorted."""
    found = set(found)
    return list(layout) + sorted(found - set(layout))


def rows_of(col: Collection, layout: Sequence[str]) -> list[tuple[str, str]]:
    """(method, variant) rows: the layout's methods in order (with every variant found; the
    bare method when none ran), then methods outside the layout."""
    keys = {(k[3], k[4]) for k in col.cells()} | {(k[3], k[4]) for k in col.failed_cells()}
    rows: list[tuple[str, str]] = []
    for method in ordered({m for m, _ in keys}, layout):
        variants = sorted({v for m, v in keys if m == method}, key=_variant_order)
        rows += [(method, v) for v in variants] or [(method, "")]
    return rows


def _variant_order(variant: str) -> tuple[int, str]:
    # "r=8" before "r=64": numeric where the variant is a number
    tail = variant.split("=")[-1]
    return (int(tail), variant) if tail.isdigit() else (1 << 30, variant)


def models_of(col: Collection) -> list[str]:
    return sorted({k[2] for k in col.cells()} | {k[2] for k in col.failed_cells()})


@dataclass(frozen=True)
class Fmt:
    """How a metric prints: the paper shows accuracy-like fractions x100 with one decimal."""

    scale: float = 100.0
    digits: int = 1


def entry(col: Collection, key: CellKey, value: str = "score", metric: str | None = None,
          fmt: Fmt = Fmt()) -> Entry:
    """One cell: the aggregate over seeds, or Missing (with the number of failed runs)."""
    failed = len(col.failed_cells().get(key, []))
    return value_or_missing(col.stat(key, value, metric), fmt.scale, fmt.digits, failed)


def count_label(n: float) -> str:
    """Parameter count as the papers print it: 0.89M, 147K."""
    return f"{n / 1e6:.3g}M" if n >= 1e5 else f"{n / 1e3:.3g}K"


def params_entry(col: Collection, keys: Iterable[CellKey]) -> str:
    """Trainable parameters of a row: one number, or the range over its cells (AutoLoRA's
    count depends on the ranks it finds; heads differ by task)."""
    values = [r.trainable for k in keys for r in col.cells().get(k, []) if r.trainable is not None]
    if not values:
        return "–"
    lo, hi = count_label(min(values)), count_label(max(values))
    return lo if lo == hi else f"{lo}–{hi}"


def missing_cells(col: Collection, keys: Iterable[CellKey]) -> list[str]:
    """Layout cells with neither a result nor a failure record, one line per model and method."""
    cells, failed = col.cells(), col.failed_cells()
    grouped: dict[tuple[str, str], list[str]] = {}
    for k in keys:
        if k not in cells and k not in failed:
            grouped.setdefault((k[2], method_label(k[3], k[4])), []).append(task_label(k[1]))
    return [f"{model} | {method}: {', '.join(tasks)}" for (model, method), tasks in grouped.items()]
