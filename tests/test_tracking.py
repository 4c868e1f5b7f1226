"""W&B as a researcher reads it: complete curves, the summary the tables need, rank tables,
artifacts, one W&B run across a requeue, and a run that never stops for W&B.

The end-to-end tests run real offline W&B (conftest disables W&B; each test turns it back on)
and read the run's own transaction log back (tests/wandb_offline.py), so what is asserted is
what W&B kept after its own rules, including the one that drops a step below the current one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from autolora_exp.errors import UserError
from autolora_exp.pipeline import run
from autolora_exp.preemption import Preempted, StopSignal
from autolora_exp.tracking import Tracker, run_identity, run_summary
from conftest import compose
from wandb_offline import offline_runs, read_offline_run

TINY = ["debug=default", "model=tiny-roberta", "method=lora", "logger.mode=offline"]
# Search 12 iterations (D_tr = 16 rows, batch 8, 6 epochs) logged every 2; retrain 2 epochs of 4
# steps, every step logged. The search's last points (steps 10, 12) lie above the retrain's
# first epoch (step 4): with one shared `step=` W&B would drop that epoch.
SEARCH_THEN_RETRAIN = [*TINY, "method=autolora", "train.max_steps=null", "method.search.epochs=6",
                       "method.search.log_every=2", "train.log_every=1"]


@pytest.fixture(scope="module", autouse=True)
def wandb_home(tmp_path_factory):
    """W&B's staging (offline artifacts) and cache folders in a temporary folder, not in $HOME."""
    with pytest.MonkeyPatch.context() as mp:
        home = tmp_path_factory.mktemp("wandb_home")
        mp.setenv("WANDB_DATA_DIR", str(home / "data"))
        mp.setenv("WANDB_CACHE_DIR", str(home / "cache"))
        yield home


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")


def the_run(folder: Path):
    runs = offline_runs(folder)
    assert len(runs) == 1, [r.path for r in runs]
    return runs[0]


@pytest.fixture(scope="module")
def autolora_offline(tmp_path_factory, wandb_home):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("WANDB_MODE", "offline")
        out = tmp_path_factory.mktemp("autolora_wandb")
        cfg = compose(SEARCH_THEN_RETRAIN, out)
        result = run(cfg)
    return cfg, result, out, the_run(out)


def test_the_reader_sees_what_wandb_keeps(tmp_path):
    """The reader is faithful: a step below the current one is missing, as W&B drops it."""
    import wandb

    r = wandb.init(project="p", mode="offline", dir=str(tmp_path), reinit="finish_previous")
    r.log({"a": 1.0}, step=5)
    r.log({"a": 2.0}, step=4)  # W&B: "Tried to log to step 4 that is less than the current step 5"
    r.log({"a": 3.0}, step=6)
    r.finish()
    (path,) = tmp_path.glob("wandb/offline-run-*/run-*.wandb")
    got = read_offline_run(path)
    assert got.curve("_step", "a") == [(5, 1.0), (6, 3.0)]
    assert got.exit_code == 0


def test_search_and_retrain_curves_are_complete(autolora_offline):
    _, result, out, wb = autolora_offline
    history = json.loads((out / "search.json").read_text())["history"]
    epochs = result["metrics"]["per_epoch"]
    assert max(h["step"] for h in history) > epochs[0]["step"]  # the case W&B used to truncate

    # the search: every alpha log, with its losses, on search/step
    alpha = "search/alpha/roberta.encoder.layer.0.attention.self.query/0"
    assert wb.curve("search/step", alpha) == [
        (h["step"], pytest.approx(h["alphas"]["roberta.encoder.layer.0.attention.self.query"][0])) for h in history]
    for key in ("train_loss", "val_loss"):
        assert wb.curve("search/step", f"search/{key}") == [
            (h["step"], pytest.approx(h[key])) for h in history if h["step"] > 0]

    # the retrain: every epoch on `epoch`, every step on train/step
    assert wb.curve("epoch", "eval/validation/accuracy") == [
        (e["epoch"], pytest.approx(e["eval"]["validation"]["accuracy"])) for e in epochs]
    assert wb.curve("epoch", "epoch/train_loss") == [(e["epoch"], pytest.approx(e["train_loss"])) for e in epochs]
    steps = wb.curve("train/step", "train/loss")
    assert [s for s, _ in steps] == list(range(1, result["phases"]["train"]["steps"] + 1))
    # each point is one step's loss here (train.log_every=1): an epoch's mean is the epoch loss
    per_epoch = len(steps) // len(epochs)
    for i, e in enumerate(epochs):
        window = [v for _, v in steps[i * per_epoch:(i + 1) * per_epoch]]
        assert sum(window) / len(window) == pytest.approx(e["train_loss"], rel=1e-5)
    lrs = [v for _, v in wb.curve("train/step", "train/lr")]
    assert len(lrs) == len(steps) and lrs[-1] < max(lrs)  # the linear decay is visible

    # the axes are declared to W&B
    bound = {(m.glob_name, m.step_metric) for m in wb.metrics if m.glob_name}
    assert bound == {("search/*", "search/step"), ("train/*", "train/step"), ("epoch/*", "epoch"),
                     ("eval/*", "epoch")}


