"""GPT-2's fused q/k/v projection: splitting it, LoRA on the q and v slices with their own ranks
(checked against LoRA computed inside the fused projection), and AutoLoRA's separate selection
variables for q and v."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import GPT2Config, GPT2LMHeadModel
from transformers.pytorch_utils import Conv1D

from autolora_exp.errors import UserError
from autolora_exp.fused_qkv import SplitQKV, slice_targets, split_fused_qkv
from autolora_exp.methods.autolora.layer import SelectionLoRALinear, inject_selection_lora, selection_layers
from autolora_exp.methods.lora import LoRA
from autolora_exp.models import count_parameters

HIDDEN, LAYERS, VOCAB = 16, 2, 50
QV = ["c_attn.q", "c_attn.v"]


def tiny_gpt2(seed: int = 0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=2, n_positions=32,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    return GPT2LMHeadModel(cfg).eval()


def batch() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"input_ids": torch.randint(0, VOCAB, (3, 7), generator=g), "attention_mask": torch.ones(3, 7, dtype=torch.long)}


def test_split_computes_the_fused_projection():
    conv = Conv1D(3 * HIDDEN, HIDDEN)
    nn.init.normal_(conv.weight)
    nn.init.normal_(conv.bias)
    split = SplitQKV(conv)
    x = torch.randn(4, 5, HIDDEN)
    torch.testing.assert_close(split(x), conv(x), rtol=1e-5, atol=1e-5)
    # each child is exactly its slice: q(x) = x W[:, :d] + b[:d], v(x) = x W[:, 2d:] + b[2d:]
    torch.testing.assert_close(split.q(x), x @ conv.weight[:, :HIDDEN] + conv.bias[:HIDDEN])
    torch.testing.assert_close(split.v(x), x @ conv.weight[:, 2 * HIDDEN:] + conv.bias[2 * HIDDEN:])


def test_split_model_keeps_outputs_and_parameter_count():
    fused, model = tiny_gpt2(), tiny_gpt2()
    total = count_parameters(model)["total"]
    split = split_fused_qkv(model, QV)
    assert split == [f"transformer.h.{i}.attn.c_attn" for i in range(LAYERS)]
    assert all(isinstance(model.get_submodule(n), SplitQKV) for n in split)
    assert count_parameters(model)["total"] == total
    with torch.no_grad():
        torch.testing.assert_close(model(**batch()).logits, fused(**batch()).logits, rtol=1e-5, atol=1e-5)
    # idempotent: the q/k/v modules now exist, a second call splits nothing
    assert split_fused_qkv(model, QV) == []


def test_targets_without_slices_leave_the_model_alone():
    model = tiny_gpt2()
    assert slice_targets(["c_attn", "query", "attention.attn.q"]) == {"attention.attn": ["q"]}
    assert split_fused_qkv(model, ["c_attn"]) == [] and isinstance(model.transformer.h[0].attn.c_attn, Conv1D)
    assert split_fused_qkv(model, ["nothing_here.q"]) == []  # unknown: check_target_modules reports it
    with pytest.raises(UserError, match="not a fused q/k/v Conv1D"):
        split_fused_qkv(model, ["c_proj.q"])  # c_proj is a Conv1D but d -> d, not q | k | v


def fused_lora_reference(model: GPT2LMHeadModel, adapters: dict[tuple[int, str], tuple]) -> GPT2LMHeadModel:
    """LoRA inside the fused projection, as microsoft/LoRA's MergedLinear computes it: the fused
    output [q | k | v] plus s_q B_q A_q x in the q columns and s_v B_v A_v x in the v columns."""
    d = HIDDEN
    columns = {"q": slice(0, d), "k": slice(d, 2 * d), "v": slice(2 * d, 3 * d)}
    for i, block in enumerate(model.transformer.h):
        def hook(module, inputs, output, i=i):
            x, out = inputs[0], output.clone()
            for part, cols in columns.items():
                if (i, part) in adapters:
                    a, b, scale = adapters[(i, part)]
                    out[..., cols] += scale * (x @ a.T @ b.T)
            return out
        block.attn.c_attn.register_forward_hook(hook)
    return model


def test_lora_on_split_slices_equals_lora_inside_the_fused_projection():
    ranks = {f"transformer.h.{i}.attn.c_attn.{p}": r for i, (rq, rv) in enumerate([(2, 3), (1, 4)])
             for p, r in (("q", rq), ("v", rv))}
    model = tiny_gpt2()
    split_fused_qkv(model, QV)
    method = LoRA(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=list(ranks),
                  rank_pattern={k.replace(".", r"\."): r for k, r in ranks.items()})
    peft_model = method.prepare(model, QV, head_modules=[])
    assert method.ranks(peft_model) == ranks
    adapters = {}
    g = torch.Generator().manual_seed(3)
    for name, module in peft_model.named_modules():
        if hasattr(module, "lora_B") and "default" in getattr(module, "lora_B", {}):
            with torch.no_grad():  # B = 0 at init: give it values so the update is not zero
                module.lora_B["default"].weight.copy_(torch.randn(module.lora_B["default"].weight.shape, generator=g))
            i, part = int(name.split(".h.")[1].split(".")[0]), name.rsplit(".", 1)[-1]
            adapters[(i, part)] = (module.lora_A["default"].weight.detach(), module.lora_B["default"].weight.detach(),
                                   module.scaling["default"])
    assert {k: v[0].shape[0] for k, v in adapters.items()} == {(0, "q"): 2, (0, "v"): 3, (1, "q"): 1, (1, "v"): 4}
    assert adapters[(0, "q")][2] == 16 / 2  # peft's per-layer scaling lora_alpha / r
    reference = fused_lora_reference(tiny_gpt2(), adapters)
    peft_model.eval()
    with torch.no_grad():
        out, ref = peft_model(**batch()).logits, reference(**batch()).logits
        base = tiny_gpt2()(**batch()).logits
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(out, base, atol=1e-3)  # the update is really on the forward path
    # only the q and v LoRA factors train; k and the frozen base get no LoRA at all
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and (".c_attn.q." in n or ".c_attn.v." in n) for n in trainable)


def test_autolora_selection_units_on_q_and_v_slices_are_separate():
    model = tiny_gpt2()
    split_fused_qkv(model, QV)
    layers = inject_selection_lora(model, QV, k=4, lora_alpha=8)
    assert list(layers) == [f"transformer.h.{i}.attn.c_attn.{p}" for i in range(LAYERS) for p in ("q", "v")]
    assert all(isinstance(m, SelectionLoRALinear) for m in layers.values())
    assert set(selection_layers(model)) == set(layers)
    q, v = layers["transformer.h.0.attn.c_attn.q"], layers["transformer.h.0.attn.c_attn.v"]
    assert q.selection_logits is not v.selection_logits
    with torch.no_grad():
        for layer in (q, v):
            layer.lora_B.normal_()
    captured = {}
    fused = model.transformer.h[0].attn.c_attn
    fused.register_forward_hook(lambda m, i, o: captured.__setitem__("out", o.detach().clone()))
    x = batch()
    with torch.no_grad():
        model(**x)
        before = captured["out"]
        q.selection_logits.copy_(torch.tensor([3.0, 0.0, 0.0, 0.0]))  # move q's alpha only
        model(**x)
        after = captured["out"]
    d = HIDDEN
    assert not torch.allclose(before[..., :d], after[..., :d])            # q columns changed
    torch.testing.assert_close(before[..., d:], after[..., d:])           # k and v columns did not
    # the gradient of v's selection variables comes only through the v columns
    model.zero_grad()
    model(**x, labels=x["input_ids"]).loss.backward()
    assert q.selection_logits.grad is not None and v.selection_logits.grad is not None
    assert not torch.equal(q.selection_logits.grad, v.selection_logits.grad)
