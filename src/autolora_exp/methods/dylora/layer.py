"""DyLoRA's layer: LoRA with r_max ordered components, of which the first b are used.

For a frozen linear map y = W0 x + bias, with A (r_max x in) and B (out x r_max):

    y = W0 x + bias + (lora_alpha / b) B[:, :b] A[:b, :] dropout(x)        b = the active rank

i.e. LoRA of rank b on the first b rows of A and columns of B, with LoRA's own scaling alpha/b.
(The reference code scales each of A_b and B_b by sqrt(r_max / b) and the product by
alpha / r_max, which is the same alpha / b: huawei-noah/Efficient-NLP @ bb44348,
DyLoRA/loralib/DyLoRA.py:56-62 and layers.py:124,180-182.) Initialisation is LoRA's: A
Kaiming-uniform, B = 0 (layers.py:147-148), so Delta W = 0 at the start.

Training samples b at every step (nested dropout over the rank components, see
:class:`~autolora_exp.methods.dylora.method.DyLoRA`). In the ``frozen`` mode (the reference's
``set_rank(new_rank, frozen=True)``, run_glue.py:552; DyLoRA.py:48-56) the first b - 1
components are detached, so the step's gradient reaches only the b-th row of A and the b-th
column of B:

    A_b = [sg(A[:b-1]); A[b-1]],   B_b = [sg(B[:, :b-1]), B[:, b-1]]       sg = stop-gradient

Their values are unchanged: the forward is the same as without ``frozen``. (The optimiser may
still move the detached components by its momentum and weight decay, as in the reference code,
which trains with AdamW and weight decay 0.1: "frozen" is about this step's gradient.)

After training, :meth:`DyLoRALinear.truncate` keeps the first b rows/columns only: a plain LoRA
of rank b, whose outputs equal the rank-b forward of the untruncated layer.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from autolora_exp.errors import UserError
from autolora_exp.models import check_adaptable, check_head_modules, check_target_modules, replace_layers


class DyLoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus DyLoRA's A (r_max x in), B (out x r_max), used up to ``rank``."""

    def __init__(self, base: nn.Linear, r_max: int, lora_alpha: float, lora_dropout: float) -> None:
        super().__init__()
        if r_max < 1:
            raise UserError(f"r_max={r_max} is not a valid number of rank components; use an integer >= 1")
        self.base = base
        self.in_features, self.out_features = base.in_features, base.out_features
        self.lora_alpha = float(lora_alpha)
        self.lora_dropout = nn.Dropout(lora_dropout) if lora_dropout > 0 else nn.Identity()
        factory = {"dtype": base.weight.dtype, "device": base.weight.device}
        self.lora_A = nn.Parameter(torch.empty(r_max, base.in_features, **factory))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r_max, **factory))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        #: the rank the forward uses (b), and whether components 1..b-1 are detached
        self.rank = r_max
        self.frozen = False

    @property
    def r_max(self) -> int:
        """Components held (after :meth:`truncate`: the kept rank)."""
        return self.lora_A.shape[0]

    def set_rank(self, rank: int, frozen: bool = False) -> None:
        """Use the first ``rank`` components; ``frozen``: only the last of them gets gradient."""
        if not 1 <= rank <= self.r_max:
            raise ValueError(f"rank {rank} is outside 1..{self.r_max} for this DyLoRA layer")
        self.rank, self.frozen = int(rank), bool(frozen)

    @property
    def scaling(self) -> float:
        """lora_alpha / b (LoRA's scaling at the active rank)."""
        return self.lora_alpha / self.rank

    def factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_b, B_b): the first b rows of A and columns of B, the first b - 1 detached if frozen."""
        b = self.rank
        a, bb = self.lora_A[:b], self.lora_B[:, :b]
        if self.frozen and b > 1:
            a = torch.cat([a[:-1].detach(), a[-1:]], dim=0)
            bb = torch.cat([bb[:, :-1].detach(), bb[:, -1:]], dim=1)
        return a, bb

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        """(lora_alpha / b) B_b A_b dropout(x)."""
        a, b = self.factors()
        return nn.functional.linear(nn.functional.linear(self.lora_dropout(x), a), b) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + self.delta(x)

    @torch.no_grad()
    def truncate(self, rank: int) -> None:
        """Keep the first ``rank`` components only (new parameters, same ``requires_grad``)."""
        self.set_rank(rank)
        for name in ("lora_A", "lora_B"):
            old = getattr(self, name)
            kept = old[:rank] if name == "lora_A" else old[:, :rank]
            setattr(self, name, nn.Parameter(kept.clone(), requires_grad=old.requires_grad))

    def extra_repr(self) -> str:
        return (f"in={self.in_features}, out={self.out_features}, r_max={self.r_max}, rank={self.rank}, "
                f"lora_alpha={self.lora_alpha:g}, frozen={self.frozen}")


def inject_dylora(model: nn.Module, target_modules: list[str], head_modules: list[str], r_max: int,
                  lora_alpha: float, lora_dropout: float) -> dict[str, DyLoRALinear]:
    """Replace every target (peft's suffix match; a linear layer outside the head, as
    :func:`~autolora_exp.models.check_adaptable` requires) by a :class:`DyLoRALinear`, in place.

    Everything is frozen except A, B and the head modules (trained by every method). Returns
    {full module name: layer}, sorted by name (the order the layers draw their initial values in).
    """
    for name in check_target_modules(model, list(target_modules)):
        if isinstance(model.get_submodule(name), DyLoRALinear):
            raise UserError(f"module {name!r} already has a DyLoRA adapter; inject once per model")
    check_head_modules(model, list(head_modules))
    names = check_adaptable(model, list(target_modules), list(head_modules))  # linear layers outside the head
    for name in names:
        module = model.get_submodule(name)
        if not isinstance(module, nn.Linear):  # GPT-2's Conv1D: load_backbone turns targeted ones into nn.Linear
            raise UserError(f"model.target_modules: '{name}' is a {type(module).__name__}; DyLoRA adapts nn.Linear "
                            "layers (models.load_backbone loads targeted GPT-2 Conv1D layers as nn.Linear)")
    heads = check_target_modules(model, list(head_modules)) if head_modules else []
    return replace_layers(model, names, lambda base: DyLoRALinear(base, r_max, lora_alpha, lora_dropout), heads)


def dylora_layers(model: nn.Module) -> dict[str, DyLoRALinear]:
    """{full module name: layer} for every :class:`DyLoRALinear` of ``model``."""
    return {n: m for n, m in model.named_modules() if isinstance(m, DyLoRALinear)}


def set_rank(model: nn.Module, rank: int, frozen: bool = False) -> None:
    """Every DyLoRA layer of ``model`` at ``rank`` (one b for the whole model, as the reference's
    ``model.set_rank``: modeling_roberta.py:195-197)."""
    layers = dylora_layers(model)
    if not layers:
        raise RuntimeError("the model has no DyLoRA layers (DyLoRA.prepare builds them)")
    for layer in layers.values():
        layer.set_rank(rank, frozen)