def test_summary_holds_what_the_tables_need(autolora_offline):
    _, result, _, wb = autolora_offline
    s = wb.summary
    m = result["metrics"]
    assert s["status"] == "completed" and s["primary_metric"] == "accuracy"
    assert s["best_epoch"] == m["best_epoch"]
    assert s["final/validation/accuracy"] == pytest.approx(m["final"]["validation"]["accuracy"])
    assert s["best/validation/accuracy"] == pytest.approx(m["best"]["validation"]["accuracy"])
    assert s["test/accuracy"] == pytest.approx(m["test"]["accuracy"])
    assert s["reported_split"] == "test" and s["reported/accuracy"] == s["test/accuracy"]
    assert s["params/trainable"] == result["params"]["trainable"] and s["params/total"] == result["params"]["total"]
    for phase in ("search", "train"):
        for key in ("wall_s", "cpu_s", "peak_rss_mb"):
            assert s[f"phases/{phase}/{key}"] == pytest.approx(result["phases"][phase][key])
    assert s["cost_s"] == pytest.approx(result["phases"]["search"]["wall_s"] + result["phases"]["train"]["wall_s"])
    assert s["search/mean_rank"] == pytest.approx(result["search"]["mean_rank"]) == s["ranks/mean"]
    assert s["search/steps"] == result["search"]["steps"] == 12
    assert wb.exit_code == 0


def test_ranks_table_heatmap_and_artifacts(autolora_offline):
    cfg, result, out, wb = autolora_offline
    (table,) = [row["ranks/table"] for row in wb.history if "ranks/table" in row]
    content = json.loads((wb.path.parent / "files" / table["path"]).read_text())
    assert content["columns"] == ["layer", "block", "projection", "rank"]
    assert {r[0]: r[3] for r in content["data"]} == result["search"]["ranks"]  # rank-0 layers included
    assert {(r[1], r[2]) for r in content["data"]} == {(b, p) for b in (1, 2) for p in ("q", "v")}
    (image,) = [row["ranks/heatmap"] for row in wb.history if "ranks/heatmap" in row]
    assert image["_type"] == "image-file" and (wb.path.parent / "files" / image["path"]).is_file()

    run_id = run_identity(cfg, result["config_hash"]).id
    artifacts = {a.name: (a.type, sorted(e.path for e in a.manifest.contents)) for a in wb.artifacts
                 if a.type in ("result", "search")}
    assert artifacts == {f"result-{run_id}": ("result", ["result.json"]),
                         f"search-{run_id}": ("search", ["rank_pattern.json", "search.json"])}
    assert json.loads(next(a for a in wb.artifacts if a.type == "result").metadata)["method"] == "autolora"

    assert wb.run.run_id == run_id and wb.run.run_group == "default" and wb.run.job_type == "autolora"
    assert wb.run.display_name == "bbc_news/tiny-roberta/autolora/seed0"
    assert set(wb.run.tags) == {"bbc_news", "tiny-roberta", "autolora"}


