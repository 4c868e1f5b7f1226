"""End to end through run.py / pipeline.run on tiny models: result.json, parameter counts, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autolora_exp import results
from autolora_exp.pipeline import run
from conftest import REPO

TINY = ["debug=default", "model=tiny-roberta", "method=lora"]


def run_cli(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def test_cli_run_writes_valid_result(tmp_path):
    proc = run_cli(*TINY, f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / results.RESULT_FILE).read_text())
    results.validate_result(result)
    assert result["task"] == "bbc_news" and result["method"] == "lora"
    assert set(result["metrics"]["final"]) == {"validation"}
    assert 0.0 <= result["metrics"]["test"]["accuracy"] <= 1.0
    assert result["phases"]["train"]["steps"] == 4
    assert result["data"]["train"]["n"] == 32 and len(result["data"]["train"]["ids_sha256"]) == 64
    assert result["env"]["packages"]["torch"]
    assert "bbc_news" in proc.stdout and "trainable params" in proc.stdout


def lora_param_count(hidden: int, layers: int, r: int, num_labels: int) -> int:
    """Analytic count: q and v LoRA (r*(in+out) each) per block, plus the RoBERTa head
    (dense hidden->hidden and out_proj hidden->num_labels, with biases)."""
    lora = layers * 2 * r * (hidden + hidden)
    head = hidden * hidden + hidden + hidden * num_labels + num_labels
    return lora + head


@pytest.mark.parametrize("r", [2, 4])
def test_lora_trainable_count_is_analytic(make_cfg, r):
    cfg = make_cfg(*TINY, f"method.r={r}")
    result = run(cfg)
    assert result["params"]["trainable"] == lora_param_count(32, 2, r, 5)
    assert result["ranks"] == {f"roberta.encoder.layer.{i}.attention.self.{m}": r
                               for i in range(2) for m in ("query", "value")}


def test_full_ft_trains_everything(make_cfg):
    result = run(make_cfg(*TINY, "method=full_ft"))
    assert result["params"]["trainable"] == result["params"]["total"]
    assert result["ranks"] is None


def test_glue_local_data_dir(make_cfg, shared_data):
    result = run(make_cfg(*TINY, "task=glue/rte", f"task.data_dir={shared_data / 'glue'}"))
    assert result["task"] == "glue/rte"
    assert result["data"]["validation"]["n"] == 16  # debug preset subsample
    assert "accuracy" in result["metrics"]["final"]["validation"]


def test_stsb_regression_reports_spearman(make_cfg, shared_data):
    result = run(make_cfg(*TINY, "task=glue/stsb", f"task.data_dir={shared_data / 'glue'}"))
    scores = result["metrics"]["final"]["validation"]
    assert {"spearmanr", "pearson"} <= set(scores)


def test_mnli_matched_and_mismatched_reported_separately(make_cfg, shared_data, tmp_path):
    # the shared data has no MNLI dev files: build both from the official-format train sample
    src = (shared_data / "glue" / "MNLI" / "train.tsv").read_text(encoding="utf-8").splitlines()
    mnli = tmp_path / "glue" / "MNLI"
    mnli.mkdir(parents=True)
    header = src[0].split("\t")
    dev_header = header[:-2] + [f"label{i}" for i in range(1, 6)] + ["gold_label"]
    (mnli / "train.tsv").write_text("\n".join(src) + "\n", encoding="utf-8")
    for name, rows in (("dev_matched.tsv", src[1:17]), ("dev_mismatched.tsv", src[17:40])):
        body = ["\t".join(r.split("\t")[:-2] + [r.split("\t")[-1]] * 5 + [r.split("\t")[-1]]) for r in rows]
        (mnli / name).write_text("\n".join(["\t".join(dev_header)] + body) + "\n", encoding="utf-8")
    cfg = make_cfg(*TINY, "task=glue/mnli", f"task.data_dir={tmp_path / 'glue'}", "task.max_eval_samples=null")
    result = run(cfg)
    final = result["metrics"]["final"]
    assert set(final) == {"validation_matched", "validation_mismatched"}
    assert final["validation_matched"]["n"] == 16 and final["validation_mismatched"]["n"] == 23


@pytest.mark.parametrize("args,needle", [
    (["task=glue/nope"], "glue/nope"),
    (["method=nope"], "nope"),
    (["model=nope"], "nope"),
    (["method.rr=4"], "method.rr"),
    (["task=glue/rte", "task.data_dir=/no/such/glue"], "/no/such/glue"),
])
def test_bad_input_gives_clear_error(args, needle, tmp_path):
    proc = run_cli(*TINY, *args, f"hydra.run.dir={tmp_path}")
    assert proc.returncode != 0
    assert needle in proc.stderr
    assert "Traceback" not in proc.stderr


def test_offline_hub_model_fails_fast_with_one_line(tmp_path, shared_data):
    proc = run_cli("debug=default", "task=glue/rte", f"task.data_dir={shared_data / 'glue'}",
                   f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "FacebookAI/roberta-base" in lines[0] and "model.pretrained" in lines[0]


def test_wandb_failure_never_kills_the_run(make_cfg, monkeypatch):
    import wandb

    def boom(*a, **k):
        raise RuntimeError("wandb is down")

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setattr(wandb, "init", boom)
    result = run(make_cfg(*TINY))
    assert result["status"] == "completed"
