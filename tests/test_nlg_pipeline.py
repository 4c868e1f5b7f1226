"""E2E and WebNLG through the whole pipeline on the tiny GPT-2: metrics, predictions, per-slice
ranks, every method on both tasks; and the packaged SmolLM2 as a real causal LM (slow)."""

from __future__ import annotations

import functools
import json
import shutil
import subprocess
import sys

import pytest

from autolora_exp import results
from autolora_exp.errors import UserError
from autolora_exp.metrics.nlg.java import check_java_for
from autolora_exp.metrics.nlg.mteval import corpus_bleu_13a
from autolora_exp.pipeline import run
from conftest import REPO, SHARED_DATA, compose

METHODS = ["lora", "autolora", "autolora_eta0", "autolora_no_cst", "autolora_sigmoid", "adalora", "adapter",
           "full_ft", "lora_grid"]
#: run in the default suite on E2E; every other (task, method) run is marked slow
FAST_METHODS = {"lora", "autolora"}
QV_LAYERS = [f"transformer.h.{i}.attn.c_attn.{p}" for i in range(2) for p in ("q", "v")]


def quick_bleu(hypotheses, references):
    """Corpus BLEU alone, in pure Python: the plumbing tests skip the Java metrics' start-up cost
    (the official metrics run in the slow end-to-end tests)."""
    return {"bleu": corpus_bleu_13a(hypotheses, references, lowercase=True)}


def tiny(task: str, *extra: str, quick: bool = True) -> list[str]:
    data = SHARED_DATA / task
    if not data.is_dir():
        pytest.skip(f"{data} not found")
    overrides = ["debug=default", f"task={task}", f"task.data_dir={data}", "model=tiny-gpt2",
                 "task.max_length=64", "task.generation.num_beams=2", "task.generation.max_new_tokens=8"]
    if quick:
        overrides.append(f"task.metric._target_={__name__}.quick_bleu")
    return overrides + list(extra)


def check_predictions(out_dir, split: str, n_inputs: int) -> None:
    assert len((out_dir / f"predictions_{split}.txt").read_text(encoding="utf-8").splitlines()) == n_inputs
    groups = (out_dir / f"references_{split}.txt").read_text(encoding="utf-8").split("\n\n")
    assert len(groups) == n_inputs and all(g.strip() for g in groups)
    records = [json.loads(x) for x in (out_dir / f"predictions_{split}.jsonl").read_text(encoding="utf-8").splitlines()]
    assert len(records) == n_inputs and all(r["references"] and "prediction" in r for r in records)


def test_task_files_pick_gpt2_medium_with_q_and_v_targets_and_no_new_head():
    for task in ("e2e", "webnlg"):
        cfg = compose([f"task={task}"])
        assert cfg.model.name == "gpt2-medium" and list(cfg.model.target_modules) == ["c_attn.q", "c_attn.v"]
        assert list(cfg.model.head_modules) == [] and cfg.task.kind == "generation"
        g = cfg.task.generation
        assert (g.num_beams, g.length_penalty, g.no_repeat_ngram_size, g.max_new_tokens) == (10, 0.8, 4, 64)
        assert cfg.train.batch_size == 16 and cfg.train.epochs == 5
    assert compose(["task=webnlg", "model=smollm2"]).model.target_modules == ["q_proj", "v_proj"]


@pytest.mark.parametrize("task", ["e2e", "webnlg"])
@pytest.mark.parametrize("method", METHODS)
def test_every_method_composes_on_both_tasks(task, method):
    cfg = compose([f"task={task}", f"method={method}"])
    assert cfg.method.name == method and cfg.task.name == task


@pytest.mark.slow
def test_e2e_lora_official_metrics_predictions_and_slice_ranks(tmp_path):
    """The default e2e metric (tuetschek/e2e-metrics' five scores) on the validation and test splits."""
    out = tmp_path / "run"
    result = run(compose(tiny("e2e", "method=lora", quick=False), out))
    final, test = result["metrics"]["final"]["validation"], result["metrics"]["test"]
    for scores in (final, test):
        assert {"bleu", "nist", "meteor", "rouge_l", "cider", "loss", "n_inputs", "n_references"} <= set(scores)
        # debug's max_eval_samples=16 keeps 16 inputs, each with all its references
        assert scores["loss"] > 0 and scores["n_inputs"] == 16 < scores["n_references"]
    check_predictions(out, "validation", final["n_inputs"])
    check_predictions(out, "test", test["n_inputs"])
    # LoRA on the q and v slices of c_attn only: 2 blocks x 2 slices x r (32 + 32)
    assert result["ranks"] == {name: 4 for name in QV_LAYERS}
    assert result["params"]["trainable"] == 2 * 2 * 4 * (32 + 32)


def run_params():
    """Every method on both tasks; LoRA and AutoLoRA on E2E in the default suite, the rest slow."""
    for task in ("e2e", "webnlg"):
        for method in METHODS:
            fast = task == "e2e" and method in FAST_METHODS
            yield pytest.param(task, method, marks=() if fast else pytest.mark.slow, id=f"{task}-{method}")


