"""SoRA (Ding et al., "Sparse Low-rank Adaptation of Pre-trained Language Models", EMNLP 2023).

LoRA of rank r_max with a gate vector g between A and B (:mod:`.layer`), trained in one phase
(no rank search, no retrain) with the shared loop through the training hooks:

    param_groups   A, B and the head as every method (AdamW, weight decay on matrices); the
                   gates in their own group: no weight decay, their own learning rate and eps
    training_loss  L = task loss + l1_weight * mean_j |g_j|      (over every gate entry)
    on_step_end    g <- T_xi(g) after the optimiser's step      (:mod:`.proximal`; or T_{eta_t xi})
    ranks          ||g_l||_0 per layer, the components left after the zero gates are pruned

The optimiser of the gates. The authors train g with their ``SparseAdamW`` (TsinghuaC3I/SoRA
src/sparse_optimizer.py), a second optimiser holding only the gates (run_glue.py:618): the
AdamW update of transformers 4.14.1 (their requirements.txt; betas 0.9/0.999, eps 1e-6,
weight decay 0, bias correction) followed by the threshold (lines 116-119), with its own
linear warm-up schedule of the same length as the main one (run_glue.py:619-621) and the main
learning rate (``sparse_lr`` unset, run_glue.py:290-291). Here the gates are a group of the loop's one torch AdamW with
``weight_decay=0``, ``eps=gate_eps`` and ``lr=gate_lr`` (null: ``lr``): the loop's linear
warm-up schedule scales every group alike, so the gates follow the same schedule. One
difference remains: transformers' AdamW adds eps to sqrt(v) before the bias correction, torch's
after it; in torch's form the authors' denominator is sqrt(v_hat) + eps / sqrt(1 - beta2^t), larger
than torch's sqrt(v_hat) + eps by eps (1 / sqrt(1 - beta2^t) - 1): 3.1e-5 at the first step, 0 in
the limit.
The loss term is the authors' too (src/trainer.py:400-407: ``loss += sparse_lambda * sum|g| /
numel``, sparse_lambda = 10 in their GLUE script); the gradient clipping of the loop covers the
gates as theirs does (trainer.py:757, all parameters).

Parameters: result.json's ``params.trainable`` counts what trains, A, B and g of every layer
at r_max plus the head; :meth:`SoRA.parameter_counts` gives ``effective``, what is left once
the zero gates are pruned, sum_l ||g_l||_0 (in_l + out_l) plus the head (the pipeline does not
write it into ``params`` yet: it does not call ``Method.parameter_counts``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import nn

from autolora_exp.contract import (COUNT, DROPOUT, LEARNING_RATE, LORA_ALPHA, Method, MethodConfig, MethodSpec,
                                   default_param_groups, register_method)
from autolora_exp.methods.sora.layer import (GATE_INITS, effective_parameters, gate_parameters, inject_sora,
                                             sora_ranks)
from autolora_exp.methods.sora.proximal import PROXIMAL_RULES, proximal_step
from autolora_exp.validation import accepts, check_fields


@dataclass
class SoRAConfig(MethodConfig):
    """SoRA's settings; the source of each default is in conf/method/sora.yaml."""

    _target_: str = "autolora_exp.methods.sora.method.SoRA"
    name: str = "sora"
    lr: float = accepts(8e-4, **LEARNING_RATE)
    #: r_max: the rank each layer starts from (the gate's length)
    r_max: int = accepts(8, **COUNT)
    lora_alpha: float = accepts(16.0, **LORA_ALPHA)
    lora_dropout: float = accepts(0.0, **DROPOUT)
    #: normal: g ~ N(0, 1) (the authors' code) | ones: g = 1 (starts as LoRA of rank r_max)
    gate_init: str = accepts("normal", choices=tuple(GATE_INITS))
    #: xi: the proximal step's threshold, per optimiser step (the authors' ``sparse_lambda_2``)
    xi: float = accepts(3e-4, ge=0)
    #: false: the threshold is xi at every step (the authors' code) | true: eta_t xi, eta_t the
    #: gates' learning rate of the step (the paper's proximal step, g <- T_{eta_t xi}(...))
    xi_times_lr: bool = False
    #: soft: T_xi exactly | authors: the authors' masks (see methods/sora/proximal.py)
    proximal: str = accepts("soft", choices=PROXIMAL_RULES)
    #: weight of mean_j |g_j| in the training loss (the authors' ``sparse_lambda``); 0 = none
    l1_weight: float = accepts(10.0, ge=0)
    #: learning rate of the gates; null = ``lr`` (the authors' ``sparse_lr``)
    gate_lr: Optional[float] = accepts(None, **LEARNING_RATE)
    #: AdamW eps of the gates' group (the authors' SparseAdamW: transformers' AdamW default)
    gate_eps: float = accepts(1e-6, gt=0)


