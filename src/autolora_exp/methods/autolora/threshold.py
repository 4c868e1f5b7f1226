"""Thresholding: from the searched alpha of every layer to its rank.

    rank_l = #{j : alpha_l^j >= lambda},  lambda = 1/k (softmax), mean(alpha_l) (none), 0.5 (sigmoid)

(see :func:`~autolora_exp.methods.autolora.gates.threshold` for the per-gate rule and why the
softmax and 'none' gates always keep at least rank 1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from autolora_exp.methods.autolora.gates import check_gate, threshold


def threshold_ranks(alphas_by_layer: Mapping[str, Sequence[float]], gate: str) -> dict[str, int]:
    """{layer name: rank} in the input's order; rank 0 (sigmoid only) means 'no LoRA here'."""
    check_gate(gate)
    return {name: threshold(alpha, gate) for name, alpha in alphas_by_layer.items()}
