"""No per-step host synchronisation in the hot loops (train.py, search.py, hypergrad.py): losses,
NaN flags and the search's finiteness test stay on the device and are read back at log,
checkpoint and epoch boundaries; a NaN is still caught with its step and window named."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from autolora_exp.methods.autolora import SearchConfig, inject_selection_lora, search
from autolora_exp.methods.autolora.layer import selection_parameters
from autolora_exp.methods.lora import LoRA
from autolora_exp.train import EpochLoss, NonFiniteLossError, fit

from autolora_tiny import batches, tiny_roberta
from test_methods_baselines import HEADS, TARGETS, tiny_loader, train_cfg
from test_methods_baselines import tiny_roberta as classifier

HOT = {"train.py", "search.py", "hypergrad.py"}
SYNCS = ("item", "tolist", "__bool__", "__float__", "__int__")


@pytest.fixture
def host_reads(monkeypatch):
    """Counts tensor -> host reads made directly by the hot-loop modules."""
    counts: list[str] = []
    for name in SYNCS:
        real = getattr(torch.Tensor, name)

        def wrapper(self, *args, _real=real, _name=name, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if Path(caller).name in HOT and "autolora_exp" in caller:
                counts.append(f"{Path(caller).name}:{sys._getframe(1).f_lineno}:{_name}")
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, wrapper)
    return counts


def _fit(steps: int, log_every: int = 1000):
    method = LoRA(r=4)
    model = method.prepare(classifier(dropout=0.0), TARGETS, HEADS)
    cfg = train_cfg(epochs=1)
    cfg.log_every = log_every
    return fit(model, method, tiny_loader(steps), lambda m: {"validation": {"accuracy": 0.0}}, cfg, 1e-2,
               "accuracy", torch.device("cpu"))


def test_training_loop_reads_the_host_per_window_not_per_step(host_reads):
    _fit(3)
    few = list(host_reads)
    host_reads.clear()
    _fit(9)
    assert len(host_reads) == len(few) and len(few) <= 4, host_reads  # the epoch-end read only
    host_reads.clear()
    _fit(9, log_every=3)  # the progress-bar loss every 3 steps: 3 reads more
    assert len(host_reads) == len(few) * 4, host_reads


def _search(steps: int):
    model = tiny_roberta()
    inject_selection_lora(model, ["query", "value"], k=4, trainable_extra=["classifier"])
    return search(model, batches(steps, 1), batches(steps, 2), SearchConfig(k=4, epochs=1, log_every=1000),
                  progress=False)


def test_search_iterations_make_no_host_reads(host_reads):
    _search(2)
    few = list(host_reads)
    host_reads.clear()
    _search(6)
    assert len(host_reads) == len(few), host_reads


def test_loss_window_names_the_first_nonfinite_step_and_its_window():
    window = EpochLoss(torch.device("cpu"), window_start=5)
    for step, loss in [(5, 1.0), (6, float("nan")), (7, float("inf")), (8, 2.0)]:
        window.add(torch.tensor(loss), step)
    with pytest.raises(NonFiniteLossError, match=r"train: loss is nan at step 6 \(found at the check after steps 5\.\.8\)"):
        window.read("train", 8)
    ok = EpochLoss(torch.device("cpu"))
    ok.add(torch.tensor(1.0), 1)
    ok.add(torch.tensor(2.0), 2)
    assert ok.mean("train", 2) == 1.5 and ok.window_start == 3


def test_nan_in_training_is_caught_at_the_next_read_with_its_step():
    method = LoRA(r=4)
    model = method.prepare(classifier(dropout=0.0), TARGETS, HEADS)
    cfg = train_cfg(epochs=1)
    cfg.log_every = 4
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step \d+ \(found at the check after steps 1\.\.4\)"):
        fit(model, method, tiny_loader(8), lambda m: {"validation": {"accuracy": 0.0}}, cfg, 1e30, "accuracy",
            torch.device("cpu"))


def test_nan_in_the_search_names_the_step(monkeypatch):
    model = tiny_roberta()
    inject_selection_lora(model, ["query", "value"], k=4, trainable_extra=["classifier"])
    beta = selection_parameters(model)[0]
    real_step = torch.optim.AdamW.step
    calls = [0]

    def poisoned(self, *args, **kwargs):  # beta becomes NaN at the second outer step
        out = real_step(self, *args, **kwargs)
        if any(p is beta for g in self.param_groups for p in g["params"]):
            calls[0] += 1
            if calls[0] == 2:
                with torch.no_grad():
                    beta.fill_(float("nan"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", poisoned)
    with pytest.raises(NonFiniteLossError, match=r"after step 2 \(found at the check after steps 1\.\.3\)"):
        search(model, batches(4, 1), batches(4, 2), SearchConfig(k=4, epochs=1, log_every=3), progress=False)


def test_zero_v_gives_a_zero_mixed_term_without_a_host_branch():
    """eps = fd_eps / ||v|| stays on the device; ||v|| = 0 must still give exactly 0 (and W untouched)."""
    from autolora_exp.methods.autolora import default_loss_fn
    from autolora_exp.methods.autolora import hypergrad as hg
    from autolora_exp.methods.autolora.layer import weight_parameters

    model = tiny_roberta()
    inject_selection_lora(model, ["query", "value"], k=4, trainable_extra=["classifier"])
    weights, selection = weight_parameters(model), selection_parameters(model)
    before = [w.detach().clone() for w in weights]
    v = [torch.zeros_like(w) for w in weights]
    tr = batches(1, 1)[0]
    for centre in (None, hg.selection_grads(model, default_loss_fn, tr, selection, hg.PassCounter())):
        mixed = hg.mixed_term_fd(model, default_loss_fn, tr, weights, selection, v, 0.01, hg.PassCounter(),
                                 g_centre=centre)
        assert all(torch.equal(m, torch.zeros_like(m)) for m in mixed)
    assert all(torch.equal(w, b) for w, b in zip(weights, before))
