"""Task kinds: how a family of tasks is encoded, batched and scored.

The pipeline is the same for every task; what differs by ``task.kind`` lives in one class
here. Adding a kind is one module plus one entry in :data:`KINDS`.
"""

from __future__ import annotations

from typing import Any

from autolora_exp.errors import UserError
from autolora_exp.kinds.base import TaskKind

#: task.kind -> "module:Class" (imported on use, so a kind's heavy dependencies load only when used)
KINDS: dict[str, str] = {
    "classification": "autolora_exp.kinds.classification:SequenceClassification",
    "regression": "autolora_exp.kinds.classification:SequenceClassification",
    "token_classification": "autolora_exp.kinds.token_classification:TokenClassification",
    "generation": "autolora_exp.kinds.generation:CausalGeneration",
}


def make_kind(task_cfg: Any, tokenizer: Any, metric: Any) -> TaskKind:
    if task_cfg.kind not in KINDS:
        raise UserError(f"task.kind '{task_cfg.kind}' is not one of {', '.join(sorted(KINDS))}")
    import importlib

    module, cls = KINDS[task_cfg.kind].split(":")
    return getattr(importlib.import_module(module), cls)(task_cfg, tokenizer, metric)


__all__ = ["KINDS", "TaskKind", "make_kind"]
