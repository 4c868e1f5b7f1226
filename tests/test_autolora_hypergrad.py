"""The hypergradient estimators against brute force, on a tiny RoBERTa in float64.

Tolerances: the exact mode is autograd through the same unrolled step, so it agrees with an
independent hand-unrolled autograd to 1e-10 and with a central finite difference over every
beta coordinate to 1e-6 (float64, delta 1e-5). The DARTS estimate has truncation error
O(eps^2): with fd_eps = 0.01 it is within 1e-3 (relative) of the exact value, measured 1.5e-4
in both float64 and float32, at eta = 0.5 where the mixed term is ~80% of the hypergradient.
The one-sided (forward) difference has error O(eps): measured 1.2e-2 at eta = 0.5, bounded by
2e-2; at the paper's eta = 1e-4 (mixed term 2e-4 of the hypergradient) 2.8e-6, bounded by 1e-5.
"""

from __future__ import annotations

import copy

import pytest
import torch

from autolora_exp.errors import UserError
from autolora_exp.methods.autolora import (
    default_loss_fn,
    inject_selection_lora,
    selection_parameters,
    weight_parameters,
)
from autolora_exp.methods.autolora import hypergrad as hg

from autolora_tiny import batches, randomise_lora, tiny_roberta

ETA = 0.5


def _model(dtype=torch.float64, dropout=0.0, attn="eager"):
    model = tiny_roberta(layers=2, dropout=dropout, attn=attn)
    layers = inject_selection_lora(model, ["query", "value"], k=4, trainable_extra=["classifier"])
    randomise_lora(layers)
    return model.to(dtype).train()


def _flat(tensors):
    return torch.cat([t.flatten() for t in tensors])


def _rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def setup():
    model = _model()
    (tr,) = batches(1, seed=1)
    (val,) = batches(1, seed=2)
    return model, tr, val, weight_parameters(model), selection_parameters(model)


def _exact(model, tr, val, weights, betas, eta=ETA):
    return _flat(hg.exact_sgd(model, default_loss_fn, tr, val, weights, betas, eta, hg.PassCounter()).selection_grads)


def _unrolled_by_hand(model, tr, val, eta):
    """Brute force: on a copy, replace every weight parameter by the tensor W - eta*g (g kept in
    the graph) and backpropagate L_val to the copy's betas."""
    twin = copy.deepcopy(model)
    betas = selection_parameters(twin)
    named = [(n, p) for n, p in twin.named_parameters() if p.requires_grad and all(p is not b for b in betas)]
    loss_tr = default_loss_fn(twin, tr)
    grads = torch.autograd.grad(loss_tr, [p for _, p in named], create_graph=True)
    for (name, w), g in zip(named, grads):
        parent, _, leaf = name.rpartition(".")
        module = twin.get_submodule(parent)
        delattr(module, leaf)  # drop the Parameter ...
        setattr(module, leaf, w - eta * g)  # ... and put the look-ahead tensor in its place
    return _flat(torch.autograd.grad(default_loss_fn(twin, val), betas))


def _bilevel_objective(model, tr, val, eta):
    """h(beta) = L_val(W - eta * grad_W L_tr(W, beta), beta), evaluated without touching W."""
    weights = weight_parameters(model)
    saved = [w.detach().clone() for w in weights]
    g = torch.autograd.grad(default_loss_fn(model, tr), weights)
    with torch.no_grad():
        for w, gi in zip(weights, g):
            w.sub_(eta * gi)
        value = default_loss_fn(model, val).item()
        for w, s in zip(weights, saved):
            w.copy_(s)
    return value


def test_exact_equals_autograd_through_a_hand_unrolled_copy(setup):
    model, tr, val, weights, betas = setup
    assert _rel(_exact(model, tr, val, weights, betas), _unrolled_by_hand(model, tr, val, ETA)) < 1e-10


def test_exact_equals_finite_differences_of_the_bilevel_objective(setup):
    model, tr, val, weights, betas = setup
    exact = _exact(model, tr, val, weights, betas)
    delta, numeric = 1e-5, []
    for beta in betas:
        for j in range(beta.numel()):
            with torch.no_grad():
                beta[j] += delta
            up = _bilevel_objective(model, tr, val, ETA)
            with torch.no_grad():
                beta[j] -= 2 * delta
            down = _bilevel_objective(model, tr, val, ETA)
            with torch.no_grad():
                beta[j] += delta
            numeric.append((up - down) / (2 * delta))
    assert _rel(exact, torch.tensor(numeric, dtype=exact.dtype)) < 1e-6


#: finite difference -> (passes without the inner step, bound at eta = 0.5, bound at eta = 1e-4)
FD_CASES = {"central": (4, 1e-3, 1e-7), "forward": (3, 2e-2, 1e-5)}


