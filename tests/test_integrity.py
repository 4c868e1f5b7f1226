"""Results integrity (issue 13): no result is ever overwritten, dropped or silently wrong.

Run identity (one folder per config, another config's files refused), sweeps that fail exit
non-zero, NaN and unreadable results in the tables, file modes, costs summed over attempts,
unwritable folders and a full disk, head modules under every method. Each case is a row of
the README's "What happens when..." table.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from autolora_exp import atomic, results
from autolora_exp.checkpoint import Checkpointer
from autolora_exp.errors import UserError
from autolora_exp.pipeline import run
from autolora_exp.preemption import Preempted, StopSignal
from autolora_exp.run_folder import ATTEMPTS_FILE, DIGEST_CHARS, config_digest
from conftest import CONF_DIR, REPO, compose

TINY = ["debug=default", "model=tiny-roberta", "method=lora"]


def hydra_config(*overrides: str):
    """The composed config with its ``hydra`` node, as run.py sees it."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    compose([])  # registers the schemas and the resolver
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


# ---- 1. run identity -------------------------------------------------------------------------


def test_every_config_gets_its_own_folder_and_keeps_it():
    lora = ("model=tiny-roberta", "method=lora")
    real = hydra_config(*lora, "method.lr=1e-4")
    folders = {real.hydra.run.dir, hydra_config(*lora, "method.lr=1e-2").hydra.run.dir,
               hydra_config(*lora, "method.lr=1e-4", "debug=default").hydra.run.dir}
    assert len(folders) == 3  # another lr, or the debug smoke test, never shares the real run's folder
    assert hydra_config(*lora, "method.lr=1e-4").hydra.run.dir == real.hydra.run.dir  # stable
    # keys that do not change a number do not move the folder (a relaunch with a progress bar finds it)
    assert hydra_config(*lora, "method.lr=1e-4", "train.progress=false",
                        "logger.mode=disabled").hydra.run.dir == real.hydra.run.dir
    assert real.hydra.run.dir.startswith("outputs/runs/default/bbc_news/tiny-roberta/lora/seed0-")


def test_folder_digest_is_the_hash_the_run_records(tmp_path):
    cfg = hydra_config(*TINY)
    digest = config_digest(cfg)
    assert cfg.hydra.run.dir.endswith(f"seed0-{digest[:DIGEST_CHARS]}")
    assert cfg.hydra.sweep.subdir.endswith(f"seed0-{digest[:DIGEST_CHARS]}")
    result = run(compose(TINY, tmp_path / "run"))
    assert result["config_hash"] == digest


def test_another_configs_result_is_never_replaced(tmp_path, capsys):
    out = tmp_path / "run"
    first = run(compose(TINY, out))
    before = (out / "result.json").read_bytes()
    with pytest.raises(UserError, match="belongs to another config"):
        run(compose([*TINY, "method.lr=1e-2"], out))  # e.g. hydra.run.dir=<the same folder>
    assert (out / "result.json").read_bytes() == before
    assert not (out / "failed.json").exists()  # the refusal writes nothing into another's folder
    assert run(compose(TINY, out))["created"] == first["created"]  # its own config still finds it


def test_a_result_written_before_config_hash_existed_is_its_configs(tmp_path):
    out = tmp_path / "run"
    first = run(compose(TINY, out))
    legacy = {k: v for k, v in first.items() if k != "config_hash"}  # same schema_version, no config_hash
    (out / "result.json").write_text(json.dumps(legacy))
    before = (out / "result.json").read_bytes()
    with pytest.raises(UserError, match="belongs to another config"):
        run(compose([*TINY, "method.lr=1e-2"], out))
    assert (out / "result.json").read_bytes() == before
    assert run(compose(TINY, out))["created"] == first["created"]  # its own config: finished, not redone


def test_another_configs_checkpoints_are_never_touched(tmp_path):
    out = tmp_path / "run"
    ledger = out / "checkpoints" / ATTEMPTS_FILE
    ledger.parent.mkdir(parents=True)
    ledger.write_text(json.dumps({"config_hash": "f" * 64, "phases": {}}))
    (out / "checkpoints" / "search.pt").write_bytes(b"another config's search")
    with pytest.raises(UserError, match="belongs to another config"):
        run(compose(TINY, out))
    assert (out / "checkpoints" / "search.pt").read_bytes() == b"another config's search"


