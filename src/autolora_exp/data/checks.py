"""Checks of a task's config against its data, run after loading and before the first training step.

The config alone cannot say whether ``task.num_labels=5`` suits RTE or ``primary_metric=f1`` is
reported for it; the data and the metric can. Each check fails with one UserError naming the
key, the value and what the data accepts, instead of a crash (or a silently wrong run) after an
epoch of training.
"""

from __future__ import annotations

import logging
from typing import Any

import datasets

from autolora_exp.errors import UserError

log = logging.getLogger(__name__)


def check_splits_not_empty(data: Any, splits: list[str], task_cfg: Any) -> None:
    """Every split the run uses holds at least one row (a header-only dev file holds none)."""
    empty = [s for s in splits if len(data[s]) == 0]
    if empty:
        where = f" in task.data_dir={task_cfg.data_dir}" if task_cfg.data_dir else ""
        raise UserError(f"task '{task_cfg.name}': split(s) {empty} have no rows{where}; supply the data or "
                        "change task.eval_splits / task.test_split")


def check_labels(data: Any, task_cfg: Any) -> None:
    """The data's labels match ``task.kind`` and ``task.num_labels``, both ways.

    A ``ClassLabel`` column names the data's classes: their count must equal ``num_labels``
    (more declared classes would train a head with outputs no row ever targets). Without class
    names every label must lie in 0..num_labels-1, and fewer distinct labels than declared is
    a warning (a subsample may miss a class). Token classification checks its tags in its
    encoder (``task_types.token_classification``); generation has no labels.
    """
    kind, name, num_labels = task_cfg.kind, task_cfg.name, task_cfg.num_labels
    if kind not in ("classification", "regression"):
        return
    feature = data["train"].features.get("label")
    if feature is None:
        raise UserError(f"task '{name}': the training data has no 'label' column (columns: "
                        f"{data['train'].column_names})")
    is_float = isinstance(feature, datasets.Value) and feature.dtype.startswith("float")
    if kind == "regression":
        if not is_float:
            raise UserError(f"task '{name}' has task.kind=regression but its labels are classes ({feature}); "
                            "use task.kind=classification")
        return
    if is_float:
        raise UserError(f"task '{name}' has task.kind=classification but its labels are scores ({feature.dtype}); "
                        "use task.kind=regression with task.num_labels=1")
    if isinstance(feature, datasets.ClassLabel) and feature.num_classes != num_labels:
        raise UserError(f"task '{name}' declares task.num_labels={num_labels} but the data has "
                        f"{feature.num_classes} classes {feature.names}; use task.num_labels={feature.num_classes}")
    seen: set[int] = set()
    for split, ds in data.items():
        labels = set(ds["label"])
        bad = sorted(x for x in labels if not 0 <= x < num_labels)
        if bad:
            raise UserError(f"task '{name}' declares task.num_labels={num_labels} but split '{split}' has "
                            f"labels {bad}; accepted: 0..{num_labels - 1}")
        if split == "train":
            seen = labels
    if not isinstance(feature, datasets.ClassLabel) and len(seen) < num_labels:
        log.warning("task '%s' declares task.num_labels=%d but the training data has only %d distinct labels %s",
                    name, num_labels, len(seen), sorted(seen))


def check_primary_metric(metric_names: set[str], task_cfg: Any) -> None:
    """``task.primary_metric`` is one of the scores the task's evaluation reports."""
    if task_cfg.primary_metric not in metric_names:
        raise UserError(f"task.primary_metric={task_cfg.primary_metric!r} is not reported for task "
                        f"'{task_cfg.name}'; use one of {', '.join(sorted(metric_names))}")