@pytest.mark.parametrize("fd", FD_CASES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_darts_finite_difference_agrees_with_exact(dtype, fd):
    passes, bound, _ = FD_CASES[fd]
    model = _model(dtype)
    (tr,) = batches(1, seed=1)
    (val,) = batches(1, seed=2)
    weights, betas = weight_parameters(model), selection_parameters(model)
    counter = hg.PassCounter()
    darts = hg.darts_sgd(model, default_loss_fn, tr, val, weights, betas, ETA, 0.01, counter, fd)
    assert counter.passes == passes  # look-ahead, validation, W + eps v (central: and W - eps v)
    exact = _exact(model, tr, val, weights, betas)
    first = _flat(hg.first_order(model, default_loss_fn, val, betas, hg.PassCounter()).selection_grads)
    assert _rel(first, exact) > 0.3  # the second-order term matters at this eta ...
    assert _rel(_flat(darts.selection_grads), exact) < bound  # ... and DARTS gets it right


@pytest.mark.parametrize("fd", FD_CASES)
def test_darts_at_the_papers_eta_is_far_closer_to_exact_than_first_order(setup, fd):
    """At eta = 1e-4 the mixed term is a small correction; either difference keeps its error far
    below the correction itself (what first_order drops)."""
    model, tr, val, weights, betas = setup
    exact = _exact(model, tr, val, weights, betas, eta=1e-4)
    darts = hg.darts_sgd(model, default_loss_fn, tr, val, weights, betas, 1e-4, 0.01, hg.PassCounter(), fd)
    first = _flat(hg.first_order(model, default_loss_fn, val, betas, hg.PassCounter()).selection_grads)
    err = _rel(_flat(darts.selection_grads), exact)
    assert err < FD_CASES[fd][2]
    assert err < _rel(first, exact) / 20


def test_first_order_is_the_direct_gradient_at_w(setup):
    model, tr, val, weights, betas = setup
    counter = hg.PassCounter()
    h = hg.first_order(model, default_loss_fn, val, betas, counter)
    direct = torch.autograd.grad(default_loss_fn(model, val), betas)
    assert counter.passes == 1
    assert torch.equal(_flat(h.selection_grads), _flat(direct))


@pytest.mark.parametrize("fd", FD_CASES)
def test_darts_reports_its_direct_and_second_order_terms(setup, fd):
    """h = direct - eta * mixed; the direct term is dL_val/dbeta at W_hat, the second-order term
    is what separates h from it (scripts/second_order.py measures their sizes)."""
    model, tr, val, weights, betas = setup
    h = hg.darts_sgd(model, default_loss_fn, tr, val, weights, betas, ETA, 0.01, hg.PassCounter(), fd)
    assert torch.allclose(_flat(h.selection_grads), _flat(h.direct) - _flat(h.second_order), rtol=0, atol=1e-15)
    saved = [w.detach().clone() for w in weights]
    g = torch.autograd.grad(default_loss_fn(model, tr), weights)
    with torch.no_grad():
        for w, gi in zip(weights, g):
            w.sub_(ETA * gi)
    direct = _flat(torch.autograd.grad(default_loss_fn(model, val), betas))
    with torch.no_grad():
        for w, s in zip(weights, saved):
            w.copy_(s)
    assert _rel(_flat(h.direct), direct) < 1e-12
    exact = _exact(model, tr, val, weights, betas)
    # the second-order term is what the exact hypergradient adds to the direct one
    assert _rel(_flat(h.second_order), direct - exact) < FD_CASES[fd][1] * 5


@pytest.mark.parametrize("mode", ["darts", "darts_forward", "exact"])
def test_estimators_leave_the_weights_bit_identical(setup, mode):
    model, tr, val, weights, betas = setup
    before = [w.detach().clone() for w in weights]
    if mode.startswith("darts"):
        fd = "forward" if mode == "darts_forward" else "central"
        hg.darts_sgd(model, default_loss_fn, tr, val, weights, betas, ETA, 0.01, hg.PassCounter(), fd)
    else:
        hg.exact_sgd(model, default_loss_fn, tr, val, weights, betas, ETA, hg.PassCounter())
    assert all(torch.equal(a, b) for a, b in zip(before, weights))


@pytest.mark.parametrize("fd", FD_CASES)
def test_finite_difference_replays_dropout_masks(fd):
    """With dropout on, the perturbed passes must see the look-ahead's masks: then halving
    fd_eps changes the estimate by about the truncation error; independent masks would make it
    noise / eps."""
    model = _model(torch.float64, dropout=0.1)
    (tr,) = batches(1, seed=1)
    (val,) = batches(1, seed=2)
    weights, betas = weight_parameters(model), selection_parameters(model)
    estimates = []
    for fd_eps in (0.01, 0.005):
        torch.manual_seed(3)
        h = hg.darts_sgd(model, default_loss_fn, tr, val, weights, betas, ETA, fd_eps, hg.PassCounter(), fd)
        estimates.append(_flat(h.selection_grads))
    assert _rel(estimates[1], estimates[0]) < FD_CASES[fd][1]


def test_exact_requires_eager_attention():
    model = _model(attn="sdpa")
    (tr,) = batches(1, seed=1)
    with pytest.raises(UserError, match="attn_implementation='eager'"):
        hg.exact_sgd(
            model, default_loss_fn, tr, tr, weight_parameters(model), selection_parameters(model), ETA, hg.PassCounter()
        )
