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

from autolora_exp.methods.autolora.threshold import resolve_threshold, threshold
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


def _logit(p):
    return [math.log(x / (1 - x)) for x in p]


@pytest.mark.parametrize(
    "beta, rule, rank",
    [
        ([math.log(x) for x in (0.4, 0.3, 0.2, 0.1)], "softmax", 2),  # softmax(beta) = those; 1/4: 0.4, 0.3 stay
        ([0.0, 0.0, 0.0, 0.0], "softmax", 4),  # uniform: all equal lambda, all stay
        ([math.log(x) for x in (0.97, 0.01, 0.01, 0.01)], "softmax", 1),
        ([3.0, -1.0, 1.0, 1.0], "mean", 3),  # lambda = mean = 1.0
        ([-1.0, -2.0, -3.0, -6.0], "mean", 3),  # lambda = mean = -3, inclusive
        (_logit([0.9, 0.6, 0.5, 0.1]), "sigmoid", 3),  # sigmoid(beta) >= 0.5, inclusive
        (_logit([0.4, 0.3, 0.2, 0.1]), "sigmoid", 0),  # sigmoid can drop a layer entirely
        ([1.0] * 8, "linear", 8),  # the authors' GLUE init: beta / sum = 1/8 everywhere
        ([3, 1, 1, 1, 1, 1, 0, 0], "linear", 6),  # beta / 8 >= 1/8: the mean rule's terms
        ([3, 1, 1, 1, 1, 1, 0, 0], "softmax", 1),  # softmax's cut log(mean(exp beta)) = 1.55 keeps fewer
        ([3, 1, 1, 1, 1, 1, 0, 0], "mean", 6),
        ([-3.0, -1.0, -1.0, -1.0], "linear", 1),  # sum < 0 inverts the rule: the lowest beta stays
    ],
)
def test_threshold_counts_entries_at_or_above_lambda(beta, rule, rank):
    assert threshold(beta, rule) == rank
    assert threshold(torch.tensor(beta), rule) == rank


def test_softmax_threshold_keeps_rank_at_least_one_in_every_layer():
    g = torch.Generator().manual_seed(0)
    for k in (1, 2, 3, 7, 8, 16):
        for scale in (0.0, 1e-7, 1.0, 30.0):  # uniform, float32 rounding, typical, near one-hot
            beta = torch.randn(k, generator=g) * scale
            assert 1 <= threshold(beta, "softmax") <= k
            assert 1 <= threshold(beta, "mean") <= k


def test_threshold_ranks_applies_the_rule_per_layer():
    betas = {"a.query": _logit([0.5, 0.3, 0.1, 0.1]), "a.value": _logit([0.6, 0.7, 0.2, 0.9])}
    assert threshold_ranks(betas, "sigmoid") == {"a.query": 1, "a.value": 3}
    assert threshold_ranks(betas, "mean") == {"a.query": 2, "a.value": 2}  # logit 0.6 < mean 0.52


def test_threshold_rule_is_its_own_key_and_nonsense_combinations_are_refused():
    # null: the gate's own rule (the paper's settings)
    assert [resolve_threshold(None, g, 8, None) for g in ("softmax", "none", "sigmoid")] == ["softmax", "mean",
                                                                                               "sigmoid"]
    # the authors' GLUE search: softmax gate, linear rule on raw beta starting at ones
    assert resolve_threshold("linear", "softmax", 8, 1.0) == "linear"
    assert resolve_threshold("linear", "none", 8, None) == "linear"  # gate none starts at 1/k
    with pytest.raises(UserError, match="softmax, linear, mean, sigmoid"):
        resolve_threshold("median", "softmax", 8, None)
    with pytest.raises(UserError, match="'sigmoid'.*gate 'softmax'"):
        resolve_threshold("sigmoid", "softmax", 8, 1.0)
    with pytest.raises(UserError, match="selection_init"):
        resolve_threshold("linear", "softmax", 8, None)  # beta starts at 0: 0/0
    with pytest.raises(UserError, match="sums to 0"):
        threshold([1.0, -1.0], "linear")


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
