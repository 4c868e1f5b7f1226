"""The bilevel search loop on a tiny RoBERTa: data roles, pass counts, Betty's rollback, seeds."""

from __future__ import annotations

import copy

import pytest
import torch

from autolora_exp.errors import UserError
from autolora_exp.methods.autolora.threshold import threshold_ranks
from autolora_exp.methods.autolora import (
    BilevelSearch,
    SearchConfig,
    default_loss_fn,
    inject_selection_lora,
    search,
    selection_parameters,
    weight_parameters,
)

from autolora_tiny import batches, randomise_lora, tiny_roberta


def _prepared(seed=0, dropout=0.0, k=4, gate="softmax"):
    model = tiny_roberta(layers=2, dropout=dropout, seed=seed)
    layers = inject_selection_lora(model, ["query", "value"], k=k, gate=gate, trainable_extra=["classifier"])
    return model, layers


class Recorder:
    """A loss_fn that records which batch (by tag) every pass evaluates, and the loss it got."""

    def __init__(self):
        self.calls: list[str] = []
        self.values: list[float] = []

    def __call__(self, model, batch):
        self.calls.append(batch["tag"])
        loss = model(**{k: v for k, v in batch.items() if k != "tag"}).loss
        self.values.append(loss.item())
        return loss


@pytest.mark.parametrize(
    "hypergrad, lookahead, fd, reuse, passes, calls",
    [
        ("darts", "sgd", None, False, 4, 4),  # default: forward difference
        ("darts", "sgd", "central", False, 5, 5),
        ("darts", "sgd", "forward", True, 3, 3),
        ("darts", "sgd", "central", True, 4, 4),
        ("first_order", "sgd", None, False, 2, 2),
        ("exact", "sgd", None, False, 4, 3),  # the backward through the look-ahead's backward has no forward
        ("darts", "betty", None, False, 5, 5),  # betty: central
        ("darts", "betty", "central", True, 4, 4),
    ],
)
def test_search_draws_only_from_its_loaders_in_the_right_roles(hypergrad, lookahead, fd, reuse, passes, calls):
    model, _ = _prepared()
    d_tr, d_val = batches(5, seed=1, tag="tr"), batches(2, seed=2, tag="val")  # D_val shorter: cycles
    loss = Recorder()
    cfg = SearchConfig(k=4, hypergrad=hypergrad, lookahead=lookahead, finite_difference=fd,
                       reuse_lookahead_grad=reuse, log_every=2)
    result = search(model, d_tr, d_val, cfg, loss_fn=loss, progress=False)

    assert result.steps == 5 and result.passes_per_iteration == passes
    assert len(loss.calls) == 5 * calls
    assert set(loss.calls) <= {b["tag"] for b in d_tr + d_val}
    val_cycle = ["val0", "val1", "val0", "val1", "val0"]
    for i in range(5):
        it = loss.calls[i * calls : (i + 1) * calls]
        # one validation pass per iteration, on the next D_val batch; every other pass on this D_tr batch
        assert [c for c in it if c.startswith("val")] == [val_cycle[i]]
        assert {c for c in it if c.startswith("tr")} == {f"tr{i}"}

    # history losses: the mean over the iterations since the previous entry of each iteration's
    # first L_tr and its L_val pass (entries at steps 0, 2, 4 and the end, 5)
    def first(i, prefix):
        it = range(i * calls, (i + 1) * calls)
        return next(loss.values[j] for j in it if loss.calls[j].startswith(prefix))

    assert [h["step"] for h in result.history] == [0, 2, 4, 5]
    assert result.history[0]["train_loss"] is None and result.history[0]["val_loss"] is None
    for entry, window in zip(result.history[1:], [(0, 1), (2, 3), (4,)]):
        assert entry["train_loss"] == pytest.approx(sum(first(i, "tr") for i in window) / len(window), rel=1e-5)
        assert entry["val_loss"] == pytest.approx(sum(first(i, "val") for i in window) / len(window), rel=1e-5)


def test_search_moves_beta_logs_and_reports():
    model, layers = _prepared()
    logged = []
    cfg = SearchConfig(k=4, lr_selection=0.05, log_every=3, epochs=2)
    result = search(model, batches(4, 1), batches(4, 2), cfg, on_log=logged.append, progress=False)
    assert result.steps == 8
    assert logged == result.history and [h["step"] for h in logged] == [0, 3, 6, 8]
    assert logged[0]["alphas"]["roberta.encoder.layer.0.attention.self.query"] == pytest.approx([0.25] * 4)
    assert all(h["train_loss"] > 0 and h["val_loss"] > 0 for h in logged[1:])
    assert set(result.alphas) == set(layers) == set(result.ranks)
    for name, layer in layers.items():
        assert not torch.allclose(layer.selection_logits, torch.zeros(4))  # moved from the init
        assert sum(result.alphas[name]) == pytest.approx(1.0)
        assert 1 <= result.ranks[name] <= 4
    assert result.wall_time_s > 0 and result.to_dict()["mean_rank"] == result.mean_rank


