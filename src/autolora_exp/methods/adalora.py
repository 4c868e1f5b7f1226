"""AdaLoRA (Zhang et al., ICLR 2023) through peft: SVD-form updates with a shrinking rank budget.

Each target layer gets ``Delta W = P diag(lambda) Q`` (peft: ``lora_B``, ``lora_E``, ``lora_A``),
started at ``init_r`` triplets. A triplet's importance is the smoothed sensitivity
``S = I_bar * U_bar`` (EMA of ``|w * dL/dw|`` times its uncertainty) summed over its singular
value and the means of its singular vectors. The total budget follows a cubic schedule

    b(t) = b_T + (b_0 - b_T) (1 - (t - t_init) / (T - t_final - t_init))^3

from ``b_0 = init_r * n_layers`` to ``b_T = target_r * n_layers``, and every ``deltaT`` steps the
lowest-scoring singular values are zeroed so that ``b(t)`` remain. From ``T - t_final`` on the
final allocation is frozen, so the learned per-layer ranks are the counts of non-zero singular
values. The loss adds the orthogonality penalty

    R = (1 / n) * sum_{P in {A, B of every layer}} || P P^T - I ||_F     (A: r x n; B: use B^T B)

(the AdaLoRA authors' code and peft use the plain Frobenius norm averaged over the n matrices).

Two peft facts this module is built around (peft 0.21.2):
- ``AdaLoraConfig`` validates ``total_step`` at construction, and ``RankAllocator`` reads
  ``peft_config.total_step``/``tinit``/``tfinal`` at every call from the same config object
  the model holds; so the model is built with a placeholder schedule and the real one, from
  the planned optimiser steps, is written into that object in :meth:`AdaLoRA.on_train_begin`.
- ``AdaLoraModel.forward`` adds the penalty only when the model computed ``outputs.loss``, and
  a plain ``PeftModel`` (no ``task_type``) calls the transformers model directly, skipping
  ``AdaLoraModel.forward`` altogether. Rather than depend on either path, peft's in-forward
  weight is set to 0 and :meth:`AdaLoRA.training_loss` adds the penalty itself: it is in the
  backpropagated loss exactly once, whoever computes the task loss.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from omegaconf import OmegaConf
from torch import nn

from autolora_exp.errors import UserError
from autolora_exp.contract import COUNT, DROPOUT, LEARNING_RATE, LORA_ALPHA, Method, MethodConfig, MethodSpec, register_method
from autolora_exp.models import check_target_modules
from autolora_exp.validation import accepts, check_fields

ADAPTER_NAME = "default"


def orthogonality_penalty(model: nn.Module, adapter_name: str = ADAPTER_NAME) -> torch.Tensor:
    """R = mean over every ``lora_A`` (A A^T) and ``lora_B`` (B^T B) of ||P P^T - I||_F."""
    from peft.tuners.adalora import AdaLoraLayer

    terms = []
    for module in model.modules():
        if isinstance(module, AdaLoraLayer) and adapter_name in module.lora_A:
            a, b = module.lora_A[adapter_name], module.lora_B[adapter_name]
            for gram in (a @ a.T, b.T @ b):  # both r x r: the rows of A / columns of B orthonormal
                eye = torch.eye(gram.shape[0], dtype=gram.dtype, device=gram.device)
                terms.append(torch.linalg.matrix_norm(gram - eye, ord="fro"))
    if not terms:
        raise RuntimeError("orthogonality_penalty: the model has no AdaLoRA layers")
    return torch.stack(terms).mean()


def adalora_ranks(model: nn.Module, adapter_name: str = ADAPTER_NAME) -> dict[str, int]:
    """Full module name (as in the base model) -> number of non-zero singular values."""
    from peft.tuners.adalora import AdaLoraLayer

    ranks = {}
    for name, module in model.named_modules():
        if isinstance(module, AdaLoraLayer) and adapter_name in module.lora_E:
            ranks[name.removeprefix("base_model.model.")] = int((module.lora_E[adapter_name] != 0).sum())
    return ranks


def resolve_steps(value: float, total_step: int, what: str) -> int:
    """``value`` < 1 is a fraction of ``total_step`` (floored); ``value`` >= 1 a step count."""
    if value < 0 or (value >= 1 and value != int(value)):
        raise UserError(f"method.{what}={value} is not accepted: use a fraction in [0, 1) of the "
                        f"total steps or a whole number of steps >= 1")
    return int(math.floor(value * total_step)) if value < 1 else int(value)


@dataclass
class AdaLoRAConfig(MethodConfig):
    """peft's AdaLoRA; defaults and their sources are in conf/method/adalora.yaml."""

    _target_: str = "autolora_exp.methods.adalora.AdaLoRA"
    name: str = "adalora"
    lr: float = accepts(5e-4, **LEARNING_RATE)
    #: the rules relating init_r / target_r and the tinit / tfinal formats are AdaLoRA's own
    #: (its constructor, run when the pipeline builds the method, before anything loads)
    init_r: int = accepts(6, **COUNT)
    target_r: int = accepts(4, **COUNT)
    #: warm-up without pruning / final phase with the allocation frozen: a fraction of
    #: total_step when below 1, else a number of steps
    tinit: float = accepts(0.1, ge=0)
    tfinal: float = accepts(0.5, ge=0)
    deltaT: int = accepts(10, **COUNT)
    beta1: float = accepts(0.85, gt=0, lt=1)
    beta2: float = accepts(0.85, gt=0, lt=1)
    orth_reg_weight: float = accepts(0.1, ge=0)
    lora_alpha: float = accepts(16.0, **LORA_ALPHA)
    lora_dropout: float = accepts(0.1, **DROPOUT)
    #: ``None`` = the optimiser steps the training loop plans (data size x epochs)
    total_step: Optional[int] = accepts(None, **COUNT)


