"""Logs that read well in a SLURM output file: plain periodic progress lines when the output is
not a terminal (tqdm on one), and none of the library noise a plain run used to print."""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
import warnings

import pytest
from tqdm import tqdm

from autolora_exp import progress
from autolora_exp.errors import UserError
from autolora_exp.library_output import module_patterns
from autolora_exp.models import load_backbone, load_tokenizer
from autolora_exp.progress import LineProgress, format_duration, progress_bar
from conftest import REPO, compose


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def default_settings():
    saved = progress.SETTINGS.enabled, progress.SETTINGS.every_s
    yield
    progress.SETTINGS.enabled, progress.SETTINGS.every_s = saved


def test_lines_are_periodic_and_plain():
    out, clock = io.StringIO(), FakeClock()
    bar = LineProgress(total=100, desc="train", every_s=30, stream=out, clock=clock)
    for _ in range(40):  # 40 steps at 2 s each: lines at t = 30 and 60 s only
        clock.now += 2
        bar.update(1)
        bar.set_postfix(epoch=1, loss=0.123456)
    bar.write("[train] epoch 1: loss 0.1235")
    bar.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "train: step 15/100 (15%), 2 s/step, elapsed 0:00:30, ETA 0:02:50, epoch=1, loss=0.1235",
        "train: step 30/100 (30%), 2 s/step, elapsed 0:01:00, ETA 0:02:20, epoch=1, loss=0.1235",
        "[train] epoch 1: loss 0.1235",
        "train: step 40/100 (40%), 2 s/step, elapsed 0:01:20, ETA 0:02:00, epoch=1, loss=0.1235",  # at close
    ]
    assert "\r" not in out.getvalue()


def test_resumed_loop_rates_only_its_own_steps_and_fast_loops_say_steps_per_second():
    out, clock = io.StringIO(), FakeClock()
    with LineProgress(total=1000, desc="autolora search", initial=600, every_s=10, stream=out, clock=clock) as bar:
        clock.now += 10
        bar.update(100)
    assert out.getvalue() == ("autolora search: step 700/1000 (70%), 10 step/s, elapsed 0:00:10, ETA 0:00:30\n")
    assert format_duration(5 * 24 * 3600 + 61) == "120:01:01"


def test_tensor_postfix_is_read_only_when_a_line_is_printed():
    torch = pytest.importorskip("torch")
    reads = []

    class Loss:
        def item(self):
            reads.append(1)
            return 0.5

    out, clock = io.StringIO(), FakeClock()
    bar = LineProgress(total=10, desc="train", every_s=5, stream=out, clock=clock)
    for _ in range(10):
        clock.now += 1
        bar.update(1)
        bar.set_postfix(loss=Loss())
    bar.close()
    assert len(reads) == 2 and out.getvalue().count("loss=0.5") == 2  # t = 5 and t = 10: not once a step
    assert torch.tensor(0.25).item() == 0.25


@pytest.fixture(autouse=True)
def default_progress_settings(monkeypatch):
    """Each test starts from the defaults: an in-process pipeline run earlier in the session sets
    the module's settings from its config (train.progress=false in the debug presets)."""
    monkeypatch.setattr(progress, "SETTINGS", progress.ProgressSettings())


def test_factory_picks_tqdm_on_a_terminal_and_lines_elsewhere():
    terminal, file = Terminal(), io.StringIO()
    bar = progress_bar(total=3, desc="train", stream=terminal, mininterval=0)
    assert isinstance(bar, tqdm)
    for _ in range(3):
        bar.update(1)
    bar.close()
    assert "\r" in terminal.getvalue()  # a redrawn bar, as before

    lines = progress_bar(total=3, desc="train", stream=file, every_s=0)
    assert isinstance(lines, LineProgress)
    for _ in range(3):
        lines.update(1)
    lines.close()
    assert file.getvalue().count("\n") == 3 and "\r" not in file.getvalue()


def test_disabled_progress_prints_nothing_and_bad_interval_is_a_user_error():
    out = io.StringIO()
    progress.configure(enabled=False)
    bar = progress_bar(total=3, desc="train", stream=out, every_s=0)
    bar.update(3)
    bar.close()
    assert out.getvalue() == ""
    with pytest.raises(UserError, match="train.log_every_s=-1"):
        progress.configure(every_s=-1)