def test_same_seed_gives_the_same_search_twice():
    def run():
        model, _ = _prepared(seed=5, dropout=0.1)
        torch.manual_seed(11)
        cfg = SearchConfig(k=4, lr_selection=0.05, lr_weights=1e-2, max_steps=6, log_every=10)
        return search(model, batches(8, 1), batches(3, 2), cfg, progress=False)

    a, b = run(), run()
    assert a.selection_logits == b.selection_logits and a.ranks == b.ranks


def test_max_steps_and_selection_init_override():
    model, layers = _prepared()
    cfg = SearchConfig(k=4, max_steps=2, selection_init=0.7, lr_selection=1e-6)
    result = search(model, batches(5, 1), batches(1, 2), cfg, progress=False)
    assert result.steps == 2
    assert result.history[0]["alphas"]  # logged after the reset: uniform softmax of 0.7s
    beta = layers["roberta.encoder.layer.1.attention.self.value"].selection_logits
    assert torch.allclose(beta, torch.full((4,), 0.7), atol=1e-4)


def test_betty_rollback_redoes_the_inner_step_from_the_saved_state():
    """After a Betty iteration, W and the optimiser state equal one fresh inner step from the
    pre-iteration state with the new beta: the look-ahead step left no trace."""
    model, layers = _prepared()
    randomise_lora(layers)
    twin = copy.deepcopy(model)
    (tr,) = batches(1, 1)
    (val,) = batches(1, 2)
    cfg = SearchConfig(k=4, lookahead="betty", lr_weights=1e-2, lr_selection=0.05)
    BilevelSearch(model, cfg).step(tr, val)

    ref = BilevelSearch(twin, cfg)
    with torch.no_grad():
        for b_twin, b in zip(selection_parameters(twin), selection_parameters(model)):
            b_twin.copy_(b)
    loss = default_loss_fn(twin, tr)
    ref._inner_update(list(torch.autograd.grad(loss, ref.weights)))
    for w, w_ref in zip(weight_parameters(model), ref.weights):
        assert torch.allclose(w, w_ref, atol=1e-7, rtol=0)


def test_config_and_model_mismatches_are_user_errors():
    with pytest.raises(UserError, match="darts, exact, first_order"):
        SearchConfig(hypergrad="second")
    with pytest.raises(UserError, match="sgd, betty"):
        SearchConfig(lookahead="adam")
    with pytest.raises(UserError, match="betty"):
        SearchConfig(lookahead="betty", hypergrad="exact")
    with pytest.raises(UserError, match="'backward'.*central, forward"):
        SearchConfig(finite_difference="backward")
    with pytest.raises(UserError, match="forward.*lookahead='sgd'"):
        SearchConfig(lookahead="betty", finite_difference="forward")
    with pytest.raises(UserError, match="hypergrad='darts' only"):
        SearchConfig(hypergrad="exact", finite_difference="central")
    with pytest.raises(UserError, match="no gradient"):
        SearchConfig(gate="none", selection_init=0.0)
    model, _ = _prepared(k=4)
    with pytest.raises(UserError, match="k=4"):
        search(model, batches(1, 1), batches(1, 2), SearchConfig(k=8), progress=False)
    with pytest.raises(UserError, match="inject_selection_lora"):
        search(tiny_roberta(layers=1), batches(1, 1), batches(1, 2), SearchConfig(k=4), progress=False)
    with pytest.raises(UserError, match="D_val loader is empty"):
        search(model, batches(1, 1), [], SearchConfig(k=4), progress=False)
    sdpa = tiny_roberta(layers=1, attn="sdpa")
    inject_selection_lora(sdpa, ["query"], k=4)
    with pytest.raises(UserError, match="eager"):
        search(sdpa, batches(1, 1), batches(1, 2), SearchConfig(k=4, hypergrad="exact"), progress=False)


@pytest.mark.parametrize("gate", ["none", "sigmoid"])
def test_ablation_gates_search_and_threshold(gate):
    model, layers = _prepared(gate=gate)
    cfg = SearchConfig(k=4, gate=gate, lr_selection=0.05)
    result = search(model, batches(3, 1), batches(3, 2), cfg, progress=False)
    for name, alpha in result.alphas.items():
        beta = layers[name].selection_logits.detach()
        expected = beta if gate == "none" else torch.sigmoid(beta)
        assert alpha == pytest.approx(expected.tolist())
        assert 0 <= result.ranks[name] <= 4


