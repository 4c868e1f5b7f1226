"""Houlsby bottleneck adapters (Houlsby et al., ICML 2019), the project's own small module.

An adapter maps a sub-layer's output ``h`` (width d) through a bottleneck of width m << d:

    adapter(h) = h + W_up f(W_down h + b_down) + b_up      W_down: m x d,  W_up: d x m

with ``W_up = 0, b_up = 0`` at initialisation, so every adapter starts as the identity and
the adapted network computes exactly the pretrained one. Two adapters per block: after the
attention output projection and after the feed-forward output projection, each where
Houlsby's reference code (google-research/adapter-bert) puts it: after the projection's
dropout, before the residual sum (and, in BERT-style post-LN blocks, its LayerNorm):

    BERT / RoBERTa:  LayerNorm(adapter(dropout(dense(x))) + residual)
    GPT-2:           residual + adapter(dropout(c_proj(x)))

The adapter wraps the projection's dropout module (``...output.dropout``,
``...attn.resid_dropout``, ``...mlp.dropout``), so no backbone parameter is renamed and the
backbone's state dict loads unchanged.

Trained: the adapters, the task head and (Houlsby's choice, ``train_layer_norms``) every
LayerNorm's gain and bias; every other backbone weight is frozen. Trainable parameters:

    n_adapters * (2 d m + d + m)  +  LayerNorm params (when trained)  +  head params

``adapters`` (AdapterHub) is not used: its 1.3.0 release pins transformers ~= 4.57.6, and the
project runs transformers 5.x.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from autolora_exp.errors import UserError
from autolora_exp.contract import COUNT, LEARNING_RATE, Method, MethodConfig, MethodSpec, register_method
from autolora_exp.models import check_target_modules, replace_layers
from autolora_exp.validation import accepts, check_fields

#: Houlsby's reference code initialises W_down from a truncated normal of this std (W_up too,
#: but it starts at zero here so the adapter is exactly the identity).
DOWN_INIT_STD = 1e-3

#: model_type -> patterns (full module names) of the modules whose output gets an adapter:
#: the dropout right after the attention output projection and after the feed-forward one.
ADAPTER_SITES: dict[str, tuple[str, ...]] = {
    "bert": (r"(^|\.)layer\.\d+\.attention\.output\.dropout$", r"(^|\.)layer\.\d+\.output\.dropout$"),
    "roberta": (r"(^|\.)layer\.\d+\.attention\.output\.dropout$", r"(^|\.)layer\.\d+\.output\.dropout$"),
    "gpt2": (r"(^|\.)h\.\d+\.attn\.resid_dropout$", r"(^|\.)h\.\d+\.mlp\.dropout$"),
}

NONLINEARITIES = ("gelu", "relu", "tanh", "silu")


@dataclass
class AdapterConfig(MethodConfig):
    """Houlsby bottleneck adapters; defaults and their sources are in conf/method/adapter.yaml."""

    _target_: str = "autolora_exp.methods.adapter.HoulsbyAdapter"
    name: str = "adapter"
    lr: float = accepts(3e-4, **LEARNING_RATE)
    bottleneck: int = accepts(8, **COUNT)
    nonlinearity: str = accepts("gelu", choices=NONLINEARITIES)
    train_layer_norms: bool = True


register_method(MethodSpec("adapter", AdapterConfig, table_labels={"adapter": "Adapter"}))


class Adapter(nn.Module):
    """h + up(f(down(h))); ``up`` starts at zero, so the module starts as the identity."""

    def __init__(self, hidden_size: int, bottleneck: int, nonlinearity: str = "gelu") -> None:
        super().__init__()
        self.down = nn.Linear(hidden_size, bottleneck)
        self.act = _activation(nonlinearity)
        self.up = nn.Linear(bottleneck, hidden_size)
        nn.init.trunc_normal_(self.down.weight, std=DOWN_INIT_STD, a=-2 * DOWN_INIT_STD, b=2 * DOWN_INIT_STD)
        nn.init.zeros_(self.down.bias)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.up(self.act(self.down(hidden)))


class WithAdapter(nn.Module):
    """``adapter(inner(x))``: puts an adapter on the output of an existing module."""

    def __init__(self, inner: nn.Module, adapter: Adapter) -> None:
        super().__init__()
        self.inner = inner
        self.adapter = adapter

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.adapter(self.inner(hidden))


def _activation(name: str) -> nn.Module:
    if name not in NONLINEARITIES:
        raise UserError(f"adapter nonlinearity '{name}' is not one of {', '.join(NONLINEARITIES)}")
    return {"gelu": nn.GELU, "relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU}[name]()


def adapter_sites(model: nn.Module) -> list[str]:
    """Full names of the modules that get an adapter (two per block, in block order)."""
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ADAPTER_SITES:
        raise UserError(f"Houlsby adapters: model type '{model_type}' is not supported "
                        f"(supported: {', '.join(sorted(ADAPTER_SITES))})")
    patterns = [re.compile(p) for p in ADAPTER_SITES[model_type]]
    sites = [n for n, _ in model.named_modules() if any(p.search(n) for p in patterns)]
    n_blocks = model.config.num_hidden_layers
    if len(sites) != 2 * n_blocks:
        raise RuntimeError(f"Houlsby adapters: found {len(sites)} insertion points in a {model_type} model "
                           f"with {n_blocks} blocks (expected {2 * n_blocks}); the model's module layout "
                           f"differs from {ADAPTER_SITES[model_type]}")
    return sites


def adapter_parameter_count(hidden_size: int, bottleneck: int, n_adapters: int) -> int:
    """n_adapters * (2 d m + d + m): the weights and biases of W_down and W_up."""
    return n_adapters * (2 * hidden_size * bottleneck + hidden_size + bottleneck)


class HoulsbyAdapter(Method):
    name = "adapter"

    def __init__(
        self,
        name: str = AdapterConfig.name,
        lr: float = AdapterConfig.lr,
        bottleneck: int = AdapterConfig.bottleneck,
        nonlinearity: str = AdapterConfig.nonlinearity,
        train_layer_norms: bool = AdapterConfig.train_layer_norms,
    ) -> None:
        _activation(nonlinearity)  # fail at construction, before any model loads
        check_fields(AdapterConfig(name=name, lr=lr, bottleneck=bottleneck, nonlinearity=nonlinearity,
                                   train_layer_norms=train_layer_norms), "method.")  # its fields' rules
        self.name = name
        self.lr = lr
        self.bottleneck = bottleneck
        self.nonlinearity = nonlinearity
        self.train_layer_norms = train_layer_norms

    def prepare(self, model: nn.Module, target_modules: list[str], head_modules: list[str]) -> nn.Module:
        """Freeze the backbone, insert the adapters, unfreeze adapters, head (and LayerNorms).

        ``target_modules`` (the q/v projections LoRA-style methods adapt) does not apply: the
        adapters' places are fixed by the architecture (:data:`ADAPTER_SITES`).
        """
        sites = adapter_sites(model)
        heads = check_target_modules(model, list(head_modules))
        hidden_size = model.config.hidden_size
        ref = next(model.parameters())
        replace_layers(model, sites, lambda site: WithAdapter(
            site, Adapter(hidden_size, self.bottleneck, self.nonlinearity).to(ref.device, ref.dtype)), heads)
        if self.train_layer_norms:
            for module in model.modules():
                if isinstance(module, nn.LayerNorm):
                    module.requires_grad_(True)
        return model

    def adapter_parameter_count(self, model: nn.Module) -> int:
        """Parameters in the inserted adapters alone (no head, no LayerNorms)."""
        return sum(p.numel() for m in model.modules() if isinstance(m, Adapter) for p in m.parameters())
