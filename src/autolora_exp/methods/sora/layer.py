"""The SoRA layer: LoRA with a gate vector between its down- and up-projection.

For a frozen linear map y = W0 x + b the layer computes (Ding et al., EMNLP 2023, eq. 3)

    y = W0 x + b + scaling * B diag(g) A dropout(x),      scaling = lora_alpha / r_max

A (r_max x in, Kaiming-uniform) and B (out x r_max, zero) as LoRA, g (r_max,) the gate. With
g = 1 this is LoRA of rank r_max exactly. The authors' ``LowRankLinear`` (TsinghuaC3I/SoRA
src/lora.py:38-47) computes ``((dropout(x) @ A.T) * gate @ B.T) * scaling`` with
``gate = torch.randn(1, r)``: the same map, the gate stored as a row instead of a vector.

The rank of a layer is the number of non-zero gates ``r = ||g||_0``. A zero gate switches its
component off exactly (its row of A and column of B no longer reach the output), so after
training those components are pruned (:func:`prune_zero_components` in place, :func:`pruned_lora`
as plain LoRA factors): what remains is a plain LoRA of
rank r with B' = B[:, g != 0] diag(g[g != 0]) and A' = A[g != 0], whose parameter count is

    r * (in + out)                                     (the effective parameters of the layer)

against ``r_max * (in + out) + r_max`` trained (A, B and g).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autolora_exp.errors import UserError
from autolora_exp.models import check_target_modules, replace_layers

#: how the gates start: ``normal`` = N(0, 1) per entry, as the authors' code (src/lora.py:41,
#: ``torch.randn(1, r)``); ``ones`` = g = 1, the layer starts as LoRA of rank r_max
GATE_INITS = {"normal": torch.randn, "ones": torch.ones}


def linear_shape(module: nn.Module) -> tuple[int, int] | None:
    """(in_features, out_features) of an ``nn.Linear`` or a transformers ``Conv1D`` (GPT-2's
    c_proj / c_fc: weight in x out, y = x W + b); None for any other module."""
    if isinstance(module, nn.Linear):
        return module.in_features, module.out_features
    from transformers.pytorch_utils import Conv1D

    if isinstance(module, Conv1D):
        return int(module.weight.shape[0]), int(module.weight.shape[1])
    return None


class SoRALinear(nn.Module):
    """A frozen linear module ``base`` plus the gated low-rank update ``scaling * B diag(g) A x``."""

    def __init__(self, base: nn.Module, r_max: int, lora_alpha: float, lora_dropout: float, gate_init: str) -> None:
        super().__init__()
        shape = linear_shape(base)
        if shape is None:
            raise UserError(f"SoRA adapts nn.Linear / Conv1D modules, not {type(base).__name__}")
        self.base = base
        self.in_features, self.out_features = shape
        self.r_max = r_max
        self.lora_alpha = float(lora_alpha)
        self.scaling = self.lora_alpha / r_max
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        factory = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.empty(r_max, self.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r_max, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # LoRA's init (peft, microsoft/LoRA, SoRA lora.py:43)
        self.gate = nn.Parameter(GATE_INITS[gate_init](r_max, **factory))

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """scaling * B diag(g) A dropout(x)."""
        h = nn.functional.linear(self.lora_dropout(x), self.lora_A)  # (..., r_max): A x
        return nn.functional.linear(h * (self.gate * self.scaling), self.lora_B)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.delta(x)

    def rank(self) -> int:
        """||g||_0: the components whose gate is not exactly zero."""
        return int(torch.count_nonzero(self.gate.detach()))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r_max={self.r_max}, scaling={self.scaling:g}"


def inject_sora(model: nn.Module, target_modules: list[str], head_modules: list[str], r_max: int,
                lora_alpha: float, lora_dropout: float, gate_init: str) -> dict[str, SoRALinear]:
    """Replace every target module (suffix match, as peft) by a :class:`SoRALinear`, in place.

    Everything is frozen except A, B and g of each SoRA layer and the head modules (trained by
    every method). Returns {full module name: layer} in model order. The settings' defaults are
    the schema's (:class:`~autolora_exp.methods.sora.method.SoRAConfig`).
    """
    names = check_target_modules(model, list(target_modules))
    heads = check_target_modules(model, list(head_modules))
    for name in names:
        module = model.get_submodule(name)
        if isinstance(module, SoRALinear):
            raise UserError(f"module {name!r} already has a SoRA layer; inject once per model")
        if linear_shape(module) is None:
            raise UserError(f"target module {name!r} is a {type(module).__name__}; SoRA adapts nn.Linear / Conv1D "
                            "modules (GPT-2's fused c_attn: name its slices, c_attn.q / c_attn.v)")
    order = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return replace_layers(model, sorted(names, key=order.__getitem__),
                          lambda base: SoRALinear(base, r_max, lora_alpha, lora_dropout, gate_init), heads)


def sora_layers(model: nn.Module) -> dict[str, SoRALinear]:
    """{full module name (as in the base model): layer} of every SoRA layer in ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SoRALinear)}


def gate_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The gates g of every layer (their own optimiser group, and the proximal step)."""
    return [layer.gate for layer in sora_layers(model).values()]


def sora_ranks(model: nn.Module) -> dict[str, int]:
    """{layer name: ||g||_0}."""
    return {name: layer.rank() for name, layer in sora_layers(model).items()}


def effective_parameters(model: nn.Module) -> int:
    """Trainable parameters of the model once the zero gates are pruned and each gate is folded
    into B (:func:`pruned_lora`): sum over layers of ||g_l||_0 (in_l + out_l), plus every other
    trainable parameter (the head). The authors count it as trainable minus ``zeros * hidden * 2``
    (src/util.py:8-21), which is the same where every adapted matrix is hidden x hidden."""
    layers = sora_layers(model).values()
    in_layers = {id(p) for layer in layers for p in (layer.lora_A, layer.lora_B, layer.gate)}
    others = sum(p.numel() for p in model.parameters() if p.requires_grad and id(p) not in in_layers)
    return others + sum(layer.rank() * (layer.in_features + layer.out_features) for layer in layers)


def prune_zero_components(model: nn.Module) -> dict[str, int]:
    """Drop, in place, every component whose gate is zero: A, B and g of each layer keep only
    the rows / columns / entries with g_j != 0 (the scaling lora_alpha / r_max stays), so the
    model computes the same function with ||g_l||_0 components per layer. Returns the ranks."""
    for layer in sora_layers(model).values():
        with torch.no_grad():
            keep = layer.gate != 0
            for name, value in (("lora_A", layer.lora_A[keep]), ("lora_B", layer.lora_B[:, keep]),
                                ("gate", layer.gate[keep])):
                requires_grad = getattr(layer, name).requires_grad
                setattr(layer, name, nn.Parameter(value.clone(), requires_grad=requires_grad))
    return sora_ranks(model)


def pruned_lora(layer: SoRALinear) -> tuple[torch.Tensor, torch.Tensor]:
    """(A', B') of the plain LoRA the layer reduces to: the components with g_j != 0, each gate
    folded into its column of B, so that ``scaling * B' A' x == scaling * B diag(g) A x``."""
    with torch.no_grad():
        keep = layer.gate != 0
        return layer.lora_A[keep].clone(), (layer.lora_B[:, keep] * layer.gate[keep]).clone()