def _patience_run(tmp_path=None, stop_at=None, patience=2, tolerance=0.0):
    """A search that can stop on stable ranks; with ``stop_at`` a stop is requested at that alpha log."""
    from autolora_exp.checkpoint import Checkpointer
    from autolora_exp.preemption import StopSignal

    model, _ = _prepared(seed=3)
    torch.manual_seed(7)
    stop = StopSignal()

    def on_log(entry):
        if entry["step"] == stop_at:
            stop.signum = 15  # as the SIGTERM handler would

    cfg = SearchConfig(k=4, lr_selection=0.05, lr_weights=1e-2, epochs=10, log_every=1, patience=patience,
                       stop_tolerance=tolerance)
    ckpt = Checkpointer(tmp_path, "search", 0, "h") if tmp_path is not None else None
    return search(model, batches(4, 1), batches(2, 2), cfg, progress=False, on_log=on_log, checkpointer=ckpt,
                  stop=stop)


def test_ranks_stable_needs_patience_plus_one_equal_logs_after_step_0():
    from autolora_exp.methods.autolora.search import ranks_stable

    def log(step, beta):  # one layer, k = 2; softmax threshold 1/2
        return {"step": step, "selection_logits": {"l": beta}}

    top, low = [0.4, 0.0], [0.0, 0.4]  # both rank 1, different terms kept
    same = [log(0, [0.0, 0.0]), log(1, top), log(2, top)]
    assert ranks_stable(same, "softmax", 1) and not ranks_stable(same, "softmax", 2)
    assert not ranks_stable([log(0, [0.0, 0.0]), log(1, top)], "softmax", 1)  # step 0 does not count
    assert ranks_stable([log(1, [0.0, 0.0]), log(2, [0.4, 0.0])], "softmax", 1) is False  # rank 2 -> 1
    assert ranks_stable([log(1, top), log(2, low)], "softmax", 1)  # compares ranks, not which terms


def test_patience_stops_once_the_ranks_are_stable_and_resumes_there(tmp_path):
    full = _patience_run(patience=None)
    early = _patience_run(patience=2)
    assert full.steps == 40 and full.converged_at is None
    assert early.converged_at == early.steps < 40
    tail = [h for h in early.history if h["step"] > 0][-3:]
    assert [h["step"] for h in tail] == [early.steps - 2, early.steps - 1, early.steps]
    assert len({tuple(sorted(threshold_ranks(h["selection_logits"], "softmax").items())) for h in tail}) == 1
    # the early stop is the same trajectory, cut: beta equals a fixed-length search of that many steps
    assert early.history == full.history[: len(early.history)]
    # a stop requested at the converged step, then a resume, ends there too (not one log later)
    from autolora_exp.preemption import Preempted

    with pytest.raises(Preempted):
        _patience_run(tmp_path, stop_at=early.steps)
    resumed = _patience_run(tmp_path)
    assert (resumed.steps, resumed.converged_at, resumed.selection_logits) == (
        early.steps, early.converged_at, early.selection_logits)


def test_stop_reason_allows_a_mean_rank_change_up_to_the_tolerance():
    from autolora_exp.methods.autolora.search import rank_distance, stop_reason

    def log(step, *betas):  # one rank per layer from k = 2 logits; softmax threshold 1/2
        return {"step": step, "selection_logits": {f"l{i}": b for i, b in enumerate(betas)}}

    one, two = [0.4, 0.0], [0.0, 0.0]  # rank 1, rank 2
    history = [log(0, two, two), log(4, one, two), log(8, two, two), log(12, one, two)]
    assert rank_distance({"a": 1, "b": 2}, {"a": 2, "b": 2}) == 0.5
    assert stop_reason(history, "softmax", 2) is None  # one layer moves between logs
    assert stop_reason(history, "softmax", 2, tolerance=0.4) is None  # mean change 1/2 layer > 0.4
    reason = stop_reason(history, "softmax", 2, tolerance=0.5)
    assert reason.startswith("ranks stable: mean |rank change| per layer 0.5 <= 0.5 over 3 alpha logs (steps 4-12)")
    assert stop_reason(history, "softmax", 3, tolerance=1.0) is None  # step 0 does not count: 3 logs < 4
    with pytest.raises(ValueError, match="different layers"):
        rank_distance({"a": 1}, {"b": 1})


def test_a_tolerant_stop_ends_no_later_than_the_exact_one_and_says_why(capsys):
    exact, tolerant = _patience_run(patience=2), _patience_run(patience=2, tolerance=0.5)
    printed = capsys.readouterr().out
    assert f"autolora search: stopped at step {tolerant.steps} of 40: {tolerant.stop_reason}" in printed
    assert tolerant.converged_at is not None and tolerant.steps <= exact.steps
    assert tolerant.stop_reason.startswith("ranks stable") and "<= 0.5" in tolerant.stop_reason
    assert exact.stop_reason.startswith("ranks stable: mean |rank change| per layer 0 <= 0")
    assert tolerant.history == exact.history[: len(tolerant.history)]  # the same trajectory, cut
    assert _patience_run(patience=None).stop_reason is None
    assert tolerant.to_dict()["stop_reason"] == tolerant.stop_reason