class SoRA(Method):
    """LoRA with gates pruned by a proximal L1 step; trains in one phase (no ``search_plan``)."""

    name = "sora"

    def __init__(self, **settings: Any) -> None:
        config = SoRAConfig(**settings)  # the defaults are the schema's, defined once
        check_fields(config, "method.")  # each value against its rule (r_max >= 1, xi >= 0, ...)
        self.config = config
        self.name = config.name
        self.lr = config.lr
        #: optimiser updates of the gates seen by :meth:`on_step_end` (AdamW's ``step`` count)
        self.gate_updates = 0
        #: the gates' learning rate of the next step (the scheduler sets it after each step)
        self.next_lr: float | None = None
        self.gate_group: dict[str, Any] = {}

    # ---- the model ----------------------------------------------------------------------

    def prepare(self, model: nn.Module, target_modules: list[str], head_modules: list[str]) -> nn.Module:
        c = self.config
        inject_sora(model, target_modules, head_modules, c.r_max, c.lora_alpha, c.lora_dropout, c.gate_init)
        return model

    def ranks(self, model: nn.Module) -> dict[str, int]:
        """||g_l||_0 per layer."""
        return sora_ranks(model)

    def parameter_counts(self, model: nn.Module) -> dict[str, int]:
        """``effective``: the trainable parameters once the zero gates are pruned."""
        return {"effective": effective_parameters(model)}

    # ---- the training hooks -------------------------------------------------------------

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """The loop's groups without the gates, and the gates' own group."""
        gates = gate_parameters(model)
        if not gates:
            raise RuntimeError("SoRA hooks need the model returned by SoRA.prepare (it has no gates)")
        gate_ids = {id(g) for g in gates}
        groups = default_param_groups(model, weight_decay)
        for group in groups:
            group["params"] = [p for p in group["params"] if id(p) not in gate_ids]
        c = self.config
        #: the optimiser holds this very dict (torch keeps a group's dict), until a resume's
        #: ``optimizer.load_state_dict`` replaces it; its ``lr`` is the scheduled rate of the next step
        self.gate_group = {"params": gates, "weight_decay": 0.0, "lr": c.gate_lr if c.gate_lr is not None else c.lr,
                           "eps": c.gate_eps}
        return [*groups, self.gate_group]

    def training_loss(self, model: nn.Module, outputs: Any) -> torch.Tensor:
        """L = task loss + l1_weight * sum_l sum_j |g_lj| / (number of gate entries)."""
        if self.config.l1_weight == 0:
            return outputs.loss
        gates = gate_parameters(model)
        l1 = torch.stack([g.abs().sum() for g in gates]).sum() / sum(g.numel() for g in gates)
        return outputs.loss + self.config.l1_weight * l1

    def on_train_begin(self, model: nn.Module, total_steps: int) -> None:
        self.gate_updates = 0
        self.next_lr = None

    def on_step_begin(self, model: nn.Module, step: int) -> None:
        if step == 0:  # a fresh start: the scheduler has set the first step's rate in the gates' group
            self.next_lr = float(self.gate_group["lr"])

    def on_step_end(self, model: nn.Module, global_step: int, optimizer: torch.optim.Optimizer) -> None:
        """g <- T_tau(g) for every gate after the optimiser's step, tau = xi (``xi_times_lr``:
        eta_t xi, eta_t the gates' learning rate of this step). None where the optimiser did not
        update the gates (fp16: the loss scaler skips a step whose gradients overflowed), as the
        authors' threshold is part of their optimiser's step."""
        gates = gate_parameters(model)
        eta = self.next_lr
        if eta is None and self.config.xi_times_lr:
            raise RuntimeError("SoRA.on_step_begin must run before the first step (it reads the step's rate)")
        # the scheduler has moved the rate on: what the next step uses (kept for a resume)
        gate_group = next(g for g in optimizer.param_groups if g["params"] and g["params"][0] is gates[0])
        self.next_lr = float(gate_group["lr"])
        updates = int(optimizer.state[gates[0]].get("step", 0)) if gates[0] in optimizer.state else 0
        if updates == self.gate_updates:
            return
        self.gate_updates = updates
        xi = self.config.xi * eta if self.config.xi_times_lr else self.config.xi
        proximal_step(gates, xi, self.config.proximal)

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        """The optimiser updates of the gates seen so far (a resumed run skips the same steps) and
        the gates' learning rate of the next step (``xi_times_lr``)."""
        return {"gate_updates": self.gate_updates, "next_lr": self.next_lr}

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        self.gate_updates, self.next_lr = int(state["gate_updates"]), state["next_lr"]

register_method(MethodSpec("sora", SoRAConfig, table_labels={"sora": "SoRA"}))
