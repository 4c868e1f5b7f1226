"""train.precision: bf16 autocast (on CPU here) trains every method, the search finds ranks in
every hypergradient mode, losses and alphas stay close to fp32; the finite-difference passes
stay fp32 (and why); fp16 is refused by the search with a clear error."""

from __future__ import annotations

import contextlib

import pytest
import torch

from autolora_exp.errors import UserError
from autolora_exp.methods.adalora import AdaLoRA
from autolora_exp.methods.adapter import HoulsbyAdapter
from autolora_exp.methods.autolora import SearchConfig, default_loss_fn, inject_selection_lora, search
from autolora_exp.methods.autolora import hypergrad as hg
from autolora_exp.methods.autolora.layer import selection_parameters, weight_parameters
from autolora_exp.methods.full_ft import FullFineTuning
from autolora_exp.methods.lora import LoRA
from autolora_exp.precision import Precision, check_precision, check_search_precision, full_precision
from autolora_exp.train import fit

from autolora_tiny import batches, tiny_roberta
from test_methods_baselines import HEADS, TARGETS, tiny_loader, train_cfg
from test_methods_baselines import tiny_roberta as classifier

CPU = torch.device("cpu")
#: stated tolerances of bf16 against fp32 on these tiny models (measured: loss 1.5e-4 relative,
#: alpha 0.004, betty 0.034)
LOSS_RTOL = 1e-3
ALPHA_ATOL = 0.05


def test_unknown_precision_and_fp16_search_are_refused_by_name():
    with pytest.raises(UserError, match="'fp8' is not one of fp32, bf16, fp16"):
        check_precision("fp8")
    with pytest.raises(UserError, match="fp16.*not supported by the AutoLoRA search.*bf16 or fp32"):
        check_search_precision("fp16")
    check_search_precision("bf16")


def test_autocast_is_bf16_and_full_precision_switches_it_off():
    precision = Precision("bf16", CPU)
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with precision.autocast():
        assert (a @ b).dtype == torch.bfloat16
        with full_precision(), precision.autocast():  # nested: fp32 wins
            assert (a @ b).dtype == torch.float32
    with Precision("fp32", CPU).autocast():
        assert (a @ b).dtype == torch.float32
    assert Precision("fp16", CPU).scaler() is not None and precision.scaler() is None


@pytest.mark.parametrize("name,make,lr", [
    ("lora", lambda: LoRA(r=4), 1e-2),
    ("adalora", lambda: AdaLoRA(init_r=6, target_r=4, total_step=12), 1e-2),
    ("adapter", lambda: HoulsbyAdapter(bottleneck=8), 1e-2),
    ("full_ft", lambda: FullFineTuning(), 1e-4),
])
def test_every_method_trains_in_bf16_within_tolerance_of_fp32(name, make, lr):
    losses = {}
    for p in ("fp32", "bf16"):
        method = make()
        model = method.prepare(classifier(dropout=0.0), TARGETS, HEADS)
        cfg = train_cfg(epochs=3)
        result = fit(model, method, tiny_loader(4), lambda m: {"validation": {"accuracy": 0.0}}, cfg, lr,
                     "accuracy", CPU, precision=Precision(p, CPU))
        losses[p] = [e["train_loss"] for e in result.epochs]
    assert losses["bf16"][-1] < losses["bf16"][0]  # it trains
    assert losses["bf16"] != losses["fp32"]  # bf16 really ran
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=LOSS_RTOL)


def test_fp16_trains_with_its_loss_scale():
    method = LoRA(r=4)
    model = method.prepare(classifier(dropout=0.0), TARGETS, HEADS)
    result = fit(model, method, tiny_loader(4), lambda m: {"validation": {"accuracy": 0.0}}, train_cfg(epochs=2),
                 1e-2, "accuracy", CPU, precision=Precision("fp16", CPU))
    assert result.epochs[-1]["train_loss"] < result.epochs[0]["train_loss"]


@pytest.mark.parametrize("mode,extra", [("darts", {}), ("darts", {"finite_difference": "central"}),
                                        ("darts", {"lookahead": "betty"}), ("exact", {}), ("first_order", {})])