@pytest.mark.parametrize("phase", ["search", "train"])
def test_requeued_run_continues_the_same_wandb_run(offline, tmp_path, phase):
    cfg = compose([*TINY, "method=autolora", "method.search.log_every=1", "train.log_every=1"], tmp_path)
    stop = StopSignal()
    with pytest.MonkeyPatch.context() as mp:
        if phase == "search":
            stop.signum = 15  # as SIGTERM would: the search stops after its first iteration
        else:  # the retrain stops after its first step
            log_train_step = Tracker.log_train_step

            def then_stop(self, *args):
                log_train_step(self, *args)
                stop.signum = 15

            mp.setattr(Tracker, "log_train_step", then_stop)
        with pytest.raises(Preempted, match=f"in {phase} at step 1"):
            run(cfg, stop)
    result = run(cfg)  # the requeued job

    first, second = offline_runs(tmp_path)
    assert first.run.run_id == second.run.run_id == run_identity(cfg, result["config_hash"]).id
    assert second.run.resume and first.exit_code == 128 + 15 and second.exit_code == 0
    assert first.preempting and not second.preempting  # W&B's mark for a requeued run
    # together the two attempts hold every point of every curve
    alpha = "search/alpha/roberta.encoder.layer.0.attention.self.query/0"
    history = json.loads((tmp_path / "search.json").read_text())["history"]
    assert {s for r in (first, second) for s, _ in r.curve("search/step", alpha)} == {h["step"] for h in history}
    assert {s for r in (first, second) for s, _ in r.curve("train/step", "train/loss")} == {1, 2, 3, 4}
    assert [e for r in (first, second) for e, _ in r.curve("epoch", "eval/validation/accuracy")] == [1]


def test_ctrl_c_finishes_the_wandb_run_without_the_preempting_mark(offline, tmp_path):
    import signal

    stop = StopSignal()
    stop.signum = signal.SIGINT  # as a first Ctrl-C would
    with pytest.raises(Preempted):
        run(compose([*TINY, "method=autolora"], tmp_path), stop)
    wb = the_run(tmp_path)
    assert wb.exit_code == 130 and not wb.preempting


def test_a_failed_run_is_finished_with_its_phase_and_error(offline, tmp_path):
    from autolora_exp.train import NonFiniteLossError

    with pytest.raises(NonFiniteLossError):
        run(compose([*TINY, "method.lr=1e30", "train.max_steps=null"], tmp_path))
    wb = the_run(tmp_path)
    assert wb.exit_code == 1 and wb.summary["status"] == "failed" and wb.summary["failed/phase"] == "train"
    assert wb.summary["failed/error"].startswith("NonFiniteLossError: train: loss is")


def test_a_different_config_or_folder_is_a_different_run(tmp_path, monkeypatch):
    a = compose(TINY, tmp_path / "a")
    ident = run_identity(a, "h1")
    assert run_identity(compose(TINY, tmp_path / "a"), "h1").id == ident.id
    assert run_identity(a, "h2").id != ident.id
    assert run_identity(compose(TINY, tmp_path / "b"), "h1").id != ident.id
    monkeypatch.setenv("WANDB_RUN_ID", "agent123")  # a W&B sweep agent names the run
    assert run_identity(a, "h1").id == "agent123"


def test_wandb_run_id_is_not_shared_by_the_jobs_of_a_hydra_sweep(tmp_path, monkeypatch, caplog):
    from hydra.core.hydra_config import HydraConfig

    from test_integrity import hydra_config

    monkeypatch.setenv("WANDB_RUN_ID", "mine")  # left exported in the shell, then `python run.py -m ...`
    HydraConfig.instance().set_config(hydra_config(*TINY, "hydra.mode=MULTIRUN"))
    try:
        with caplog.at_level(logging.WARNING, logger="autolora_exp.tracking"):
            ids = {run_identity(compose(TINY, tmp_path / job), "h1").id for job in ("a", "b")}
    finally:
        HydraConfig.instance().cfg = None
    assert len(ids) == 2 and "mine" not in ids  # two jobs, two W&B runs
    assert "WANDB_RUN_ID=mine is ignored in a sweep (-m)" in caplog.text


