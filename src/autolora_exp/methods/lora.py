"""LoRA (Hu et al. 2022) through peft: W x + (lora_alpha / r) B A x on the target modules.

Per-layer ranks (AutoLoRA's retrain) go through peft's ``rank_pattern``, keyed by exact
module names, never by creation order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from torch import nn

from autolora_exp.contract import COUNT, DROPOUT, LEARNING_RATE, LORA_ALPHA, Method, MethodConfig, MethodSpec, register_method
from autolora_exp.models import check_target_modules
from autolora_exp.validation import Accepts, accepts


@dataclass
class LoRAConfig(MethodConfig):
    _target_: str = "autolora_exp.methods.lora.LoRA"
    name: str = "lora"
    lr: float = accepts(5e-4, **LEARNING_RATE)
    r: int = accepts(4, **COUNT)
    lora_alpha: float = accepts(16.0, **LORA_ALPHA)
    lora_dropout: float = accepts(0.1, **DROPOUT)
    #: per-module ranks (exact module name -> rank); empty = ``r`` everywhere
    rank_pattern: dict[str, int] = accepts(factory=dict, item=Accepts(**COUNT))
    #: a ``rank_pattern.json`` of an AutoLoRA run ({full module name: rank}): the retrain AutoLoRA
    #: does with those ranks (same peft config; rank-0 layers get no LoRA); null = ``r`` / ``rank_pattern``
    rank_pattern_file: Optional[str] = None


register_method(MethodSpec("lora", LoRAConfig, table_labels={"lora": "LoRA"}))


class LoRA(Method):
    name = "lora"

    def __init__(
        self,
        name: str = LoRAConfig.name,
        lr: float = LoRAConfig.lr,
        r: int = LoRAConfig.r,
        lora_alpha: float = LoRAConfig.lora_alpha,
        lora_dropout: float = LoRAConfig.lora_dropout,
        rank_pattern: dict[str, int] | None = None,
        alpha_pattern: dict[str, float] | None = None,
        target_modules: list[str] | None = None,
        rank_pattern_file: str | None = None,
    ) -> None:
        self.name = name
        self.lr = lr
        self.r = r
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.rank_pattern = dict(rank_pattern or {})
        self.alpha_pattern = dict(alpha_pattern or {})
        #: overrides the model's targets (AutoLoRA's retrain: exact names of rank > 0 layers)
        self.target_modules = list(target_modules) if target_modules else None
        if rank_pattern_file:
            self._use_rank_pattern_file(rank_pattern_file)

    def _use_rank_pattern_file(self, path: str) -> None:
        """The peft config of AutoLoRA's retrain (``scaling=per_layer``) for the ranks in ``path``
        (a ``rank_pattern.json``): ``method=lora method.rank_pattern_file=...`` trains exactly what
        an AutoLoRA run with those found ranks retrains (same seed: same numbers)."""
        # imported here: the autolora package imports this module
        from autolora_exp.errors import UserError
        from autolora_exp.methods.autolora.rank_pattern import load_rank_pattern_json, rank_pattern_config

        if self.rank_pattern or self.alpha_pattern or self.target_modules:
            raise UserError(f"method.rank_pattern_file={path!r} sets the ranks; leave method.rank_pattern, "
                            "alpha_pattern and target_modules empty")
        kwargs = rank_pattern_config(load_rank_pattern_json(path), lora_alpha=self.lora_alpha, scaling="per_layer")
        self.r, self.rank_pattern, self.alpha_pattern = kwargs["r"], kwargs["rank_pattern"], kwargs["alpha_pattern"]
        self.target_modules = kwargs["target_modules"]

    def peft_config(self, target_modules: list[str], head_modules: list[str]) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            r=self.r,
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=self.target_modules or list(target_modules),
            rank_pattern=self.rank_pattern,
            alpha_pattern=self.alpha_pattern,
            modules_to_save=list(head_modules),
        )

    def prepare(self, model: nn.Module, target_modules: list[str], head_modules: list[str]) -> nn.Module:
        from peft import get_peft_model

        check_target_modules(model, self.target_modules or list(target_modules))
        return get_peft_model(model, self.peft_config(target_modules, head_modules))

    def ranks(self, model: nn.Module) -> dict[str, int]:
        return lora_ranks(model)


def lora_ranks(model: nn.Module) -> dict[str, int]:
    """Full module name (as in the base model) -> rank of every peft LoRA layer."""
    from peft.tuners.lora import LoraLayer

    ranks = {}
    for name, module in model.named_modules():
        if isinstance(module, LoraLayer) and module.r:
            base_name = name.removeprefix("base_model.model.")
            ranks[base_name] = int(next(iter(module.r.values())))
    return ranks