@pytest.mark.parametrize(("task", "method"), list(run_params()))
def test_every_method_runs_a_few_steps(task, method, tmp_path):
    out = tmp_path / "run"
    result = run(compose(tiny(task, f"method={method}"), out))
    results.validate_result(result)
    assert result["method"] == method and result["phases"]["train"]["steps"] == 4
    assert 0.0 <= result["metrics"]["test"]["bleu"] <= 1.0
    check_predictions(out, "test", result["metrics"]["test"]["n_inputs"])
    if method in ("lora", "adalora", "lora_grid") or method.startswith("autolora"):
        assert set(result["ranks"]) <= set(QV_LAYERS)  # q and v slices only, each with its own rank
        if method != "autolora_sigmoid":  # the sigmoid gate may drop a layer (rank 0)
            assert set(result["ranks"]) == set(QV_LAYERS)
    if method.startswith("autolora"):
        assert set(result["search"]["ranks"]) == set(QV_LAYERS)
        assert json.loads((out / "rank_pattern.json").read_text()) == result["search"]["ranks"]
        # the retrain's ranks are the searched ones (sigmoid: minus the rank-0 layers)
        assert result["ranks"] == {k: r for k, r in result["search"]["ranks"].items() if r > 0}


@pytest.mark.slow
def test_cli_e2e_autolora_writes_metrics_predictions_and_ranks(tmp_path):
    proc = subprocess.run([sys.executable, "run.py", *tiny("e2e", "method=autolora", quick=False),
                           f"hydra.run.dir={tmp_path}"], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / results.RESULT_FILE).read_text())
    assert set(result["metrics"]["test"]) >= {"bleu", "nist", "meteor", "rouge_l", "cider"}
    assert set(result["search"]["ranks"]) == set(QV_LAYERS)
    check_predictions(tmp_path, "test", result["metrics"]["test"]["n_inputs"])
    assert "e2e | tiny-gpt2 | autolora" in proc.stdout


@pytest.mark.slow
def test_smollm2_from_its_package_generates_and_trains(tmp_path):
    """The packaged SmolLM2-135M (converted once to ~/.cache/autolora_exp) as the demo causal LM:
    real pretrained weights, and the whole pipeline with LoRA on its 30 x (q_proj, v_proj)."""
    pytest.importorskip("gguf")
    import torch

    from autolora_exp.models import load_backbone, load_tokenizer
    from autolora_exp.smollm2 import gguf_path

    try:
        gguf_path()
    except Exception as err:  # not installed here
        pytest.skip(str(err))
    model_cfg = compose(["task=e2e", "model=smollm2"]).model
    tokenizer = load_tokenizer(model_cfg, "generation")
    model = load_backbone(model_cfg, tokenizer, "AutoModelForCausalLM", {}).eval()
    ids = tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=4, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids["input_ids"].shape[1]:])

    out_dir = tmp_path / "run"
    result = run(compose(tiny("e2e", "model=smollm2", "task.max_train_samples=8", "task.max_eval_samples=4",
                              "train.batch_size=4", "train.max_steps=2", "train.eval_batch_size=4"), out_dir))
    assert set(result["ranks"]) == {f"model.layers.{i}.self_attn.{p}_proj" for i in range(30) for p in ("q", "v")}
    # two steps teach nothing yet (LoRA starts at B = 0): the instruct model may answer the
    # unfamiliar prompt with an empty line, so only the files' shape is checked here
    check_predictions(out_dir, "test", result["metrics"]["test"]["n_inputs"])


# ---- Java, needed by METEOR 1.5 and the PTB tokenizer, is checked at setup ---------------------
@pytest.mark.parametrize("task", ["e2e", "webnlg"])
def test_missing_java_stops_the_run_at_setup(task, tmp_path, monkeypatch):
    """PATH and JAVA_HOME point at nothing: one line naming the task, what needs Java and the fix,
    raised before any data is read (failed.json's phase is setup, no phase was timed)."""
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "no-jdk"))
    out = tmp_path / "run"
    with pytest.raises(UserError) as err:
        run(compose(tiny(task, quick=False), out))
    message = str(err.value)
    assert "\n" not in message
    assert f"task '{task}'" in message and "java not found on PATH" in message and "JAVA_HOME" in message
    assert "METEOR" in message and "install a Java runtime" in message
    failed = json.loads((out / results.FAILED_FILE).read_text())
    assert failed["phase"] == "setup"


def test_broken_java_is_caught_at_setup_too(tmp_path, monkeypatch):
    """A ``java`` that does not run (e.g. a launcher stub without a JDK) fails the same way."""
    jdk = tmp_path / "jdk"
    (jdk / "bin").mkdir(parents=True)
    stub = jdk / "bin" / "java"
    stub.write_text("#!/bin/sh\necho 'No Java runtime present' >&2\nexit 1\n")
    stub.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(jdk))
    with pytest.raises(UserError, match=r"java -version failed \(exit 1: No Java runtime present\)"):
        run(compose(tiny("e2e", quick=False), tmp_path / "run"))


def test_metrics_without_java_are_not_checked(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("JAVA_HOME", raising=False)
    assert check_java_for(quick_bleu, "task 'e2e'") is None


@pytest.mark.skipif(shutil.which("java") is None, reason="no java here")
def test_working_java_passes_the_setup_check():
    from autolora_exp.metrics.nlg import e2e_metrics

    assert "version" in check_java_for(functools.partial(e2e_metrics), "task 'e2e'")