def test_budget_keys_are_validated_with_the_accepted_values():
    for key, bad in (("subsample_tr", 0.0), ("subsample_tr", 1.5), ("subsample_val", -0.1)):
        with pytest.raises(UserError, match=f"search.{key}={bad} is not accepted; use a number in \\(0, 1\\]"):
            SearchConfig(**{key: bad})
    with pytest.raises(UserError, match="search.stop_tolerance=-1 is not accepted; use a number >= 0"):
        SearchConfig(stop_tolerance=-1)


def test_new_search_keys_are_validated_with_the_accepted_values():
    with pytest.raises(UserError, match="weight_optimizer='sgd' is not accepted; use one of adamw, adam"):
        SearchConfig(weight_optimizer="sgd")
    with pytest.raises(UserError, match="selection_optimizer='rmsprop' is not accepted; use one of adamw, adam"):
        SearchConfig(selection_optimizer="rmsprop")
    with pytest.raises(UserError, match="fd_dropout_masks='same' is not accepted; use one of replay, fresh"):
        SearchConfig(fd_dropout_masks="same")
    with pytest.raises(UserError, match="hypergrad=.darts. only"):
        SearchConfig(hypergrad="first_order", fd_dropout_masks="fresh")
    with pytest.raises(UserError, match=r"val_fraction=0.0 .*\(0, 1\)"):
        SearchConfig(val_fraction=0.0)
    with pytest.raises(UserError, match="batch_size=0"):
        SearchConfig(batch_size=0)
    with pytest.raises(UserError, match="grad_clip=-1"):
        SearchConfig(grad_clip=-1.0)
    with pytest.raises(UserError, match="softmax, linear, mean, sigmoid"):
        SearchConfig(threshold="top2")
    with pytest.raises(UserError, match="selection_init"):
        SearchConfig(threshold="linear")  # softmax starts at beta = 0: beta / sum(beta) = 0/0
    assert SearchConfig().grad_clip is None  # the paper and the authors' code clip nothing
    assert SearchConfig(gate="none").threshold_rule == "mean"


def test_search_thresholds_with_its_own_rule_not_the_gates():
    """The authors' pairing: softmax gate in the search, linear rule on the raw beta after it."""
    model, layers = _prepared()
    cfg = SearchConfig(k=4, threshold="linear", selection_init=1.0, lr_selection=0.05, max_steps=3)
    result = search(model, batches(3, 1), batches(3, 2), cfg, progress=False)
    for name, layer in layers.items():
        beta = layer.selection_logits.detach().double()
        assert result.selection_logits[name] == beta.tolist()
        assert result.ranks[name] == int((beta / beta.sum() >= 0.25 - 1e-7).sum())


def test_train_backbone_trains_everything_but_the_targets_base_weights():
    model = tiny_roberta(layers=2)
    layers = inject_selection_lora(model, ["query", "value"], k=4, trainable_extra=["classifier"],
                                   train_backbone=True)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {f"{n}.base.weight" for n in layers}
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    search(model, batches(2, 1), batches(2, 2), SearchConfig(k=4, lr_weights=1e-2), progress=False)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert "roberta.encoder.layer.0.intermediate.dense.weight" in changed  # a backbone weight moved
    assert not changed & frozen


def test_fresh_dropout_masks_make_the_finite_difference_noise_over_eps():
    """With dropout on, 'fresh' masks (the authors' passes) make the mixed term change with the
    radius as mask noise / eps; 'replay' keeps it within the truncation error."""
    from autolora_exp.methods.autolora import hypergrad as hg

    changes = {}
    for masks in ("replay", "fresh"):
        estimates = []
        for fd_eps in (0.01, 0.005):
            model, layers = _prepared(dropout=0.1)
            model.double().train()
            randomise_lora(layers)
            torch.manual_seed(3)
            w, b = weight_parameters(model), selection_parameters(model)
            opt = torch.optim.Adam(w, lr=1e-2)

            def inner(grads):
                for p, g in zip(w, grads):
                    p.grad = g
                opt.step()

            h = hg.darts_betty(model, default_loss_fn, batches(1, 1)[0], batches(1, 2)[0], w, b, opt, inner,
                               fd_eps, hg.PassCounter(), replay_dropout=masks == "replay")
            estimates.append(torch.cat([g.flatten() for g in h.selection_grads]))
        changes[masks] = ((estimates[1] - estimates[0]).norm() / estimates[0].norm()).item()
    assert changes["replay"] < 1e-3 < changes["fresh"]