def test_fresh_head_is_one_line_and_causal_lm_loss_is_named(caplog):
    assert module_patterns(["classifier.weight", "classifier.bias", "pooler.dense.bias"]) == \
        ["classifier.*", "pooler.dense.*"]
    cfg = compose(["model=minilm"])
    tokenizer = load_tokenizer(cfg.model, "classification")
    with caplog.at_level(logging.INFO, logger="autolora_exp"):
        load_backbone(cfg.model, tokenizer, "AutoModelForSequenceClassification", {"num_labels": 3})
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("autolora_exp")]
    assert ours == ["model minilm: head initialised fresh: classifier.*"]
    assert not [r for r in caplog.records if "LOAD REPORT" in r.getMessage()]

    tiny = compose(["task=e2e", "model=tiny-gpt2"])
    model = load_backbone(tiny.model, load_tokenizer(tiny.model, "generation"), "AutoModelForCausalLM", {})
    assert model.loss_type == "ForCausalLM"


NOISE = {
    "transformers' load report": "LOAD REPORT",
    "transformers' weight-loading bar": "Loading weights",
    "peft's deprecated-property warning": "is_gradient_checkpointing",
    "any FutureWarning/DeprecationWarning": "Warning:",
    "transformers' loss_type warning": "loss_type",
    "a carriage-return bar": "\r",
}


def run_cli(tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    """run.py with stdout and stderr captured (not terminals, as in a SLURM job); tests/ on the
    path for the plumbing metric of test_nlg_pipeline."""
    path = os.pathsep.join(p for p in (str(REPO / "tests"), os.environ.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "run.py", "debug=default", "train.progress=true", "train.log_every_s=0",
                           *overrides, f"hydra.run.dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONPATH": path})


def check_clean(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    for what, marker in NOISE.items():
        assert marker not in proc.stderr and marker not in proc.stdout, f"{what} in the output"
    assert proc.stderr == ""


@pytest.mark.slow  # a whole AutoLoRA run through run.py (about a minute)
def test_cli_run_logs_are_plain_lines_without_library_noise(tmp_path):
    """The packaged MiniLM (a pretrained load with a fresh head), AutoLoRA (search + retrain)."""
    proc = run_cli(tmp_path, "method=autolora", "train.log_every=1")  # the loss read back every step
    check_clean(proc)
    assert "model minilm: head initialised fresh: classifier.*" in proc.stdout
    rate = r"[\d.]+ (step/s|s/step)"
    assert re.search(rf"^autolora search: step 4/4 \(100%\), {rate}, elapsed 0:00:\d\d, ETA 0:00:00, mean_rank=[\d.]+$",
                     proc.stdout, re.M)
    assert re.search(rf"^train: step 1/4 \(25%\), {rate}, elapsed 0:00:\d\d, ETA 0:00:\d\d, epoch=1, loss=[\d.]+$",
                     proc.stdout, re.M)


@pytest.mark.slow
def test_cli_generation_run_logs_decoding_without_library_noise(tmp_path):
    data = REPO.parent / "shared" / "data" / "e2e"
    if not data.is_dir():
        pytest.skip(f"{data} not found")
    proc = run_cli(tmp_path, "task=e2e", "model=tiny-gpt2", f"task.data_dir={data}", "task.max_length=64",
                   "task.generation.num_beams=2", "task.generation.max_new_tokens=8",
                   "task.metric._target_=test_nlg_pipeline.quick_bleu")
    check_clean(proc)
    assert re.search(r"^decode validation: input 16/16 \(100%\)", proc.stdout, re.M)
    assert re.search(r"^decode test: input 16/16 \(100%\)", proc.stdout, re.M)
    assert "E2E data: data_dir route" in proc.stdout


def test_quiet_libraries_filters_only_peft_warning():
    from autolora_exp.library_output import quiet_libraries

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_libraries()
        warnings.warn("`is_gradient_checkpointing` is deprecated and will be removed in v6.", FutureWarning)
        warnings.warn("something else is deprecated", FutureWarning)
    assert [str(w.message) for w in caught] == ["something else is deprecated"]