@pytest.mark.parametrize("method, extra, grid", [
    ("lora_grid", ["method.ranks=[1,2]"], True),
    ("adalora", ["train.max_steps=null"], False),
])
def test_every_rank_producing_method_logs_its_ranks(offline, tmp_path, method, extra, grid):
    result = run(compose([*TINY, f"method={method}", *extra], tmp_path))
    wb = the_run(tmp_path)
    (table,) = [row["ranks/table"] for row in wb.history if "ranks/table" in row]
    rows = json.loads((wb.path.parent / "files" / table["path"]).read_text())["data"]
    expected = result["search"]["ranks"] if grid else result["ranks"]
    assert {r[0]: r[3] for r in rows} == expected
    assert any("ranks/heatmap" in row for row in wb.history)
    tables = [row["grid/table"] for row in wb.history if "grid/table" in row]
    assert len(tables) == int(grid)
    if grid:
        data = json.loads((wb.path.parent / "files" / tables[0]["path"]).read_text())["data"]
        assert [r[0] for r in data] == [1, 2]
        assert [r[1] for r in data] == [pytest.approx(result["search"]["per_rank"][r]["value"]) for r in (1, 2)]
        # the search curve: every epoch of every rank (2 each, 2 steps apart) at the grid's steps so far
        assert [s for s, _ in wb.curve("search/step", "search/d_val/accuracy")] == [2, 4, 6, 8]
        assert [r for _, r in wb.curve("search/step", "search/rank")] == [1, 1, 2, 2]
        for r, points in ((1, wb.curve("search/step", "search/d_val/accuracy")[:2]),
                          (2, wb.curve("search/step", "search/d_val/accuracy")[2:])):
            assert max(v for _, v in points) == pytest.approx(result["search"]["per_rank"][r]["value"])


def test_a_wandb_failure_mid_run_never_stops_it(offline, tmp_path, monkeypatch, caplog):
    import wandb

    def broken(*args, **kwargs):
        raise RuntimeError("wandb is down")

    monkeypatch.setattr(wandb, "Table", broken)
    with caplog.at_level(logging.WARNING, logger="autolora_exp.tracking"):
        result = run(compose(TINY, tmp_path))
    assert result["status"] == "completed" and (tmp_path / "result.json").is_file()
    assert "W&B rank table failed (RuntimeError: wandb is down)" in caplog.text


def test_online_without_credentials_still_runs(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("WANDB_MODE", "online")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no W&B settings
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))
    with caplog.at_level(logging.WARNING, logger="autolora_exp.tracking"):
        result = run(compose(TINY, tmp_path / "run"))
    assert result["status"] == "completed"
    assert "W&B init failed" in caplog.text


def test_disabled_writes_no_wandb_files(tmp_path):
    result = run(compose([*TINY, "logger.mode=disabled"], tmp_path))  # conftest: WANDB_MODE=disabled
    assert result["status"] == "completed" and not (tmp_path / "wandb").exists()


@pytest.mark.parametrize("override, needle", [
    ("train.log_every=0", "train.log_every=0"),
    ("logger.mode=onlin", "'onlin'"),
])
def test_bad_logger_settings_fail_with_the_value_named(tmp_path, monkeypatch, override, needle):
    monkeypatch.delenv("WANDB_MODE")
    with pytest.raises(UserError, match=needle):
        run(compose([*TINY, override], tmp_path))


class RecordingRun:
    """The wandb run API the tracker uses, recording each row."""

    def __init__(self):
        self.rows = []

    def log(self, data):
        self.rows.append(dict(data))


def test_train_loss_points_are_means_over_the_interval(tmp_path):
    tracker = Tracker(compose([*TINY], tmp_path).logger, {}, None, str(tmp_path), log_every=3)
    tracker.run = RecordingRun()
    for step in range(1, 9):
        tracker.log_train_step(step, torch.tensor(float(step)), lr=0.1 * step)
    assert tracker.run.rows == [{"train/step": 3, "train/loss": 2.0, "train/lr": pytest.approx(0.3)},
                                {"train/step": 6, "train/loss": 5.0, "train/lr": pytest.approx(0.6)}]


def test_run_summary_of_a_task_without_test_split_reports_the_best_dev_epoch():
    result = {"status": "completed", "config": {"task": {"eval_splits": ["validation"]}},
              "metrics": {"primary": "accuracy", "best_epoch": 1, "test": None,
                          "final": {"validation": {"accuracy": 0.5}}, "best": {"validation": {"accuracy": 0.7}}},
              "params": {"trainable": 10, "total": 100}, "ranks": None, "search": None,
              "phases": {"train": {"wall_s": 2.0, "cpu_s": 1.0, "peak_mem_mb": 3.0}}}
    s = run_summary(result)
    assert s["reported_split"] == "validation" and s["reported/accuracy"] == 0.7
    assert s["cost_s"] == 2.0 and s["phases/train/peak_mem_mb"] == 3.0
    assert not any(k.startswith(("test/", "ranks/", "search/")) for k in s)
