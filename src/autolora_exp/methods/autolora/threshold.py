"""Thresholding: from the searched selection logits beta of every layer to its rank.

A rule (``search.threshold``) maps one layer's beta (k values) to values x_j and a cut lambda;
the layer keeps rank = #{j : x_j >= lambda}:

    softmax  x = softmax(beta),    lambda = 1/k      the paper (sec. 3): alpha_j >= 1/k
    linear   x = beta / sum(beta), lambda = 1/k      the authors' GLUE code, on raw beta
                                                     (ruz048/AutoLoRA run_glue_search.py:98-99)
    mean     x = beta,             lambda = mean(beta)   ablation "w/o constraint" (alpha = beta)
    sigmoid  x = sigmoid(beta),    lambda = 0.5          ablation "sigmoid"; rank 0 is possible

A floor ``min_rank`` (``search.min_rank``, default 0: none) then gives

    rank = max(min_rank, #{j : x_j >= lambda})

The rule is a key of its own, independent of the gate that weights the rank-1 terms in the
search: the authors' GLUE search gates with softmax (their loralib/layers.py:149) and
thresholds linearly. ``None`` picks the gate's own rule (:data:`GATE_THRESHOLD`).

How the rules relate: for sum(beta) > 0 the linear rule keeps exactly the mean rule's terms
(beta_j / S >= 1/k  <=>  beta_j >= S/k); for sum(beta) < 0 it inverts (keeps the lowest). The
softmax rule keeps beta_j >= log(mean_j exp(beta_j)) >= mean(beta) (Jensen), so it never keeps
more than the mean rule: for beta = [3,1,1,1,1,1,0,0] softmax keeps 1 term, linear and mean 6.
Which rules can give rank 0 (the layer then gets no LoRA in the retrain): only sigmoid.
softmax: max_j alpha_j >= mean_j alpha_j = 1/k; mean: max_j beta_j >= mean(beta); linear: for
sum > 0 as mean, for sum < 0 it keeps min_j beta_j <= mean(beta). So with the paper's gate the
search cannot drop a layer; with the sigmoid gate (``method=autolora_sigmoid``) it can, and
``min_rank=1`` keeps LoRA on every layer there.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from autolora_exp.errors import UserError
from autolora_exp.methods.autolora.gates import check_gate, default_selection_init

THRESHOLDS = ("softmax", "linear", "mean", "sigmoid")

#: the rule each gate's paper setting uses (``search.threshold: null``)
GATE_THRESHOLD = {"softmax": "softmax", "none": "mean", "sigmoid": "sigmoid"}

#: Relative slack on lambda. beta comes from float32 arithmetic: softmax(0, ..., 0) may round
#: each entry a hair below 1/k, and without slack a uniform layer would drop to rank 0.
THRESHOLD_RTOL = 1e-6


def check_threshold(rule: str) -> str:
    """Return ``rule`` if it is a known threshold rule, else raise a one-line UserError."""
    if rule not in THRESHOLDS:
        raise UserError(f"unknown threshold {rule!r}; accepted: {', '.join(THRESHOLDS)} (or null: the gate's rule)")
    return rule


def resolve_threshold(rule: str | None, gate: str, k: int, selection_init: float | None) -> str:
    """The rule a search with this gate and beta init uses; combinations that make no sense are
    UserErrors:

    - ``sigmoid`` with the ``softmax`` gate: softmax(beta) does not change when every beta_j
      moves by the same amount, so the cut beta_j >= 0 measures where beta started, not what
      the search learned.
    - ``linear`` with beta starting at 0: beta / sum(beta) is 0/0 at the start.
    """
    check_gate(gate)
    if rule is None:
        return GATE_THRESHOLD[gate]
    check_threshold(rule)
    if rule == "sigmoid" and gate == "softmax":
        raise UserError("threshold 'sigmoid' (beta_j >= 0) makes no sense with gate 'softmax', which ignores a "
                        "common shift of beta; use threshold softmax, mean or linear")
    init = default_selection_init(gate, k) if selection_init is None else selection_init
    if rule == "linear" and init == 0.0:
        raise UserError(f"threshold 'linear' (beta / sum(beta)) needs beta to start away from 0 (gate {gate!r} "
                        "starts at 0): set selection_init, e.g. 1.0 as the authors' GLUE search")
    return rule


def rule_values(beta: Sequence[float] | torch.Tensor, rule: str) -> tuple[list[float], float]:
    """(x, lambda) of one layer for ``rule`` (see the module docstring), in float64."""
    check_threshold(rule)
    b = _as_floats(beta)
    k = len(b)
    if rule == "softmax":
        top = max(b)
        e = [math.exp(x - top) for x in b]
        return [x / sum(e) for x in e], 1.0 / k
    if rule == "linear":
        total = sum(b)
        if total == 0:
            raise UserError("threshold 'linear' is undefined for a layer whose beta sums to 0 "
                            f"(beta = {[round(x, 6) for x in b]}); use threshold mean or softmax")
        return [x / total for x in b], 1.0 / k
    if rule == "mean":
        return b, sum(b) / k
    return [1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x)) for x in b], 0.5


def threshold(beta: Sequence[float] | torch.Tensor, rule: str, min_rank: int = 0) -> int:
    """rank = max(min_rank, #{j : x_j >= lambda}) for one layer's beta under ``rule``."""
    values, lam = rule_values(beta, rule)
    # slack proportional to |lambda| so a value equal to lambda up to float32 rounding counts
    cut = lam - THRESHOLD_RTOL * max(abs(lam), 1e-12)
    return max(min_rank, sum(1 for x in values if x >= cut))


def threshold_ranks(betas_by_layer: Mapping[str, Sequence[float]], rule: str, min_rank: int = 0) -> dict[str, int]:
    """{layer name: rank} in the input's order; rank 0 (sigmoid only, ``min_rank`` 0) means 'no LoRA here'."""
    check_threshold(rule)
    return {name: threshold(beta, rule, min_rank) for name, beta in betas_by_layer.items()}


def _as_floats(beta: Sequence[float] | torch.Tensor) -> list[float]:
    if isinstance(beta, torch.Tensor):
        values = beta.detach().double().flatten().tolist()
    else:
        values = [float(b) for b in beta]
    if not values:
        raise UserError("cannot threshold an empty beta vector; k must be >= 1")
    return values
