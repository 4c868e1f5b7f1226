"""The contract every fine-tuning method implements.

A method turns a frozen-or-not backbone into the model that is trained, and may hook into the
shared training loop (:mod:`autolora_exp.train`). Adding a method is one module here plus one
YAML file under ``conf/method/``; nothing else changes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class Method:
    """Base class: full fine-tuning semantics unless a subclass overrides a hook."""

    #: name recorded in result.json
    name: str = "base"

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
