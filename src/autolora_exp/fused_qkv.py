"""GPT-2's fused attention projection, split into q, k and v so that LoRA can adapt the slices.

GPT-2 computes the three projections with one ``Conv1D`` (``attn.c_attn``, weight ``d x 3d``):

    [q | k | v] = x W + b,   W = [W_q | W_k | W_v],  b = [b_q | b_k | b_v]

The LoRA paper adapts only W_q and W_v, and AutoLoRA needs one rank (one vector of selection
variables) per adapted matrix. peft (0.21.2) can put LoRA on ``c_attn`` only as a whole: one
rank for the 3d outputs, the k part included; it has no per-slice option (the ``enable_lora``
of microsoft/LoRA's ``MergedLinear``). :class:`SplitQKV` replaces a fused ``c_attn`` by three
``nn.Linear`` children ``q``, ``k``, ``v`` holding exactly the slices of W and b,

    SplitQKV(x) = [q(x) | k(x) | v(x)]      (= x W + b, the same map)

so every method adapts the slices through the same code as any other linear layer:
LoRA and AdaLoRA through peft with targets ``c_attn.q`` / ``c_attn.v`` (per-slice ranks with
``rank_pattern``), AutoLoRA's selection layer on each slice with its own selection variables
(``transformer.h.<i>.attn.c_attn.q`` and ``.v`` are separate layers with separate ranks).
The authors' AutoLoRA code shares one softmax between the q and v parts of a block instead
(docs/AUTOLORA.md, "What the authors' code does differently", item 6): here q and v get
separate selection variables and separate ranks, as the paper's per-layer formulation reads.

Targets name slices with a ``.q``, ``.k`` or ``.v`` suffix on a fused module's name
(``c_attn.q``); :func:`split_fused_qkv` splits exactly the fused modules so named and leaves
a model whose targets name no slice untouched. The split computes the frozen projection as
three matrix products instead of one: the outputs agree with the fused module's to float
rounding, the parameter count is unchanged, and the state-dict keys of ``c_attn`` become
``c_attn.{q,k,v}.{weight,bias}``.

GPT-2's other linear layers (``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``: the ``all_linear``
preset) are Conv1D too; :func:`conv1d_as_linear` replaces each targeted one by the
``nn.Linear`` with the transposed weight (``Conv1D(x) = x W + b = Linear(x)`` with weight
``W^T``), so AutoLoRA's selection layer (``nn.Linear`` only) and peft see ordinary linears.
"""

from __future__ import annotations

import torch
from torch import nn

from autolora_exp.errors import UserError
from autolora_exp.module_match import matches

#: slice name -> position in the fused output [q | k | v]
SLICES = ("q", "k", "v")


def _is_fused_qkv(module: nn.Module) -> bool:
    """A GPT-2 style ``Conv1D`` (weight in x out) whose output is three equal parts."""
    from transformers.pytorch_utils import Conv1D

    return isinstance(module, Conv1D) and module.weight.shape[1] % 3 == 0


def _linear_of_columns(conv: nn.Module, columns: slice) -> nn.Linear:
    """The ``nn.Linear`` computing output ``columns`` of a Conv1D: y = x W[:, c] + b[c], held as
    Linear's weight W[:, c]^T (a copy, with the Conv1D's requires_grad)."""
    weight, bias = conv.weight.detach()[:, columns], conv.bias.detach()[columns]
    linear = nn.Linear(weight.shape[0], weight.shape[1], dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        linear.weight.copy_(weight.T)  # nn.Linear: y = x W^T + b
        linear.bias.copy_(bias)
    linear.weight.requires_grad_(conv.weight.requires_grad)
    linear.bias.requires_grad_(conv.bias.requires_grad)
    return linear


class SplitQKV(nn.Module):
    """``[q(x) | k(x) | v(x)]`` with three ``nn.Linear`` holding the slices of a fused Conv1D."""

    def __init__(self, fused: nn.Module) -> None:
        super().__init__()
        in_features, out3 = fused.weight.shape  # Conv1D: weight (in, 3d), y = x W + b
        d = out3 // 3
        for i, name in enumerate(SLICES):
            self.add_module(name, _linear_of_columns(fused, slice(i * d, (i + 1) * d)))
        self.in_features, self.out_features = in_features, out3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.q(x), self.k(x), self.v(x)], dim=-1)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features} (q | k | v)"


def slice_targets(targets: list[str]) -> dict[str, list[str]]:
    """{fused module target: [slices]} for the targets that end in ``.q``, ``.k`` or ``.v``."""
    out: dict[str, list[str]] = {}
    for target in targets:
        parent, _, leaf = target.rpartition(".")
        if parent and leaf in SLICES:
            out.setdefault(parent, []).append(leaf)
    return out


def split_fused_qkv(model: nn.Module, targets: list[str]) -> list[str]:
    """Replace, in place, every fused q/k/v ``Conv1D`` that a target names a slice of.

    A target ``X.q`` (``X.k``, ``X.v``) whose ``X`` matches a fused module (by name or name
    suffix, as peft matches targets) splits that module; a target that is already a module of
    the model (e.g. MPNet's ``attention.attn.q``) is left alone. Returns the full names of the
    split modules (empty when no target names a fused slice).
    """
    names = {n for n, _ in model.named_modules() if n}
    split: list[str] = []
    for parent, _ in slice_targets(targets).items():
        if any(matches(n, [f"{parent}.{s}" for s in SLICES]) for n in names):
            continue  # real modules named q/k/v (already split, or an architecture that has them)
        hits = [(n, m) for n, m in model.named_modules() if n and matches(n, [parent])]
        fused = [(n, m) for n, m in hits if _is_fused_qkv(m)]
        if hits and not fused:
            raise UserError(f"target '{parent}.<q|k|v>' names slices of '{parent}', which is a "
                            f"{type(hits[0][1]).__name__}, not a fused q/k/v Conv1D (GPT-2's c_attn)")
        for name, module in fused:
            model.set_submodule(name, SplitQKV(module))
            split.append(name)
    return split


def conv1d_as_linear(model: nn.Module, targets: list[str]) -> list[str]:
    """Replace, in place, every ``Conv1D`` a target matches (name or name suffix, as peft) by the
    equal ``nn.Linear``; returns their full names (empty when no target names a Conv1D).

    Run after :func:`split_fused_qkv`: a fused c_attn that a ``.q/.k/.v`` target split is no
    Conv1D any more; one that a target names whole becomes a single ``Linear(d, 3d)``.
    """
    from transformers.pytorch_utils import Conv1D

    replaced = []
    for name, module in list(model.named_modules()):
        if name and isinstance(module, Conv1D) and matches(name, targets):
            model.set_submodule(name, _linear_of_columns(module, slice(None)))
            replaced.append(name)
    return replaced
