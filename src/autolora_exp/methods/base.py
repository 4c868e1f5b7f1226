"""The contract every fine-tuning method implements.

A method turns a frozen-or-not backbone into the model that is trained, and may hook into the
shared training loop (:mod:`autolora_exp.train`). Adding a method is one module here plus one
YAML file under ``conf/method/``; nothing else changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn


class Method:
    """Base class: full fine-tuning semantics unless a subclass overrides a hook."""

    #: name recorded in result.json
    name: str = "base"
    #: rank-searching methods: share of the training set held out as D_val (the paper's 1:1)
    search_val_fraction: float = 0.5
    #: rank-searching methods: batch size of the search loaders; None: train.batch_size
    search_batch_size: int | None = None
    #: rank-searching methods: shares of D_tr and of D_val the search runs on (seeded; 1 = all)
    search_subsample: tuple[float, float] = (1.0, 1.0)

    def prepare(self, model: nn.Module, target_modules: list[str], head_modules: list[str]) -> nn.Module:
        """Return the model to train (wrapped or modified in place); set ``requires_grad``."""
        return model

    def training_loss(self, model: nn.Module, outputs: Any) -> torch.Tensor:
        """The loss that is backpropagated; ``outputs`` is the model's output with ``.loss``."""
        return outputs.loss

    def on_after_backward(self, model: nn.Module, global_step: int) -> None:
        """Called after ``backward()`` and the optimiser step, before gradients are zeroed.

        ``global_step`` counts the optimiser steps taken so far (1 after the first).
        """

    def on_train_begin(self, model: nn.Module, total_steps: int) -> None:
        """Called once before the first step with the number of optimiser steps planned."""

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        """Method state beyond the model's parameters that a resumed run needs (checkpoints)."""
        return {}

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def ranks(self, model: nn.Module) -> dict[str, int] | None:
        """Per-layer ranks (full module name -> rank) when the method has them."""
        return None


@dataclass
class SearchContext:
    """What a rank-searching method (AutoLoRA, the LoRA rank grid) gets from the pipeline.

    Only the two halves of the original training set: D_tr to fit weights, D_val to choose
    ranks. The dev/test splits are not reachable from here.
    """

    #: a fresh backbone with a fresh head, on the run's device
    new_model: Callable[[], nn.Module]
    target_modules: list[str]
    head_modules: list[str]
    d_tr_loader: Any
    d_val_loader: Any
    #: the task metric of a model on D_val
    evaluate_val: Callable[[nn.Module], dict[str, float]]
    train_cfg: Any
    primary_metric: str
    greater_is_better: bool
    device: torch.device
    #: called with each point of the search's curves: AutoLoRA's history entries (step, alphas,
    #: train/val losses), the rank grid's epochs (step, rank, train loss, D_val metrics)
    on_log: Callable[[dict[str, Any]], None] | None = None
    progress: bool = True
    checkpointer: Any = None
    stop: Any = None
    #: the run's seed: a search that trains several models derives each one's seed from it
    seed: int = 0
    #: the run's precision (autocast for the search's forwards); None = fp32
    precision: Any = None
