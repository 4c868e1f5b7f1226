"""Full fine-tuning: every weight of the backbone and the head trains."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from autolora_exp.contract import LEARNING_RATE, Method, MethodConfig, MethodSpec, register_method
from autolora_exp.validation import accepts


@dataclass
class FullFTConfig(MethodConfig):
    _target_: str = "autolora_exp.methods.full_ft.FullFineTuning"
    name: str = "full_ft"
    lr: float = accepts(2e-5, **LEARNING_RATE)


register_method(MethodSpec("full_ft", FullFTConfig, table_labels={"full_ft": "Full FT"}))


class FullFineTuning(Method):
    name = "full_ft"

    def __init__(self, name: str = FullFTConfig.name, lr: float = FullFTConfig.lr) -> None:
        self.name = name
        self.lr = lr

    def prepare(self, model: nn.Module, target_modules: list[str], head_modules: list[str]) -> nn.Module:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
