"""Reliability: preemption and resume, failed.json, atomic results, corrupt checkpoints,
skip-finished, determinism. Each row of the README's "What happens when..." table is here."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from autolora_exp import atomic, results
from autolora_exp.checkpoint import Checkpointer
from autolora_exp.errors import UserError
from autolora_exp.pipeline import run
from conftest import REPO

TINY = ["debug=default", "model=tiny-roberta", "method=lora"]
# long enough to be stopped mid-phase: 16 search iterations, 32 retrain steps, a checkpoint every step
LONGER = [*TINY, "task.max_train_samples=128", "train.max_steps=null", "train.checkpoint_every=1"]


def cli(args: list[str], out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "run.py", *args, f"hydra.run.dir={out}"], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"run ended before {path.name} appeared: {proc.stderr.read()[-2000:]}")
        if time.time() > deadline:
            proc.kill()
            raise AssertionError(f"{path} did not appear within {timeout}s")
        time.sleep(0.005)


def comparable(result: dict) -> dict:
    return {"ranks": result["ranks"], "search": (result["search"] or {}).get("alphas"),
            "final": result["metrics"]["final"], "per_epoch": [(e["epoch"], e["train_loss"], e["eval"])
                                                              for e in result["metrics"]["per_epoch"]]}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = cli([*LONGER, "method=autolora"], out)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-2000:]
    return json.loads((out / "result.json").read_text())


@pytest.mark.parametrize("phase", ["search", "train"])
def test_sigterm_mid_phase_then_resume_gives_the_same_result(uninterrupted, tmp_path, phase):
    proc = cli([*LONGER, "method=autolora"], tmp_path)
    wait_for(tmp_path / "checkpoints" / f"{phase}.pt", proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    assert "stopped by signal SIGTERM in " + phase in err
    assert not (tmp_path / "result.json").exists() and not (tmp_path / "failed.json").exists()
    state = torch.load(tmp_path / "checkpoints" / f"{phase}.pt", weights_only=False)
    assert not state.get("done"), "the run finished before the signal: the test proved nothing"

    again = cli([*LONGER, "method=autolora"], tmp_path)
    _, err = again.communicate(timeout=600)
    assert again.returncode == 0, err[-2000:]
    resumed = json.loads((tmp_path / "result.json").read_text())
    if phase == "train":
        assert resumed["phases"]["train"]["resumed_from_step"] > 0
    assert comparable(resumed) == comparable(uninterrupted)
    assert not (tmp_path / "checkpoints").exists()  # cleaned once result.json is written


def test_same_seed_is_bit_identical(make_cfg, tmp_path):
    from conftest import compose

    a = run(compose([*TINY, "method=autolora"], tmp_path / "a"))
    b = run(compose([*TINY, "method=autolora"], tmp_path / "b"))
    assert comparable(a) == comparable(b)
    assert a["data"] == b["data"] and a["config_hash"] == b["config_hash"]


def test_finished_run_is_skipped(make_cfg, capsys):
    cfg = make_cfg(*TINY)
    first = run(cfg)
    again = run(cfg)
    assert again["created"] == first["created"]
    assert "already finished" in capsys.readouterr().out


def test_nan_loss_stops_with_step_and_phase_and_writes_failed_json(tmp_path):
    proc = cli([*TINY, "method.lr=1e30", "train.max_steps=null", "train.checkpoint_every=1"], tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 1
    line = [l for l in err.splitlines() if l.startswith("error:")]
    assert len(line) == 1 and "loss is nan" in line[0] and "at step" in line[0]
    failed = json.loads((tmp_path / "failed.json").read_text())
    assert failed["status"] == "failed" and failed["phase"] == "train"
    assert "NonFiniteLossError" in failed["error"]
    assert (tmp_path / "checkpoints" / "train.pt").exists()  # the last good checkpoint is kept


def test_failure_in_setup_is_recorded(make_cfg, tmp_path):
    cfg = make_cfg(*TINY, "task=glue/rte", "task.data_dir=/no/such/dir")
    with pytest.raises(UserError):
        run(cfg)
    failed = json.loads((tmp_path / "run" / "failed.json").read_text())
    assert failed["phase"] == "data" and "/no/such/dir" in failed["error"]


def test_disk_full_on_result_write_keeps_old_file_and_reports_metrics(make_cfg, monkeypatch, capsys, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text('{"old": true}\n')

    real_replace = os.replace

    def full(src, dst):  # the disk fills up exactly when result.json is written
        if Path(dst).name == "result.json":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", full)
    with pytest.raises(UserError, match="No space left on device"):
        run(make_cfg(*TINY))
    assert json.loads((out / "result.json").read_text()) == {"old": True}
    assert '"metrics"' in capsys.readouterr().err  # nothing computed is lost
    assert not [p for p in out.iterdir() if p.name.startswith(".result.json.")]  # no half file left


def test_atomic_write_never_leaves_a_partial_file(tmp_path, monkeypatch):
    target = tmp_path / "x.json"
    results.atomic_write_json(target, {"a": 1})

    def boom(*a, **k):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(atomic.os, "fsync", boom)
    with pytest.raises(OSError):
        results.atomic_write_json(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_atomic_build_folder_builds_once_replaces_a_partial_one_and_keeps_a_concurrent_one(tmp_path):
    """A cache folder (converted model, unpacked archive) appears whole or not at all."""
    target = tmp_path / "cache" / "model"
    complete = lambda folder: (folder / "done").is_file()  # noqa: E731
    builds = []

    def build(folder):
        builds.append(folder)
        (folder / "weights").write_text("w")
        (folder / "done").write_text("")

    target.mkdir(parents=True)
    (target / "partial").write_text("an interrupted earlier build")
    assert atomic.atomic_build_folder(target, build, complete) == target
    assert sorted(p.name for p in target.iterdir()) == ["done", "weights"]   # the partial one was replaced
    assert builds[0] != target and target.stat().st_mode & 0o777 == atomic.FOLDER_MODE
    assert atomic.atomic_build_folder(target, build, complete) == target and len(builds) == 1  # reused

    def fails(folder):
        (folder / "weights").write_text("half")
        raise RuntimeError("conversion failed")

    other = tmp_path / "cache" / "other"
    with pytest.raises(RuntimeError, match="conversion failed"):
        atomic.atomic_build_folder(other, fails, complete)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["model"]  # nothing half-built left

    def loses_a_race(folder):  # another process finishes the same folder while this one builds
        build(folder)
        (other.mkdir(), build(other), (other / "theirs").write_text(""))

    assert atomic.atomic_build_folder(other, loses_a_race, complete) == other
    assert (other / "theirs").is_file()                                      # the finished one is kept
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["model", "other"]


def test_corrupt_checkpoint_falls_back_to_previous_then_fresh(tmp_path, caplog):
    ckpt = Checkpointer(tmp_path, "train", 1, "h")
    ckpt.save({"step": 1})
    ckpt.save({"step": 2})
    ckpt.path.write_bytes(b"not a checkpoint")
    assert ckpt.load()["step"] == 1
    assert "unreadable" in caplog.text
    ckpt.previous.write_bytes(b"garbage")
    assert ckpt.load() is None


def test_checkpoint_of_another_config_is_refused(tmp_path):
    Checkpointer(tmp_path, "train", 1, "config-a").save({"step": 3})
    with pytest.raises(UserError, match="different config"):
        Checkpointer(tmp_path, "train", 1, "config-b").load()


def test_config_hash_ignores_only_what_does_not_change_numbers(make_cfg):
    base = results.config_hash(_container(make_cfg(*TINY)))
    assert results.config_hash(_container(make_cfg(*TINY, "train.progress=true"))) == base
    assert results.config_hash(_container(make_cfg(*TINY, "logger.mode=offline"))) == base
    assert results.config_hash(_container(make_cfg(*TINY, "seed=1"))) != base
    assert results.config_hash(_container(make_cfg(*TINY, "method.r=8"))) != base


def _container(cfg):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg, resolve=True)


def test_model_without_target_modules_names_its_modules(make_cfg):
    with pytest.raises(UserError, match="leaf module names are: .*dense"):
        run(make_cfg(*TINY, "model.target_modules=[q_proj]"))


def test_a_failing_job_does_not_end_the_sweep_but_fails_it(tmp_path):
    proc = subprocess.run([sys.executable, "run.py", "-m", *TINY, "task=glue/rte",
                           "task.data_dir=/no/such/glue," + str(REPO.parent / "shared" / "data" / "glue"),
                           f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=${hydra.job.num}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]  # make reproduce-mini must not report success
    assert "/no/such/glue" in proc.stderr
    assert f"sweep: 1 job(s) failed" in proc.stderr and f"{tmp_path / '0'}: " in proc.stderr
    assert json.loads((tmp_path / "0" / "failed.json").read_text())["phase"] == "data"
    assert json.loads((tmp_path / "1" / "result.json").read_text())["status"] == "completed"