register_method(MethodSpec("adalora", AdaLoRAConfig, table_labels={"adalora": "AdaLoRA"}))

#: AdaLoRA's learning rate per GLUE task in its authors' scripts (QingruZhang/AdaLoRA @f6968aa,
#: NLU/scripts/run_debertav3_<task>.sh, the ``--learning_rate`` line; DeBERTaV3-base)
AUTHORS_GLUE_LR: dict[str, float] = {
    "glue/mnli": 5e-4,   # run_debertav3_mnli.sh:14
    "glue/sst2": 8e-4,   # run_debertav3_sst2.sh:15
    "glue/cola": 8e-4,   # run_debertav3_cola.sh:13
    "glue/qqp": 8e-4,    # run_debertav3_qqp.sh:15
    "glue/qnli": 5e-4,   # run_debertav3_qnli.sh:13
    "glue/rte": 1.2e-3,  # run_debertav3_rte.sh:13
    "glue/mrpc": 1e-3,   # run_debertav3_mrpc.sh:13
    "glue/stsb": 2.2e-3,  # run_debertav3_stsb.sh:13
}


def authors_lr(task_name: str, default: float) -> float:
    """``${adalora_lr:<task>,<default>}``: the authors' rate for a GLUE task, else ``default``.

    Why per task and not LoRA's: AdaLoRA's update B (A * E) starts from E = 0 with A, B ~ N(0, 0.02),
    so at LoRA's 5e-4 it stays far smaller than LoRA's in the same steps; measured on MiniLM /
    STS-B, 512 rows, 384 steps: dev Spearman 50.2 at 5e-4 against 71.7 at 2e-3
    (docs/bench/curves_adalora_mean.md; README, Performance)."""
    return float(AUTHORS_GLUE_LR.get(task_name, default))


OmegaConf.register_new_resolver("adalora_lr", authors_lr, replace=True)  # conf/method/adalora.yaml


