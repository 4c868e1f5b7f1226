"""DyLoRA's structured config (``conf/method/dylora.yaml`` starts from ``/schema/method/dylora``);
each default's source is in that YAML file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from autolora_exp.contract import COUNT, DROPOUT, LEARNING_RATE, LORA_ALPHA, MethodConfig
from autolora_exp.errors import UserError
from autolora_exp.validation import accepts


@dataclass
class DyLoRAConfig(MethodConfig):
    """LoRA trained with b ~ Uniform{r_min..r_max} per step; the rank is then chosen on D_val."""

    _target_: str = "autolora_exp.methods.dylora.method.DyLoRA"
    name: str = "dylora"
    lr: float = accepts(5e-4, **LEARNING_RATE)
    #: the ranks b a step may use (inclusive); every one of them is a candidate on D_val
    r_min: int = accepts(1, **COUNT)
    r_max: int = accepts(8, **COUNT)
    #: true: a step's gradient reaches only the b-th component (the first b - 1 are detached)
    frozen: bool = True
    lora_alpha: float = accepts(16.0, **LORA_ALPHA)
    lora_dropout: float = accepts(0.0, **DROPOUT)
    #: share of the training set held out as D_val, on which the rank is chosen (the model
    #: trains on the rest and is not retrained)
    val_fraction: float = accepts(0.2, gt=0, lt=1)

    @staticmethod
    def check_relations(method: Any, prefix: str = "method.") -> None:
        if method.r_min > method.r_max:
            raise UserError(f"{prefix}r_min={method.r_min}, {prefix}r_max={method.r_max}: DyLoRA samples the rank "
                            f"from r_min..r_max, so it needs 1 <= r_min <= r_max")
