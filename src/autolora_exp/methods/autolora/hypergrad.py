"""The hypergradient of the validation loss with respect to the selection logits beta.

W are the inner variables (LoRA factors and the task head), beta the selection logits. The
search replaces argmin_W L_tr(W, beta) by a one-step look-ahead (paper, eq. 4)

    W_hat(beta) = W - eta * grad_W L_tr(W, beta)

and differentiates the validation loss through it (eq. 5). With v = grad_W L_val(W_hat, beta):

    dL_val/dbeta = dL_val/dbeta (W_hat, beta)  -  eta * (d^2 L_tr / dbeta dW)(W, beta) . v
                   `----- direct term -----'       `------------ mixed term ------------'

Estimators (``mode``):

- ``darts``: the mixed term by a finite difference along v (Liu et al., DARTS, 2019), eps = fd_eps / ||v||.
  By default one-sided: the look-ahead pass returns grad_beta L_tr(W) with grad_W (one backward
  sweep), and
      (d^2 L_tr / dbeta dW) . v  ~  (grad_beta L_tr(W + eps v) - grad_beta L_tr(W)) / eps
  costs one more pass: 3 in the hypergradient (look-ahead, validation, W + eps v), 4 per search
  iteration with the inner step. ``finite_difference="central"`` is DARTS' two-sided difference
      (d^2 L_tr / dbeta dW) . v  ~  (grad_beta L_tr(W + eps v) - grad_beta L_tr(W - eps v)) / (2 eps),
  4 passes here (5 per iteration). No double backward either way. Truncation error relative to
  the mixed term: O(fd_eps) one-sided, O(fd_eps^2) central; tests bound both against ``exact``.
- ``exact``: autograd through the look-ahead (``create_graph=True``, ``torch.func.functional_call``
  on W_hat). Needs double backward, hence eager attention.
- ``first_order``: eta = 0, W_hat = W, only the direct term dL_val/dbeta (W, beta); 1 pass.

Dropout in the perturbed passes: by default they replay the look-ahead pass's random state, so
the difference measures the change of W, not two different dropout masks (``replay_dropout``).
The authors' code (Betty's darts, betty/hypergradient/darts.py:39,51) draws fresh masks in each
pass; ``replay_dropout=False`` does the same.

Look-ahead variants: ``sgd`` (the paper's eq. 4, above) and ``betty`` (what the authors' code
does with the Betty library): the look-ahead is the real optimiser step W' = step(W), the
central difference is taken around W', there is no eta factor,

    dL_val/dbeta ~ dL_val/dbeta (W', beta) - (grad_beta L_tr(W' + eps v) - grad_beta L_tr(W' - eps v)) / (2 eps),

and the weights and optimiser state are rolled back afterwards so the inner step can be redone
with the new beta (4 passes here, 5 per iteration with the redone step).

Precision (``train.precision``): the loss function the search hands in runs its forwards under
autocast (bf16); the passes whose grad_beta enters a finite difference run in fp32 inside
:func:`~autolora_exp.precision.full_precision`: both perturbed passes of ``mixed_term_fd`` and,
with the one-sided difference, the look-ahead pass that supplies its centre grad_beta L_tr(W).
Under bf16 autocast the perturbation eps * v (||eps v|| = fd_eps = 0.01 over all trainable
weights) is below bf16's resolution of the weights and would round away, leaving rounding noise
divided by eps. So darts under bf16 runs 2 of its 4 passes in fp32 (central: 2 of 5); ``exact``
and ``first_order`` run every pass under autocast.

Cost is counted in passes: one pass is a forward of the loss plus one backward sweep. The
exact mode's backward through the look-ahead's own backward graph counts as one more pass.
Every estimator leaves W exactly as it found it (perturbations are undone by copying back saved
tensors of the trainable weights only — no state-dict copy), except ``darts_betty``, whose
look-ahead is the real step and which hands back a ``rollback``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from autolora_exp.errors import UserError
from autolora_exp.precision import full_precision

HYPERGRAD_MODES = ("darts", "exact", "first_order")
LOOKAHEADS = ("sgd", "betty")
FINITE_DIFFERENCES = ("central", "forward")

LossFn = Callable[[nn.Module, Any], torch.Tensor]


@dataclass
class PassCounter:
    """Forward+backward passes spent in one search iteration."""

    passes: int = 0


@dataclass
class Hypergradient:
    #: dL_val/dbeta, one tensor per selection-logit parameter
    selection_grads: list[torch.Tensor]
    #: grad_W L_tr(W, beta_old) at the pre-step weights (sgd look-ahead), reusable for the inner step
    lookahead_grads: list[torch.Tensor] | None = None
    #: betty: restores W and the optimiser state to before the look-ahead step
    rollback: Callable[[], None] | None = None
    #: darts: the two terms, as they enter: selection_grads = direct - second_order
    #: (second_order = eta * mixed with the sgd look-ahead, the mixed term itself with betty)
    direct: list[torch.Tensor] | None = None
    second_order: list[torch.Tensor] | None = None


class RngState:
    """The CPU and accelerator generator states, so several passes see the same dropout masks.

    The finite difference subtracts two gradients that differ by O(eps); with independent
    dropout masks the difference would be mask noise divided by eps. The look-ahead and both
    perturbed passes therefore replay one random state.
    """

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.cpu = torch.get_rng_state()
        self.accel = torch.cuda.get_rng_state(device) if device.type == "cuda" else None

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.accel is not None:
            torch.cuda.set_rng_state(self.accel, self.device)


def _grads(loss: torch.Tensor, params: list[torch.Tensor], **kwargs: Any) -> list[torch.Tensor]:
    """torch.autograd.grad w.r.t. ``params`` only, unused parameters getting zeros."""
    grads = torch.autograd.grad(loss, params, allow_unused=True, **kwargs)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]


def _loss(model: nn.Module, loss_fn: LossFn, batch: Any, counter: PassCounter) -> torch.Tensor:
    """One forward of the loss. Its finiteness is not checked here (a host sync per pass): a NaN
    reaches W or beta, which the search checks in one fused test (``search._nonfinite``)."""
    counter.passes += 1
    return loss_fn(model, batch)


def weight_grads(
    model: nn.Module, loss_fn: LossFn, batch: Any, weights: list[nn.Parameter], counter: PassCounter
) -> list[torch.Tensor]:
    """grad_W L(W, beta) on one batch (one pass; no gradient for beta is computed)."""
    return _grads(_loss(model, loss_fn, batch, counter), weights)


def selection_grads(
    model: nn.Module, loss_fn: LossFn, batch: Any, selection: list[nn.Parameter], counter: PassCounter
) -> list[torch.Tensor]:
    """grad_beta L(W, beta) on one batch (one pass; no weight gradient is computed)."""
    return _grads(_loss(model, loss_fn, batch, counter), selection)


def val_gradients(
    model: nn.Module,
    loss_fn: LossFn,
    val_batch: Any,
    weights: list[nn.Parameter],
    selection: list[nn.Parameter],
    counter: PassCounter,
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """At the current W (= W_hat): the direct term dL_val/dbeta and v = grad_W L_val (one pass)."""
    grads = _grads(_loss(model, loss_fn, val_batch, counter), list(selection) + list(weights))
    return grads[: len(selection)], grads[len(selection) :]


def _norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """||v|| over a list of tensors (per-tensor norms in one fused call, combined in float64)."""
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(tensors)).double())


@torch.no_grad()
def _set(params: list[nn.Parameter], values: list[torch.Tensor]) -> None:
    for p, x in zip(params, values):
        p.copy_(x)


def mixed_term_fd(
    model: nn.Module,
    loss_fn: LossFn,
    tr_batch: Any,
    weights: list[nn.Parameter],
    selection: list[nn.Parameter],
    v: list[torch.Tensor],
    fd_eps: float,
    counter: PassCounter,
    rng: RngState | None = None,
    g_centre: list[torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """(d^2 L_tr / dbeta dW)(W, beta) . v by a finite difference around the current W.

        central (2 passes):  mixed ~ (grad_beta L_tr(W + eps v) - grad_beta L_tr(W - eps v)) / (2 eps)
        forward (1 pass):    mixed ~ (grad_beta L_tr(W + eps v) - g_centre) / eps,  g_centre = grad_beta L_tr(W)
        eps = fd_eps / ||v||

    The forward difference is taken when ``g_centre`` (computed by the caller at W, on the same
    batch and dropout masks) is given. W is perturbed in place and restored bit-for-bit from a
    copy of the trainable weights. ``rng`` (the state the look-ahead pass started from) is
    replayed before every pass so all training passes see the same dropout masks; the caller's
    random stream is untouched.
    """
    # eps stays a device tensor (no host sync); v = 0 gives eps = fd_eps / tiny, W + eps v = W
    # and a zero mixed term
    eps = fd_eps / _norm(v).clamp_min(1e-30)
    after = RngState(rng.device) if rng is not None else None
    centre = [w.detach().clone() for w in weights]

    def grad_at(sign: float) -> list[torch.Tensor]:
        _set(weights, centre)
        with torch.no_grad():
            torch._foreach_add_(weights, torch._foreach_mul(v, (sign * eps).to(v[0].dtype)))
        if rng is not None:
            rng.restore()
        with full_precision():
            return selection_grads(model, loss_fn, tr_batch, selection, counter)

    try:
        g_plus = grad_at(1.0)
        if g_centre is not None:
            return [(gp - gc) / eps for gp, gc in zip(g_plus, g_centre)]
        g_minus = grad_at(-1.0)
    finally:
        _set(weights, centre)
        if after is not None:
            after.restore()
    return [(gp - gm) / (2 * eps) for gp, gm in zip(g_plus, g_minus)]


def first_order(
    model: nn.Module,
    loss_fn: LossFn,
    val_batch: Any,
    selection: list[nn.Parameter],
    counter: PassCounter,
) -> Hypergradient:
    """eta = 0: dL_val/dbeta = dL_val/dbeta (W, beta), the direct term only (1 pass)."""
    return Hypergradient(selection_grads(model, loss_fn, val_batch, selection, counter))


def darts_sgd(
    model: nn.Module,
    loss_fn: LossFn,
    tr_batch: Any,
    val_batch: Any,
    weights: list[nn.Parameter],
    selection: list[nn.Parameter],
    eta: float,
    fd_eps: float,
    counter: PassCounter,
    finite_difference: str = "central",
    replay_dropout: bool = True,
) -> Hypergradient:
    """Paper's look-ahead (eq. 4) with a DARTS finite difference (``central``: 4 passes, ``forward``: 3).

        W_hat = W - eta * grad_W L_tr(W, beta)
        direct, v = dL_val/dbeta (W_hat, beta), grad_W L_val(W_hat, beta)
        central: dL_val/dbeta ~ direct - eta * (grad_beta L_tr(W + eps v) - grad_beta L_tr(W - eps v)) / (2 eps)
        forward: dL_val/dbeta ~ direct - eta * (grad_beta L_tr(W + eps v) - grad_beta L_tr(W)) / eps

    ``forward``: the look-ahead pass returns grad_beta L_tr(W, beta) with grad_W (one backward
    sweep, same batch and dropout masks), and the mixed term is the one-sided difference from it.
    ``replay_dropout``: the perturbed passes see the look-ahead pass's dropout masks (else fresh).
    """
    device = weights[0].device
    rng = RngState(device) if replay_dropout else None
    forward = finite_difference == "forward" and eta != 0
    g_centre = None
    if forward:
        with full_precision():  # g_centre is the centre of the finite difference: fp32 like its other end
            grads = _grads(_loss(model, loss_fn, tr_batch, counter), list(selection) + list(weights))
        g_centre, g_tr = grads[: len(selection)], grads[len(selection) :]
    else:
        g_tr = weight_grads(model, loss_fn, tr_batch, weights, counter)
    centre = [w.detach().clone() for w in weights]
    try:
        with torch.no_grad():
            torch._foreach_add_(weights, g_tr, alpha=-eta)  # W_hat
        direct, v = val_gradients(model, loss_fn, val_batch, weights, selection, counter)
    finally:
        _set(weights, centre)
    if eta == 0:
        return Hypergradient(direct, lookahead_grads=g_tr)
    mixed = mixed_term_fd(model, loss_fn, tr_batch, weights, selection, v, fd_eps, counter, rng, g_centre)
    second = [eta * m for m in mixed]
    return Hypergradient([d - m for d, m in zip(direct, second)], lookahead_grads=g_tr, direct=direct,
                         second_order=second)


class _LossCall(nn.Module):
    """``loss_fn(model, batch)`` as a module, so functional_call can substitute W_hat inside it."""

    def __init__(self, model: nn.Module, loss_fn: LossFn) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> torch.Tensor:
        return self.loss_fn(self.model, batch)


def require_eager_attention(model: nn.Module) -> None:
    """The exact mode needs double backward, which fused attention kernels lack."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    if impl is not None and impl != "eager":
        raise UserError(
            f"hypergrad='exact' needs double backward, which attention implementation {impl!r} lacks; "
            "load the model with attn_implementation='eager' or use hypergrad='darts' or 'first_order'"
        )


