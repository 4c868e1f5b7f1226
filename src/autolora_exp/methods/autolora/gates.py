"""Selection variables: the gate alpha = gate(beta) and the start value of beta.

AutoLoRA (Zhang et al., NAACL 2024) writes a LoRA update of rank k as a weighted sum of k
rank-1 matrices, Delta = sum_j alpha_j u_j v_j^T, and learns alpha from unconstrained
selection logits beta (one vector of length k per layer):

    softmax  alpha = softmax(beta)          the paper; alpha sums to 1 per layer
    none     alpha = beta                   ablation "w/o constraint" (section 5.5)
    sigmoid  alpha_j = sigmoid(beta_j)      ablation "sigmoid" (section 5.5)

After the search, :mod:`~autolora_exp.methods.autolora.threshold` turns beta into ranks: the
one place of the beta -> rank rules and their formulas (a setting of its own; by default the
gate's, ``threshold.GATE_THRESHOLD``). No rule is written here.
"""

from __future__ import annotations

import torch

from autolora_exp.errors import UserError

GATES = ("softmax", "none", "sigmoid")


def check_gate(gate: str) -> str:
    """Return ``gate`` if it is a known gate, else raise a one-line UserError."""
    if gate not in GATES:
        raise UserError(f"unknown selection gate {gate!r}; accepted: {', '.join(GATES)}")
    return gate


def apply_gate(beta: torch.Tensor, gate: str) -> torch.Tensor:
    """alpha = gate(beta) over the last dimension (the k rank-1 terms of one layer)."""
    check_gate(gate)
    if gate == "softmax":
        return torch.softmax(beta, dim=-1)
    if gate == "sigmoid":
        return torch.sigmoid(beta)
    return beta


def default_selection_init(gate: str, k: int) -> float:
    """The initial value of every beta_j when none is given.

    - softmax: 0 -> alpha_j = 1/k, every rank-1 term weighted equally (the paper's start).
    - sigmoid: 0 -> alpha_j = 0.5, every term sits at the threshold; the search decides.
    - none:    1/k -> alpha_j = 1/k, the same starting update as softmax. Zero is not an
      option here: with alpha = 0 and B = 0 (LoRA's init) the gradients of A, B and beta
      are all zero and nothing ever trains.
    """
    check_gate(gate)
    return 1.0 / k if gate == "none" else 0.0


def check_selection_init(gate: str, init: float) -> float:
    """Reject an init that can never train (gate 'none' with beta = 0, see above)."""
    check_gate(gate)
    if gate == "none" and init == 0.0:
        raise UserError(
            "selection_init=0.0 with gate 'none' gives alpha=0 and, with B=0, no gradient ever "
            "reaches the LoRA factors or beta; use a non-zero value (default 1/k)"
        )
    return float(init)