class AdaLoRA(Method):
    name = "adalora"

    def __init__(
        self,
        name: str = AdaLoRAConfig.name,
        lr: float = AdaLoRAConfig.lr,
        init_r: int = AdaLoRAConfig.init_r,
        target_r: int = AdaLoRAConfig.target_r,
        tinit: float = AdaLoRAConfig.tinit,
        tfinal: float = AdaLoRAConfig.tfinal,
        deltaT: int = AdaLoRAConfig.deltaT,
        beta1: float = AdaLoRAConfig.beta1,
        beta2: float = AdaLoRAConfig.beta2,
        orth_reg_weight: float = AdaLoRAConfig.orth_reg_weight,
        lora_alpha: float = AdaLoRAConfig.lora_alpha,
        lora_dropout: float = AdaLoRAConfig.lora_dropout,
        total_step: int | None = AdaLoRAConfig.total_step,
    ) -> None:
        # each value against its field's rule (beta1 in (0, 1), deltaT >= 1, ...), then the rules
        # that relate them
        check_fields(AdaLoRAConfig(name=name, lr=lr, init_r=init_r, target_r=target_r, tinit=tinit, tfinal=tfinal,
                                   deltaT=deltaT, beta1=beta1, beta2=beta2, orth_reg_weight=orth_reg_weight,
                                   lora_alpha=lora_alpha, lora_dropout=lora_dropout, total_step=total_step), "method.")
        if not target_r < init_r:
            raise UserError(f"method.target_r={target_r}, method.init_r={init_r}: AdaLoRA needs "
                            f"1 <= target_r < init_r (it prunes from init_r down to target_r)")
        for what, value in (("tinit", tinit), ("tfinal", tfinal)):
            resolve_steps(value, 1, what)  # a fraction below 1 or a whole number of steps
        self.name = name
        self.lr = lr
        self.init_r = init_r
        self.target_r = target_r
        self.tinit = tinit
        self.tfinal = tfinal
        self.deltaT = deltaT
        self.beta1 = beta1
        self.beta2 = beta2
        self.orth_reg_weight = orth_reg_weight
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.total_step = total_step
        #: the schedule actually used: {"total_step", "tinit", "tfinal"} in steps
        self.schedule: dict[str, int] | None = None

    def peft_config(self, target_modules: list[str], head_modules: list[str]) -> Any:
        from peft import AdaLoraConfig

        return AdaLoraConfig(
            init_r=self.init_r,
            target_r=self.target_r,
            # Placeholder schedule that passes peft's validation; the real one is written into
            # this same config object by on_train_begin, where the planned steps are known.
            total_step=1,
            tinit=0,
            tfinal=0,
            deltaT=self.deltaT,
            beta1=self.beta1,
            beta2=self.beta2,
            orth_reg_weight=0.0,  # the penalty is added once, in training_loss
            lora_alpha=self.lora_alpha,
            lora_dropout=self.lora_dropout,
            target_modules=list(target_modules),
            modules_to_save=list(head_modules),
        )

    def prepare(self, model: nn.Module, target_modules: list[str], head_modules: list[str]) -> nn.Module:
        from peft import get_peft_model

        check_target_modules(model, list(target_modules))
        self.schedule = None
        return get_peft_model(model, self.peft_config(target_modules, head_modules))

    @staticmethod
    def _tuner(model: nn.Module) -> Any:
        """The ``AdaLoraModel`` inside the ``PeftModel`` returned by :meth:`prepare`."""
        tuner = getattr(model, "base_model", None)
        if tuner is None or not hasattr(tuner, "rankallocator"):
            raise RuntimeError("AdaLoRA hooks need the model returned by AdaLoRA.prepare")
        return tuner

    def on_train_begin(self, model: nn.Module, total_steps: int) -> None:
        """Write the schedule (T, t_init, t_final in steps) into the config the allocator reads."""
        total = self.total_step if self.total_step is not None else total_steps
        if total > total_steps:
            raise UserError(f"method.total_step={total} exceeds the {total_steps} planned optimiser steps: "
                            f"the budget would never reach target_r; set it to null (the planned steps)")
        tinit = resolve_steps(self.tinit, total, "tinit")
        tfinal = resolve_steps(self.tfinal, total, "tfinal")
        # the final mask needs sensitivity scores, collected from step tinit + 1 on
        if tinit + 1 >= total - tfinal:
            raise UserError(f"AdaLoRA schedule tinit={tinit}, tfinal={tfinal} steps leaves no budgeting phase "
                            f"in total_step={total}: train longer or decrease method.tinit / method.tfinal")
        tuner = self._tuner(model)
        # update_and_allocate reads the model's config, the RankAllocator its own reference (the
        # same object in peft 0.21.2); set both so neither can keep the placeholder.
        for config in (tuner.peft_config[tuner.trainable_adapter_name], tuner.rankallocator.peft_config):
            config.total_step, config.tinit, config.tfinal = total, tinit, tfinal
        self.schedule = {"total_step": total, "tinit": tinit, "tfinal": tfinal}

    def training_loss(self, model: nn.Module, outputs: Any) -> torch.Tensor:
        """L = task loss + orth_reg_weight * R (R: :func:`orthogonality_penalty`)."""
        if self.orth_reg_weight == 0:
            return outputs.loss
        return outputs.loss + self.orth_reg_weight * orthogonality_penalty(model)

    def on_step_end(self, model: nn.Module, global_step: int, optimizer: torch.optim.Optimizer) -> None:
        """Update importance scores and mask singular values to the budget b(global_step)."""
        if self.schedule is None:
            raise RuntimeError("AdaLoRA.on_train_begin must run before the first step (it sets total_step)")
        self._tuner(model).update_and_allocate(global_step)

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        """The allocator's smoothed sensitivity scores and the current rank pattern (resume)."""
        tuner = self._tuner(model)
        allocator = tuner.rankallocator
        return {"ipt": allocator.ipt, "exp_avg_ipt": allocator.exp_avg_ipt, "exp_avg_unc": allocator.exp_avg_unc,
                "rank_pattern": tuner.peft_config[tuner.trainable_adapter_name].rank_pattern}

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        tuner = self._tuner(model)
        allocator = tuner.rankallocator
        allocator.ipt, allocator.exp_avg_ipt, allocator.exp_avg_unc = (
            state["ipt"], state["exp_avg_ipt"], state["exp_avg_unc"])
        tuner.peft_config[tuner.trainable_adapter_name].rank_pattern = state["rank_pattern"]

    def ranks(self, model: nn.Module) -> dict[str, int]:
        return adalora_ranks(model)
