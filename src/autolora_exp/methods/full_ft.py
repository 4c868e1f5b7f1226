"""Full fine-tuning: every weight of the backbone and the head trains."""

from __future__ import annotations

from torch import nn

from autolora_exp.methods.base import Method


class FullFineTuning(Method):
    name = "full_ft"

    def __init__(self, name: str = "full_ft", lr: float = 2e-5) -> None:
        self.name = name
        self.lr = lr

    def prepare(self, model: nn.Module, target_modules: list[str], head_modules: list[str]) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