def test_another_configs_failure_record_is_replaced(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(UserError):
        run(compose([*TINY, "task=glue/rte", "task.data_dir=/no/such/dir"], out))  # failed.json + attempts.json
    result = run(compose(TINY, out))  # a failure record is no result: this config may use the folder
    assert result["phases"]["data"]["attempts"] == 1 and not (out / "failed.json").exists()


def test_a_hand_chosen_folder_of_another_config_is_refused_before_hydra_writes(tmp_path):
    run(compose(TINY, tmp_path))
    record = (tmp_path / "result.json").read_bytes()
    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "config.yaml").write_text("the other run's record\n")
    proc = subprocess.run([sys.executable, "run.py", *TINY, "method.lr=1e-2", f"hydra.run.dir={tmp_path}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith(f"error: {tmp_path / 'result.json'} belongs to another config")
    assert (tmp_path / ".hydra" / "config.yaml").read_text() == "the other run's record\n"
    assert (tmp_path / "result.json").read_bytes() == record


def test_a_folder_another_process_runs_in_is_refused(tmp_path):
    from autolora_exp.run_folder import exclusive

    with exclusive(tmp_path):  # as a second launch of the same sweep would find it
        with pytest.raises(UserError, match=rf"another process \(pid {os.getpid()}\) is running in {tmp_path}"):
            run(compose(TINY, tmp_path))
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "failed.json").exists()
    assert run(compose(TINY, tmp_path))["status"] == "completed"  # released with its holder


def test_a_folder_another_process_runs_in_is_refused_before_hydra_writes(tmp_path):
    from autolora_exp.run_folder import exclusive

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("the running process's record\n")
    with exclusive(tmp_path):  # the first launch, still running
        proc = subprocess.run([sys.executable, "run.py", *TINY, "train.progress=true", f"hydra.run.dir={tmp_path}"],
                              cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (f"error: another process (pid {os.getpid()}) is running in "
                                                    f"{tmp_path}; wait for it to end (its result is this config's) "
                                                    "or stop it")
    assert (tmp_path / ".hydra" / "overrides.yaml").read_text() == "the running process's record\n"


def sweep(args: list[str], sweep_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", "-m", *TINY, *args, f"hydra.sweep.dir={sweep_dir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


@pytest.mark.slow  # two sweeps of four tiny jobs (~30 s on 2 cores)
def test_sweep_over_lr_keeps_both_and_a_failed_job_fails_the_sweep(tmp_path):
    args = ["method.lr=1e-4,1e-2", "task.data_dir=null,/no/such/dir"]
    proc = sweep(args, tmp_path)
    found = sorted(tmp_path.rglob("result.json"))
    lrs = sorted(json.loads(p.read_text())["config"]["method"]["lr"] for p in found)
    assert lrs == [1e-4, 1e-2], proc.stderr[-2000:]  # two configs, two folders, both results kept
    assert len(list(tmp_path.rglob("failed.json"))) == 2
    assert proc.returncode == 1  # make reproduce-mini must not report success
    assert "sweep: 2 job(s) failed" in proc.stderr and proc.stderr.count("has no local data option") >= 4
    # relaunched: exactly the finished jobs are skipped, the failed ones run (and fail) again
    mtimes = {p: p.stat().st_mtime_ns for p in found}
    again = sweep(args, tmp_path)
    assert again.stdout.count("already finished (same config)") == 2 and again.returncode == 1
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("result.json")} == mtimes


@pytest.mark.slow  # submitit's local launcher: each job in its own process (~25 s)
def test_a_failed_job_fails_the_sweep_under_submitit_too(tmp_path):
    proc = sweep(["task.data_dir=null,/no/such/dir", "hydra/launcher=local"], tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    failed = next(tmp_path.rglob("failed.json")).parent
    assert f"sweep: 1 job(s) failed" in proc.stderr and f"  {failed}: " in proc.stderr
    assert len(list(tmp_path.rglob("result.json"))) == 1


# ---- 3. tables: NaN seeds, unreadable files, two configs of one cell ----------------------------


def _tables(tmp_path, runs):
    from test_tables import make_result, md_of, row, write_run

    from autolora_exp.tables import make_tables

    for i, (seed, score, lr) in enumerate(runs):
        result = make_result("table1_glue", "glue/rte", "adalora", seed, score)
        result["config"]["method"]["lr"] = lr
        result["config_hash"] = f"lr{lr}"
        write_run(tmp_path / "runs", result, sub=f"-{i}")
    make_tables(tmp_path / "runs", tmp_path / "out")
    md = md_of(tmp_path / "out", "table1_glue")
    return md, row


@pytest.mark.parametrize("order", [(0, 1, 2), (2, 1, 0), (1, 0, 2)])
def test_a_nan_seed_is_shown_and_not_folded_into_the_median(tmp_path, order):
    scores = {0: 0.70, 1: float("nan"), 2: 0.80}
    md, row = _tables(tmp_path, [(s, scores[s], 5e-4) for s in order])
    header = row(md, "Method")
    assert row(md, "AdaLoRA")[header.index("RTE")] == "75.0 [70.0–80.0] n=2 of 3, 1 NaN"


def test_a_cell_of_nan_seeds_says_so(tmp_path):
    md, row = _tables(tmp_path, [(0, float("nan"), 5e-4), (1, float("nan"), 5e-4)])
    assert row(md, "AdaLoRA")[row(md, "Method").index("RTE")] == "– (2 NaN)"


def test_two_configs_of_one_cell_and_seed_are_two_rows(tmp_path):
    md, row = _tables(tmp_path, [(0, 0.70, 1e-4), (0, 0.60, 1e-2)])
    rte = row(md, "Method").index("RTE")
    assert row(md, "AdaLoRA (lr=0.0001)")[rte] == "70.0 [70.0–70.0] n=1"
    assert row(md, "AdaLoRA (lr=0.01)")[rte] == "60.0 [60.0–60.0] n=1"
    assert "Duplicates" not in (tmp_path / "out" / "README.md").read_text()


def test_a_failed_run_of_another_config_is_not_counted_with_this_one(tmp_path):
    from test_tables import make_result, md_of, row, write_run

    from autolora_exp.tables import make_tables

    result = make_result("table1_glue", "glue/rte", "adalora", 0, 0.70)
    result["config"]["method"]["lr"], result["config_hash"] = 1e-4, "a"
    write_run(tmp_path / "runs", result)
    failed = {"schema_version": 1, "status": "failed", "phase": "train", "error": "NonFiniteLossError: nan",
              "config_hash": "b", "config": {**result["config"], "method": {"name": "adalora", "lr": 1e-2}}}
    atomic.atomic_write_json(tmp_path / "runs" / "other" / "failed.json", failed)
    make_tables(tmp_path / "runs", tmp_path / "out")
    md = md_of(tmp_path / "out", "table1_glue")
    rte = row(md, "Method").index("RTE")
    assert row(md, "AdaLoRA (lr=0.0001)")[rte] == "70.0 [70.0–70.0] n=1"
    assert row(md, "AdaLoRA (lr=0.01)")[rte] == "failed (1)"


def test_an_unreadable_result_is_listed_and_the_build_goes_on(tmp_path, monkeypatch, capsys):
    from test_tables import make_result, write_run

    sys.path.insert(0, str(REPO / "scripts"))
    import make_tables as cli

    good = write_run(tmp_path / "runs", make_result("table1_glue", "glue/rte", "lora", 0, 0.7))
    bad = write_run(tmp_path / "runs", make_result("table1_glue", "glue/rte", "lora", 1, 0.8))
    real_read = Path.read_text

    def read_text(self, *args, **kwargs):  # a colleague's 0600 file (tests run as root: simulated)
        if self == bad:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_read(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    assert cli.main([str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    assert f"unreadable, left out: {bad}: PermissionError" in capsys.readouterr().err
    monkeypatch.undo()
    index = (tmp_path / "out" / "README.md").read_text()
    assert "1 unreadable file(s)" in index and str(bad) in index and good.exists()
    assert "70.0" in (tmp_path / "out" / "table1_glue" / "tables.md").read_text()


# ---- 4. file modes -----------------------------------------------------------------------------


def test_every_file_of_a_run_is_readable_by_others(tmp_path):
    out = tmp_path / "run"
    run(compose([*TINY, "method=autolora", "train.keep_checkpoints=true"], out))
    files = [p for p in out.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"result.json", "search.json", "rank_pattern.json", "search.pt", "train.pt", ATTEMPTS_FILE} <= names
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in files} == {p.name: oct(atomic.FILE_MODE) for p in files}
    assert atomic.FILE_MODE == 0o666 & ~_umask()
    with pytest.raises(UserError):
        run(compose([*TINY, "task=glue/rte", "task.data_dir=/no/such/dir"], tmp_path / "failed"))
    assert (tmp_path / "failed" / "failed.json").stat().st_mode & 0o777 == atomic.FILE_MODE


def _umask() -> int:
    old = os.umask(0)
    os.umask(old)
    return old


# ---- 5. costs over attempts ----------------------------------------------------------------------


class StopAfterFirstStep(StopSignal):
    """A preemption signal that has already arrived: the phase stops after its first step."""

    def __init__(self) -> None:
        super().__init__()
        self.signum = 15


def test_costs_sum_every_attempt_of_a_phase(tmp_path):
    out = tmp_path / "run"
    cfg = compose([*TINY, "train.checkpoint_every=1"], out)
    with pytest.raises(Preempted):
        run(cfg, StopAfterFirstStep())
    first = json.loads((out / "checkpoints" / ATTEMPTS_FILE).read_text())["phases"]
    assert first["train"]["attempts"] == 1 and first["train"]["wall_s"] > 0
    result = run(cfg)  # resumes the train phase
    train = result["phases"]["train"]
    assert result["phases"]["data"]["attempts"] == 2 and train["attempts"] == 2
    assert train["resumed_from_step"] == 1
    assert train["wall_s"] > first["train"]["wall_s"] and train["cpu_s"] > first["train"]["cpu_s"]


def test_the_returned_result_is_the_one_written(tmp_path):
    result = run(compose(TINY, tmp_path))
    written = json.loads((tmp_path / "result.json").read_text())
    assert result["phases"] == written["phases"] and set(written["phases"]) == {"data", "train", "test"}


def test_earlier_attempts_are_read_from_the_ledger_of_the_same_config(tmp_path):
    out = tmp_path / "run"
    cfg = compose(TINY, out)
    digest = results.config_hash(OmegaConf.to_container(cfg, resolve=True))
    ledger = out / "checkpoints" / ATTEMPTS_FILE
    ledger.parent.mkdir(parents=True)
    ledger.write_text(json.dumps({"config_hash": digest, "phases": {
        "train": {"wall_s": 1000.0, "cpu_s": 900.0, "attempts": 3, "peak_rss_mb": 1.0}}}))
    train = run(cfg)["phases"]["train"]
    assert train["attempts"] == 4 and 1000.0 < train["wall_s"] < 1000.0 + 120 and 900.0 < train["cpu_s"]
    assert not ledger.exists()  # goes with the checkpoints once result.json is written


# ---- 6. unwritable folder, full disk --------------------------------------------------------------


@pytest.mark.parametrize("multirun", [False, True])
def test_unwritable_output_folder_is_one_line(tmp_path, multirun):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    proc = subprocess.run([sys.executable, "run.py", *(["-m"] if multirun else []), *TINY, f"{key}={blocker}/run"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: the output folder {blocker}/run cannot be written (Not a directory); "
        f"choose a writable one with {key}=<folder>"]


@pytest.fixture
def file_size_limit():
    """``limit(n)``: from now on this process cannot write past n bytes into a file (EFBIG, what
    a full disk looks like to the writer: the OS refuses mid-file); ``limit.lift()`` restores it.

    Tests lift the cap in a ``finally`` right after the refused write: pytest reports a test before
    its fixtures are torn down, and when its output is redirected to a file (CI logs) that report
    would itself hit the cap (an INTERNALERROR that ends the whole session)."""
    import resource
    import signal

    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)

    class Limit:
        def __call__(self, n: int) -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (n, hard))

        def lift(self) -> None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))

    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    limit = Limit()
    yield limit
    limit.lift()
    signal.signal(signal.SIGXFSZ, previous)


def test_a_checkpoint_the_disk_refuses_is_one_line_and_the_last_one_stays(tmp_path, file_size_limit):
    ckpt = Checkpointer(tmp_path, "train", 1, "h")
    ckpt.save({"step": 1})
    ckpt.save({"step": 2, "w": torch.zeros(10)})
    file_size_limit(4096)  # the real OS error, through torch.save's C++ zip writer
    try:
        with pytest.raises(UserError) as err:
            ckpt.save({"step": 3, "w": torch.zeros(100_000)})
    finally:
        file_size_limit.lift()
    assert str(err.value) == (f"could not write {ckpt.path} (File too large); the last checkpoint is kept "
                              f"({ckpt.path} and {ckpt.previous}): free space and run the same command again "
                              "to resume from it")
    assert ckpt.load()["step"] == 2 and torch.load(ckpt.previous, weights_only=False)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.prev.pt", "train.pt"]  # no partial file


def test_disk_full_while_saving_a_checkpoint_keeps_the_last_one(tmp_path, monkeypatch, file_size_limit):
    out = tmp_path / "run"
    real_save = torch.save
    saves = {"n": 0}

    def save(obj, f, *args, **kwargs):
        saves["n"] += 1
        if saves["n"] == 3:  # the third checkpoint: the disk fills up while it is written
            file_size_limit(64)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    try:
        with pytest.raises(UserError) as err:
            run(compose([*TINY, "train.checkpoint_every=1"], out))
    finally:
        file_size_limit.lift()
    message = str(err.value)
    assert "(File too large); the last checkpoint is kept" in message and "\n" not in message
    monkeypatch.undo()
    kept = Checkpointer(out / "checkpoints", "train", 1, results.config_hash(
        OmegaConf.to_container(compose([*TINY, "train.checkpoint_every=1"], out), resolve=True))).load()
    assert kept["step"] == 2  # the checkpoint before the failed save, intact
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert not (out / "failed.json").exists()  # the disk is still full: recording the failure failed too


# ---- 7. head modules -----------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["lora", "full_ft", "adalora", "adapter", "autolora", "lora_grid"])
def test_missing_head_module_is_an_error_under_every_method(tmp_path, method):
    with pytest.raises(UserError, match=r"model.head_modules: 'no_head' is not in the model; "
                                        r"its top-level modules are: roberta, classifier"):
        run(compose([*TINY, f"method={method}", "model.head_modules=[no_head]"], tmp_path / "run"))


# ---- benchmarks: their planned folders carry the digest too -----------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_bench_reuses_a_finished_run_of_the_same_config_only(tmp_path, legacy):
    from autolora_exp import bench
    from autolora_exp.run_folder import with_digest

    overrides = [*TINY, "method.r=2"]
    planned = tmp_path / "seed0"
    digest = bench.config_digest(overrides, planned, REPO / "conf")
    folder = planned if legacy else with_digest(planned, digest)  # legacy: the layout before the digest
    atomic.atomic_write_json(folder / "result.json", {"status": "completed", "config_hash": digest, "metrics": {}})
    record = bench.run_one(bench.BenchRun({"seed": 0}, overrides, planned), REPO, echo=False)
    assert record.reused and record.folder == folder
    # another config never reuses it: it would run in its own folder (checked without running)
    other = bench.config_digest([*TINY, "method.r=4"], planned, REPO / "conf")
    assert other != digest and results.finished_result(with_digest(planned, other), other) is None


def test_a_failure_beside_a_result_is_dropped_only_when_that_result_is_its_config(tmp_path):
    from test_tables import make_result, write_run

    from autolora_exp.tables.load import load_folder

    result = make_result("table1_glue", "glue/rte", "adalora", 0, 0.70)
    folder = write_run(tmp_path, result).parent
    failure = {"schema_version": 1, "status": "failed", "phase": "train", "error": "RuntimeError: boom",
               "config": result["config"]}
    atomic.atomic_write_json(folder / "failed.json", failure)  # the same config: failed once, then completed
    assert load_folder(tmp_path).failures == []
    other = {**failure, "config": {**result["config"], "method": {"name": "adalora", "lr": 1e-2}}}
    atomic.atomic_write_json(folder / "failed.json", other)  # another config's failure (a copied folder)
    assert [f.error for f in load_folder(tmp_path).failures] == ["RuntimeError: boom"]
    (folder / "result.json").write_text("")  # a result that cannot be read hides no failure either
    col = load_folder(tmp_path)
    assert [f.error for f in col.failures] == ["RuntimeError: boom"] and len(col.unreadable) == 1