def exact_sgd(
    model: nn.Module,
    loss_fn: LossFn,
    tr_batch: Any,
    val_batch: Any,
    weights: list[nn.Parameter],
    selection: list[nn.Parameter],
    eta: float,
    counter: PassCounter,
) -> Hypergradient:
    """Autograd through the look-ahead (3 passes: look-ahead, validation, double backward).

        g = grad_W L_tr(W, beta)           (graph kept: g is a function of beta)
        W_hat(beta) = W - eta * g
        dL_val/dbeta = d/dbeta L_val(W_hat(beta), beta)   (total derivative, by autograd)
    """
    require_eager_attention(model)
    names = {id(p): n for n, p in model.named_parameters()}
    g = _grads(_loss(model, loss_fn, tr_batch, counter), weights, create_graph=True)
    w_hat = {"model." + names[id(w)]: w - eta * gi for w, gi in zip(weights, g)}
    l_val = torch.func.functional_call(_LossCall(model, loss_fn), w_hat, (val_batch,))
    hyper = _grads(l_val, selection)
    counter.passes += 2  # the validation pass and the backward through the look-ahead's backward
    return Hypergradient([h.detach() for h in hyper], lookahead_grads=[gi.detach() for gi in g])


def darts_betty(
    model: nn.Module,
    loss_fn: LossFn,
    tr_batch: Any,
    val_batch: Any,
    weights: list[nn.Parameter],
    selection: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    inner_step: Callable[[list[torch.Tensor]], None],
    fd_eps: float,
    counter: PassCounter,
    replay_dropout: bool = True,
) -> Hypergradient:
    """The authors' (Betty) look-ahead: the real optimiser step, central difference around its result (4 passes).

        W' = optimiser_step(W, grad_W L_tr(W, beta))
        v  = grad_W L_val(W', beta)
        dL_val/dbeta ~ dL_val/dbeta (W', beta) - (grad_beta L_tr(W' + eps v) - grad_beta L_tr(W' - eps v)) / (2 eps)

    as Betty's darts (ruz048/AutoLoRA betty/hypergradient/darts.py:29-66, reached from
    betty/problems/problem.py:555-583): no eta factor, eps = darts_alpha / ||v|| with
    darts_alpha = 0.01 (betty/configs/problem_dataclass.py:35). W is left at W'; ``rollback()``
    restores W and the optimiser state (saved copies of the trainable weights and of their
    optimiser moments, not a state dict) so that the inner step can be redone with the new
    beta, as Betty's roll_back does (problem.py:418-425). ``replay_dropout=False`` draws fresh
    dropout masks in the two perturbed passes, as Betty does.
    """
    snapshot = _OptimizerSnapshot(weights, optimizer)
    rng = RngState(weights[0].device) if replay_dropout else None
    inner_step(weight_grads(model, loss_fn, tr_batch, weights, counter))
    direct, v = val_gradients(model, loss_fn, val_batch, weights, selection, counter)
    mixed = mixed_term_fd(model, loss_fn, tr_batch, weights, selection, v, fd_eps, counter, rng)
    return Hypergradient([d - m for d, m in zip(direct, mixed)], rollback=snapshot.restore, direct=direct,
                         second_order=mixed)


class _OptimizerSnapshot:
    """Copies of the trainable weights and their optimiser state, restorable bit-for-bit."""

    def __init__(self, params: list[nn.Parameter], optimizer: torch.optim.Optimizer) -> None:
        self.params = params
        self.optimizer = optimizer
        self.values = [p.detach().clone() for p in params]
        self.state = [
            {k: (x.clone() if torch.is_tensor(x) else x) for k, x in optimizer.state.get(p, {}).items()}
            for p in params
        ]

    def restore(self) -> None:
        _set(self.params, self.values)
        for p, saved in zip(self.params, self.state):
            # an empty dict makes AdamW lazily re-initialise, exactly as before its first step
            self.optimizer.state[p] = {k: (x.clone() if torch.is_tensor(x) else x) for k, x in saved.items()}
