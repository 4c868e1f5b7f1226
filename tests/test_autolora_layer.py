"""Gates, thresholds and the selection LoRA layer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from autolora_exp.errors import UserError
from autolora_exp.methods.autolora import (
    SelectionLoRALinear,
    apply_gate,
    inject_selection_lora,
    selection_layers,
    selection_parameters,
    threshold_ranks,
    weight_parameters,
)

from autolora_exp.methods.autolora.gates import threshold
from autolora_tiny import tiny_roberta


# ---------------------------------------------------------------- gates and thresholds


def test_gates_compute_the_papers_alpha():
    beta = torch.tensor([0.0, 1.0, -2.0, 0.5])
    assert torch.allclose(apply_gate(beta, "softmax"), torch.exp(beta) / torch.exp(beta).sum())
    assert torch.equal(apply_gate(beta, "none"), beta)
    assert torch.allclose(apply_gate(beta, "sigmoid"), 1 / (1 + torch.exp(-beta)))


def test_unknown_gate_names_the_accepted_ones():
    with pytest.raises(UserError, match="softmax, none, sigmoid"):
        apply_gate(torch.zeros(3), "relu")
    with pytest.raises(UserError, match="accepted"):
        threshold([0.5, 0.5], "tanh")


@pytest.mark.parametrize(
    "alpha, gate, rank",
    [
        ([0.4, 0.3, 0.2, 0.1], "softmax", 2),  # lambda = 1/4: 0.4 and 0.3 stay
        ([0.25, 0.25, 0.25, 0.25], "softmax", 4),  # uniform: all equal lambda, all stay
        ([0.97, 0.01, 0.01, 0.01], "softmax", 1),
        ([3.0, -1.0, 1.0, 1.0], "none", 3),  # lambda = mean = 1.0
        ([-1.0, -2.0, -3.0, -6.0], "none", 3),  # lambda = mean = -3, inclusive
        ([0.9, 0.6, 0.5, 0.1], "sigmoid", 3),  # lambda = 0.5, inclusive
        ([0.4, 0.3, 0.2, 0.1], "sigmoid", 0),  # sigmoid can drop a layer entirely
    ],
)
def test_threshold_counts_entries_at_or_above_lambda(alpha, gate, rank):
    assert threshold(alpha, gate) == rank
    assert threshold(torch.tensor(alpha), gate) == rank


def test_softmax_threshold_keeps_rank_at_least_one_in_every_layer():
    g = torch.Generator().manual_seed(0)
    for k in (1, 2, 3, 7, 8, 16):
        for scale in (0.0, 1e-7, 1.0, 30.0):  # uniform, float32 rounding, typical, near one-hot
            beta = torch.randn(k, generator=g) * scale
            rank = threshold(apply_gate(beta, "softmax"), "softmax")
            assert 1 <= rank <= k


def test_threshold_ranks_applies_the_gate_rule_per_layer():
    alphas = {"a.query": [0.5, 0.3, 0.1, 0.1], "a.value": [0.6, 0.7, 0.2, 0.9]}
    assert threshold_ranks(alphas, "softmax") == {"a.query": 2, "a.value": 3}
    assert threshold_ranks(alphas, "sigmoid") == {"a.query": 1, "a.value": 3}


# ---------------------------------------------------------------- the layer


def test_layer_computes_base_plus_scaled_weighted_rank_one_terms():
    torch.manual_seed(0)
    base = nn.Linear(6, 5)
    layer = SelectionLoRALinear(base, k=3, gate="softmax", lora_alpha=12.0)
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.selection_logits.copy_(torch.tensor([0.3, -1.0, 2.0]))
    x = torch.randn(2, 4, 6)
    alpha = torch.softmax(layer.selection_logits, -1)
    # Delta = sum_j alpha_j u_j v_j^T
    delta = sum(alpha[j] * torch.outer(layer.lora_B[:, j], layer.lora_A[j]) for j in range(3))
    expected = base(x) + (12.0 / 3) * x @ delta.T
    assert torch.allclose(layer(x), expected, atol=1e-5)


def test_layer_init_is_loras_and_the_gates_default():
    base = nn.Linear(8, 4)
    soft = SelectionLoRALinear(base, k=4, gate="softmax")
    assert torch.count_nonzero(soft.lora_B) == 0  # Delta = 0 at start
    assert soft.lora_A.abs().max() <= 1 / math.sqrt(8) + 1e-6  # kaiming_uniform(a=sqrt 5) bound
    assert torch.allclose(soft.alpha(), torch.full((4,), 0.25))
    assert torch.allclose(SelectionLoRALinear(base, k=4, gate="sigmoid").alpha(), torch.full((4,), 0.5))
    assert torch.allclose(SelectionLoRALinear(base, k=4, gate="none").alpha(), torch.full((4,), 0.25))
    assert torch.allclose(SelectionLoRALinear(base, k=4, selection_init=1.5).selection_logits, torch.full((4,), 1.5))
    with pytest.raises(UserError, match="no gradient"):
        SelectionLoRALinear(base, k=4, gate="none", selection_init=0.0)


def test_inject_replaces_targets_and_freezes_everything_else():
    model = tiny_roberta(layers=2)
    layers = inject_selection_lora(model, ["query", "value"], k=4, trainable_extra=["classifier"])
    assert list(layers) == [
        f"roberta.encoder.layer.{i}.attention.self.{p}" for i in range(2) for p in ("query", "value")
    ]
    assert list(selection_layers(model)) == list(layers)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {f"{n}.{p}" for n in layers for p in ("lora_A", "lora_B", "selection_logits")}
    expected |= {n for n, _ in model.named_parameters() if n.startswith("classifier.")}
    assert trainable == expected
    betas = selection_parameters(model)
    weights = weight_parameters(model)
    assert len(betas) == 4 and all(b.shape == (4,) for b in betas)
    assert {id(p) for p in betas}.isdisjoint(id(p) for p in weights)
    assert len(weights) == 8 + len(list(model.classifier.parameters()))
    # the key projection is untouched
    assert isinstance(model.roberta.encoder.layer[0].attention.self.key, nn.Linear)


def test_inject_rejects_unknown_targets_listing_linear_names():
    model = tiny_roberta(layers=1)
    with pytest.raises(UserError, match=r"q_proj.*linear modules are named: .*query.*value"):
        inject_selection_lora(model, ["q_proj"], k=2)
    with pytest.raises(UserError, match="trainable_extra 'head'"):
        inject_selection_lora(tiny_roberta(layers=1), ["query"], k=2, trainable_extra=["head"])
    with pytest.raises(UserError, match="not nn.Linear"):
        inject_selection_lora(tiny_roberta(layers=1), ["attention.self"], k=2)
