"""The LoRA layer with selection variables, and its injection into a model.

For a frozen linear map y = W0 x + b the search layer computes

    y = W0 x + b + scaling * B diag(alpha) A dropout(x),   alpha = gate(beta),  scaling = lora_alpha / k

i.e. the update Delta = scaling * sum_j alpha_j u_j v_j^T with u_j the j-th column of
B (out x k, zero init, as LoRA) and v_j the j-th row of A (k x in, Kaiming-uniform init, as
LoRA); beta (k,) are the selection logits of the paper (``selection_logits``).

Fused projections (GPT-2's ``c_attn`` Conv1D computes q, k and v in one matrix): the model is
loaded with the fused module split into ``nn.Linear`` children ``q``, ``k``, ``v``
(:mod:`autolora_exp.fused_qkv`, when the targets are ``c_attn.q`` / ``c_attn.v``), so each
slice is an ordinary target here: its selection unit is named ``...attn.c_attn.q`` /
``...attn.c_attn.v`` by :func:`selection_layers`, with separate gates for q and v.
:class:`SelectionLoRA` stays the adapter alone — A, B, beta and ``delta(x)`` for an
(in_features, out_features) pair — independent of the wrapped module.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autolora_exp.errors import UserError
from autolora_exp.models import replace_layers
from autolora_exp.module_match import matches
from autolora_exp.methods.autolora.gates import apply_gate, check_gate, check_selection_init, default_selection_init


class SelectionLoRA(nn.Module):
    """The adapter: A (k x in), B (out x k), selection logits beta (k,); no base module.

    ``delta(x) = scaling * B diag(alpha) A dropout(x)`` with ``alpha = gate(beta)``.
    ``selection_init`` (None -> the gate's default, see
    :func:`~autolora_exp.methods.autolora.gates.default_selection_init`) fills beta.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        k: int,
        gate: str = "softmax",
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.0,
        selection_init: float | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | None = None,
    ) -> None:
        super().__init__()
        if k < 1:
            raise UserError(f"k={k} is not a valid number of rank-1 terms; use an integer >= 1")
        self.in_features, self.out_features, self.k = in_features, out_features, k
        self.gate = check_gate(gate)
        self.lora_alpha = float(lora_alpha)
        self.scaling = self.lora_alpha / k
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        factory = {"dtype": dtype, "device": device}
        self.lora_A = nn.Parameter(torch.empty(k, in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(out_features, k, **factory))
        # LoRA's init (peft, microsoft/LoRA): A like nn.Linear's weight, B = 0 so Delta = 0 at start
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        init = default_selection_init(gate, k) if selection_init is None else selection_init
        self.selection_logits = nn.Parameter(torch.full((k,), check_selection_init(gate, init), **factory))

    def alpha(self) -> torch.Tensor:
        """alpha = gate(beta), shape (k,)."""
        return apply_gate(self.selection_logits, self.gate)

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """scaling * B diag(alpha) A dropout(x): the k-term update applied to x."""
        h = nn.functional.linear(self.lora_dropout(x), self.lora_A)  # (..., k): v_j^T x
        h = h * (self.alpha() * self.scaling)  # diag(alpha): weight of each rank-1 term (scaled on k, not out)
        return nn.functional.linear(h, self.lora_B)  # sum_j alpha_j u_j (v_j^T x)

    def reset_selection(self, value: float) -> None:
        """Set every beta_j to ``value`` (a search's starting point)."""
        with torch.no_grad():
            self.selection_logits.fill_(check_selection_init(self.gate, value))

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, k={self.k}, gate={self.gate}, scaling={self.scaling:g}"


class SelectionLoRALinear(SelectionLoRA):
    """A frozen ``nn.Linear`` plus the selection adapter: ``base(x) + delta(x)``."""

    def __init__(self, base: nn.Linear, k: int, **kwargs) -> None:
        super().__init__(
            base.in_features, base.out_features, k, dtype=base.weight.dtype, device=base.weight.device, **kwargs
        )
        self.base = base

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.delta(x)


def inject_selection_lora(
    model: nn.Module,
    target_modules: list[str],
    k: int = 8,
    gate: str = "softmax",
    lora_alpha: float = 16.0,
    lora_dropout: float = 0.0,
    trainable_extra: list[str] | None = None,
    selection_init: float | None = None,
    train_backbone: bool = False,
) -> dict[str, SelectionLoRALinear]:
    """Replace every target ``nn.Linear`` by a :class:`SelectionLoRALinear`, in place.

    Everything is frozen except the LoRA factors, the selection logits and the parameters of
    the ``trainable_extra`` modules (the task head, e.g. ``["classifier"]``), matched by name
    suffix like the targets. ``train_backbone=True`` leaves every parameter trainable except the
    targets' base weight matrices (their biases train), as the authors' BioNLP search
    (ruz048/AutoLoRA run_bionlp_search.py freezes nothing; their loralib/layers.py:114 freezes
    only the wrapped weight). Returns {full module name: layer} in model order.
    """
    check_gate(gate)
    if k < 1:
        raise UserError(f"k={k} is not a valid number of rank-1 terms; use an integer >= 1")
    if selection_init is not None:
        check_selection_init(gate, selection_init)
    targets = list(target_modules)
    found = [(n, m) for n, m in model.named_modules() if n and matches(n, targets)]
    if not found:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise UserError(
            f"target_modules={targets} match no module of {type(model).__name__}; "
            f"its linear modules are named: {', '.join(linear) or '(none)'}"
        )
    for name, module in found:
        if isinstance(module, SelectionLoRA):
            raise UserError(f"module {name!r} already has a selection LoRA; inject once per model")
        if not isinstance(module, nn.Linear):
            raise UserError(
                f"target module {name!r} is a {type(module).__name__}, not nn.Linear; "
                "selection LoRA supports nn.Linear targets; for GPT-2's fused c_attn name its slices "
                "(target_modules: [c_attn.q, c_attn.v]), which load_backbone splits into linears"
            )

    layers = replace_layers(model, [name for name, _ in found], lambda base: SelectionLoRALinear(
        base, k, gate=gate, lora_alpha=lora_alpha, lora_dropout=lora_dropout, selection_init=selection_init))
    for layer in layers.values():
        for p in (layer.lora_A, layer.lora_B, layer.selection_logits):
            p.requires_grad_(True)

    extra = list(trainable_extra or [])
    for t in extra:
        mods = [m for n, m in model.named_modules() if n and matches(n, [t])]
        if not mods:
            top = [n for n, _ in model.named_children()]
            raise UserError(f"trainable_extra {t!r} matches no module; top-level modules: {', '.join(top)}")
        for m in mods:
            for p in m.parameters():
                p.requires_grad_(True)
    if train_backbone:
        frozen = {id(layer.base.weight) for layer in layers.values()}
        for p in model.parameters():
            p.requires_grad_(id(p) not in frozen)
    return layers


def selection_layers(model: nn.Module) -> dict[str, SelectionLoRA]:
    """{full module name: selection unit} for every :class:`SelectionLoRA` in ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, SelectionLoRA)}


def selection_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The selection logits beta of every layer (the outer variables of the bilevel search)."""
    return [m.selection_logits for m in selection_layers(model).values()]


def weight_parameters(model: nn.Module) -> list[nn.Parameter]:
    """Every other trainable parameter: LoRA factors and the head (the inner variables W)."""
    betas = {id(p) for p in selection_parameters(model)}
    return [p for p in model.parameters() if p.requires_grad and id(p) not in betas]


def alphas(model: nn.Module) -> dict[str, list[float]]:
    """{layer name: alpha = gate(beta) as a list} for every selection unit."""
    with torch.no_grad():
        return {n: m.alpha().double().tolist() for n, m in selection_layers(model).items()}


def selection_logits(model: nn.Module) -> dict[str, list[float]]:
    """{layer name: beta as a list of floats} for every selection unit (what thresholds read)."""
    with torch.no_grad():
        return {n: m.selection_logits.double().tolist() for n, m in selection_layers(model).items()}