def test_search_finds_ranks_in_bf16_close_to_fp32(mode, extra):
    found = {}
    for p in ("fp32", "bf16"):
        model = tiny_roberta()
        inject_selection_lora(model, ["query", "value"], k=4, trainable_extra=["classifier"])
        cfg = SearchConfig(k=4, hypergrad=mode, epochs=2, lr_selection=0.05, **extra)
        found[p] = search(model, batches(6, 1), batches(6, 2), cfg, progress=False, precision=Precision(p, CPU))
    fp32, bf16 = found["fp32"], found["bf16"]
    assert set(bf16.ranks) == set(fp32.ranks) and len(bf16.ranks) == 4
    diffs = [abs(a - b) for layer in fp32.alphas for a, b in zip(fp32.alphas[layer], bf16.alphas[layer])]
    assert 0 < max(diffs) < ALPHA_ATOL


def test_search_refuses_fp16():
    model = tiny_roberta()
    inject_selection_lora(model, ["query", "value"], k=4, trainable_extra=["classifier"])
    with pytest.raises(UserError, match="fp16"):
        search(model, batches(2, 1), batches(2, 2), SearchConfig(k=4), progress=False, precision=Precision("fp16", CPU))


def _mixed_term(precision: Precision, fd_in_fp32: bool) -> torch.Tensor:
    """darts' mixed term (d^2 L_tr / dbeta dW) . v on a fixed tiny model, batch and v."""
    model = tiny_roberta()
    inject_selection_lora(model, ["query", "value"], k=4, trainable_extra=["classifier"])
    for p in weight_parameters(model):  # LoRA B starts at 0: move off it so the mixed term is not ~0
        torch.nn.init.normal_(p, std=0.2, generator=torch.Generator().manual_seed(p.numel()))
    weights, selection = weight_parameters(model), selection_parameters(model)
    tr, val = batches(1, 1)[0], batches(1, 2)[0]
    counter = hg.PassCounter()
    _, v = hg.val_gradients(model, default_loss_fn, val, weights, selection, counter)
    loss_fn = precision.loss_fn(default_loss_fn)
    region = contextlib.nullcontext if not fd_in_fp32 else full_precision
    with region():
        g_centre = hg.selection_grads(model, loss_fn, tr, selection, counter)
    original = hg.full_precision
    try:
        if not fd_in_fp32:
            hg.full_precision = contextlib.nullcontext  # what bf16 finite-difference passes would give
        mixed = hg.mixed_term_fd(model, loss_fn, tr, weights, selection, v, 0.01, counter, g_centre=g_centre)
    finally:
        hg.full_precision = original
    return torch.cat([m.flatten() for m in mixed])


def test_finite_difference_passes_in_bf16_would_be_noise_so_they_run_in_fp32():
    """The reason darts keeps its finite difference in fp32: W + eps v rounds back to W in bf16."""
    reference = _mixed_term(Precision("fp32", CPU), fd_in_fp32=True)
    kept = _mixed_term(Precision("bf16", CPU), fd_in_fp32=True)  # what the search does under bf16
    noisy = _mixed_term(Precision("bf16", CPU), fd_in_fp32=False)
    assert torch.equal(kept, reference)
    assert (noisy - reference).norm() > 0.5 * reference.norm()


def test_bf16_runs_the_whole_pipeline_with_decoding_under_autocast(monkeypatch, tmp_path):
    """E2E through run(): AutoLoRA's search, the retrain and beam decoding all in bf16."""
    from conftest import compose
    from test_nlg_pipeline import tiny

    import autolora_exp.task_types.generation as generation
    from autolora_exp.pipeline import run

    seen = []
    real = generation.generate_texts

    def recording(*args, **kwargs):
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")))
        return real(*args, **kwargs)

    monkeypatch.setattr(generation, "generate_texts", recording)
    result = run(compose(tiny("e2e", "method=autolora", "train.precision=bf16"), tmp_path / "run"))
    assert seen and all(s == (True, torch.bfloat16) for s in seen)
    assert result["env"]["device_info"]["precision"] == "bf16" and result["search"]["ranks"]


def test_bf16_token_classification_runs(make_cfg):
    from autolora_exp.pipeline import run

    result = run(make_cfg("debug=default", "model=tiny-roberta", "method=lora", "task=wnut16", "train.precision=bf16"))
    assert result["env"]["device_info"]["precision"] == "bf16"
    assert all(0.0 <= m <= 1.0 for m in result["metrics"]["final"]["validation"].values() if isinstance(m, float))


def test_fp16_autolora_run_fails_before_loading_with_failed_json(make_cfg, tmp_path):
    from autolora_exp.pipeline import run

    cfg = make_cfg("debug=default", "model=tiny-roberta", "method=autolora", "train.precision=fp16")
    with pytest.raises(UserError, match="fp16"):
        run(cfg)
    assert '"phase": "setup"' in (tmp_path / "run" / "failed.json").read_text()
