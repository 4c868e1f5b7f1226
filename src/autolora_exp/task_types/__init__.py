"""Task types: how a family of tasks is encoded, batched and scored.

The pipeline is the same for every task; what differs by the task's type lives in one class
here, a :class:`TaskKind` chosen by the config key ``task.kind`` (the class keeps the key's
name: renaming the key would change every run's config hash). Adding a task type is one
module plus one entry in :data:`KINDS`.
"""

from __future__ import annotations

from typing import Any

from autolora_exp.errors import UserError
from autolora_exp.task_types.base import TaskKind

#: task.kind -> "module:Class" (imported on use, so a kind's heavy dependencies load only when used)
KINDS: dict[str, str] = {
    "classification": "autolora_exp.task_types.classification:SequenceClassification",
    "regression": "autolora_exp.task_types.classification:SequenceClassification",
    "token_classification": "autolora_exp.task_types.token_classification:TokenClassification",
    "generation": "autolora_exp.task_types.generation:CausalGeneration",
}


def make_kind(task_cfg: Any, tokenizer: Any, metric: Any) -> TaskKind:
    if task_cfg.kind not in KINDS:
        raise UserError(f"task.kind '{task_cfg.kind}' is not one of {', '.join(sorted(KINDS))}")
    import importlib

    module, cls = KINDS[task_cfg.kind].split(":")
    return getattr(importlib.import_module(module), cls)(task_cfg, tokenizer, metric)


__all__ = ["KINDS", "TaskKind", "make_kind"]
