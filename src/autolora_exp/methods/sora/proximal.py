"""SoRA's proximal step on the gates: the L1 penalty handled by soft thresholding.

Proximal gradient for min_g L(g) + xi ||g||_1: after the optimiser's update of g, each entry is
shrunk towards zero by the threshold xi and set to exactly zero when it is within xi of it,

    T_xi(g) = sign(g) * max(|g| - xi, 0)                                    (``soft``)

so gates reach exactly zero and the layer's rank ||g||_0 falls during training. The paper
writes the step as g <- T_{eta_t xi}(g - eta_t grad_g L) (SGD with step eta_t); the authors'
code applies a threshold ``sparse_lambda_2`` (xi) after an AdamW step of g, not multiplied by
the learning rate (TsinghuaC3I/SoRA src/sparse_optimizer.py:116-119), and the value of xi in
their GLUE script (3e-4, scripts/run_glue_sora_no_schedule.sh:9) is a per-step threshold in
that sense. Here xi is that per-step threshold by default; ``method.xi_times_lr=true`` makes it
eta_t xi, the paper's form (the method passes the product as ``xi``).

The authors' three in-place masks are not T_xi exactly (``authors``)::

    g[g >  xi] -= xi;   g[g < -xi] += xi;   g[|g| < xi] = 0

the third mask sees the already shrunk values, so an entry with xi < |g| < 2 xi is shrunk and
then zeroed: it is T_xi except that |g| in (xi, 2 xi) goes to 0 instead of |g| - xi (and
|g| == xi exactly is left as it is).
"""

from __future__ import annotations

import torch

#: ``soft``: T_xi exactly (the proximal operator of xi ||.||_1); ``authors``: the authors' masks
PROXIMAL_RULES = ("soft", "authors")


def soft_threshold(g: torch.Tensor, xi: float) -> torch.Tensor:
    """T_xi(g) = sign(g) * max(|g| - xi, 0), element-wise (a new tensor)."""
    return torch.sign(g) * torch.clamp(g.abs() - xi, min=0)


def authors_threshold(g: torch.Tensor, xi: float) -> torch.Tensor:
    """The authors' SparseAdamW thresholding (src/sparse_optimizer.py:116-119), on a copy of ``g``."""
    out = g.clone()
    out[out > xi] -= xi
    out[out < -xi] += xi
    out[out.abs() < xi] = 0.0
    return out


def proximal_step(gates: list[torch.Tensor], xi: float, rule: str = "soft") -> None:
    """Apply the thresholding ``rule`` with threshold ``xi`` to every gate tensor, in place."""
    if xi == 0:
        return
    threshold = {"soft": soft_threshold, "authors": authors_threshold}[rule]
    with torch.no_grad():
        for g in gates:
            g.copy_(threshold(g, xi))
