"""scripts/bench_cost.py and scripts/bench_quality.py: plans, summaries, and --quick end to end."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from autolora_exp import bench
from autolora_exp.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cost():
    return load_script("bench_cost")


@pytest.fixture(scope="module")
def quality():
    return load_script("bench_quality")


# ---- helpers ------------------------------------------------------------------------------------


def test_glue_task_and_lists():
    assert bench.glue_task("RTE") == "glue/rte" and bench.glue_task("glue/stsb") == "glue/stsb"
    with pytest.raises(UserError, match="accepted: cola"):
        bench.glue_task("imdb")
    assert bench.parse_list("0, 1,2", "--seeds", int) == [0, 1, 2]
    with pytest.raises(UserError, match="--seeds"):
        bench.parse_list("a,b", "--seeds", int)
    with pytest.raises(UserError, match="empty"):
        bench.parse_list(" , ", "--tasks")
    assert bench.optional_int("none") is None and bench.optional_int("64") == 64


def _targets(node):
    """Every ``_target_`` value in a (nested) config."""
    if isinstance(node, dict):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def test_every_target_a_committed_run_names_still_imports():
    """Committed runs are reused by config comparison: a module they name that was renamed (or
    an object moved) would make every one of them unreusable. Renames keep to modules none names."""
    import importlib

    found = sorted((REPO / "docs" / "bench" / "runs").rglob("result.json"))
    assert found, "no committed runs under docs/bench/runs"
    targets = {t for path in found for t in _targets(json.loads(path.read_text())["config"])}
    assert "autolora_exp.data.glue.load_glue" in targets
    for target in sorted(targets):
        module, _, name = target.rpartition(".")
        assert hasattr(importlib.import_module(module), name), target


def test_stats_median_spread_and_single_seed():
    s = bench.stats([0.5, 0.7, 0.6, float("nan")])
    assert s["median"] == pytest.approx(0.6) and (s["min"], s["max"], s["n"]) == (0.5, 0.7, 3)
    assert s["std"] == pytest.approx(0.1)
    one = bench.stats([2.0])
    assert one["std"] is None and bench.fmt_stat(one) == "2.00"
    assert bench.fmt_stat(s, 100, 1) == "60.0 [50.0–70.0] (n=3 of 4, 1 NaN/inf)"  # the NaN seed is shown, not hidden
    assert bench.stats([]) is None and bench.fmt_stat(None) == "-"


def test_compose_digest_matches_what_the_pipeline_records(tmp_path):
    """The skip check hashes the config exactly as pipeline.run does (output_dir is not hashed)."""
    from omegaconf import OmegaConf

    from autolora_exp import results

    overrides = ["debug=default", "model=tiny-roberta", "method=lora", "method.r=2"]
    a = bench.config_digest(overrides, tmp_path / "a", REPO / "conf")
    b = bench.config_digest(overrides, tmp_path / "b", REPO / "conf")
    cfg = bench.compose_config(overrides, tmp_path / "a", REPO / "conf")
    assert a == b == results.config_hash(OmegaConf.to_container(cfg, resolve=True))
    assert a != bench.config_digest(overrides[:-1] + ["method.r=4"], tmp_path / "a", REPO / "conf")
    with pytest.raises(UserError, match="does not compose"):
        bench.compose_config(["method.rr=4"], tmp_path, REPO / "conf")


def test_portable_data_dir_is_relative_to_the_repository(tmp_path):
    repo = tmp_path / "wt"
    (tmp_path / "shared" / "data" / "glue").mkdir(parents=True)
    repo.mkdir()
    assert bench.portable_data_dir(tmp_path / "shared" / "data" / "glue", repo) == "../shared/data/glue"
    assert bench.portable_data_dir(Path("../shared/data/glue"), repo) == "../shared/data/glue"
    # a ../shared that is a link to the data elsewhere (a clone beside a linked folder) records the same path
    (tmp_path / "elsewhere" / "data" / "glue").mkdir(parents=True)
    (tmp_path / "shared").rename(tmp_path / "old")
    (tmp_path / "shared").symlink_to(tmp_path / "elsewhere")
    assert bench.portable_data_dir(Path("../shared/data/glue"), repo) == "../shared/data/glue"


def test_machine_info_names_cpu_cores_and_load():
    m = bench.machine_info()
    assert m["nproc"] >= 1 and m["torch"] and isinstance(m["loadavg"], list)
    assert str(m["nproc"]) in bench.machine_line(m)


# ---- bench_cost ---------------------------------------------------------------------------------


def test_cost_plan_gives_every_method_the_same_data_and_schedule(cost, tmp_path, shared_data):
    args = cost.parse_args(["--train-samples", "64", "--epochs", "2", "--search-epochs", "1", "--seeds", "0,1",
                            "--grid", "1,4", "--out", str(tmp_path), "--device", "cpu"])
    runs, settings = cost.plan(args)
    n = len(cost.METHODS)
    assert [(r.key["seed"], r.key["method"]) for r in runs][:n] == [(0, m) for m in cost.METHODS]
    assert len(runs) == 2 * n and len({r.folder for r in runs}) == 2 * n
    shared = [o for o in runs[0].overrides if not o.startswith(("method", "seed"))]
    for r in runs:
        assert all(o in r.overrides for o in shared)  # same task, data, epochs, batch, length, device
    by = {r.key["method"]: r.overrides for r in runs if r.key["seed"] == 0}
    assert "method.search.epochs=1" in by["autolora"] and "method.ranks=[1,4]" in by["lora_grid"]
    assert "method.r=4" in by["lora"] and settings["search_epochs"] == 1
    assert {"method.search.epochs=1", "method.search.patience=3", "method.search.log_every=4"} <= set(
        by["autolora_converge"])
    # the fast preset keeps its own search budget: --search-epochs does not reach it
    assert "method=autolora_fast" in by["autolora_fast"]
    assert not any(o.startswith("method.search.") for o in by["autolora_fast"])
    assert all("task.max_train_samples=64" in o for o in by.values())


def test_cost_bad_method_and_bad_override_fail_in_one_line(cost, tmp_path, shared_data, capsys):
    with pytest.raises(UserError, match="accepted: adalora"):
        cost.plan(cost.parse_args(["--methods", "lora,dora", "--out", str(tmp_path)]))
    assert cost.main(["--override", "train.nope=1", "--methods", "lora", "--out", str(tmp_path)]) == 2
    assert "does not compose" in capsys.readouterr().err


def _cost_entry(method, seed, search_s, train_s, peak, steps=0, train_steps=10, d_tr=64, ranks=None, converged=None):
    return {"method": method, "seed": seed, "status": "completed", "process": {"wall_s": search_s + train_s + 5,
                                                                                "cpu_s": (search_s + train_s) / 2},
            "metric": {"best": 0.5},
            "cost": {"search_s": search_s, "train_s": train_s, "cost_s": search_s + train_s, "peak_mb": peak,
                     "peak_extra_mb": peak / 2, "memory": "cpu_peak_rss", "search_steps": steps, "train_steps": train_steps,
                     "passes_per_iteration": 5 if steps else None},
            "search": {"split": {"d_tr": {"rows": d_tr}}, "steps": steps, "converged_at": converged,
                       "ranks": ranks, "mean_rank": sum(ranks.values()) / len(ranks) if ranks else None}
            if steps else None}


def test_cost_ratios_targets_and_search_epoch_extrapolation(cost):
    entries = []
    for seed, scale in ((0, 1.0), (1, 2.0)):  # a slower machine for seed 1: ratios must not move
        entries += [_cost_entry("adalora", seed, 0, 10 * scale, 1000),
                    _cost_entry("lora", seed, 0, 9 * scale, 900),
                    _cost_entry("lora_grid", seed, 25 * scale, 10 * scale, 1100, steps=20),
                    _cost_entry("autolora", seed, 20 * scale, 10 * scale, 1200, steps=4, d_tr=64,
                                ranks={"a": 2, "b": 3}),
                    _cost_entry("autolora_converge", seed, 5 * scale, 10 * scale, 1200, steps=1, d_tr=64,
                                ranks={"a": 2, "b": 4}, converged=1),
                    _cost_entry("autolora_fast", seed, 1 * scale, 10 * scale, 1200, steps=1, d_tr=32,
                                ranks={"a": 0, "b": 4})]
    out = cost.summarise(entries, list(cost.METHODS), batch_size=16)
    assert out["targets"]["autolora_converge_vs_adalora"]["ratio_median"] == pytest.approx(1.5)
    assert out["targets"]["autolora_converge_vs_adalora"]["met"] is True
    assert out["targets"]["autolora_converge_vs_lora_grid"]["ratio_median"] == pytest.approx(15 / 35)
    assert out["converge"][0] == {"row": "autolora_converge", "seed": 0, "converged_at": 1, "stop_reason": None,
                                  "steps": 1, "full_steps": 4, "mean_rank": 3.0, "full_mean_rank": 2.5,
                                  "rank_distance": 0.5, "layers_same_rank": 1, "layers": 2}
    fast = [c for c in out["converge"] if c["row"] == "autolora_fast"]
    assert len(fast) == 2 and fast[0]["rank_distance"] == pytest.approx((2 + 1) / 2) and fast[0]["layers_same_rank"] == 0
    # issue 19's ratios: to the grid and to one LoRA run, in phase seconds and in process CPU seconds
    assert out["summary"]["autolora_fast"]["ratio_to_lora_grid"]["median"] == pytest.approx(11 / 35)
    assert out["summary"]["autolora_fast"]["ratio_to_lora"]["median"] == pytest.approx(11 / 9)
    assert out["summary"]["autolora_fast"]["cpu_ratio_to_lora"]["median"] == pytest.approx(5.5 / 4.5)
    assert out["targets"]["autolora_fast_vs_lora_grid"]["met"] is True
    assert out["targets"]["autolora_fast_vs_lora"]["met"] is False  # 1.22x > 1.2x
    assert out["targets"]["autolora_converge_vs_lora"]["ratio_median"] == pytest.approx(15 / 9)
    md = cost.markdown({"settings": {"methods": list(cost.METHODS), "task": "glue/rte", "model": "m",
                                     "train_samples": 64, "eval_samples": None, "max_length": 32, "batch_size": 16,
                                     "epochs": 1, "search_epochs": 1, "grid": [1], "seeds": [0, 1], "device": "cpu",
                                     "overrides": [], "autolora_overrides": []},
                        "runs": entries, "machine": {}, "loadavg_end": [0, 0, 0], "bench_wall_s": 1,
                        "runs_computed": 0, "runs_reused": 0, "runs_process_wall_s": 1, "command": "c", **out})
    assert "/ LoRA (CPU)" in md and "Target autolora fast vs lora <= 1.2x: 1.22x (MISSED" in md
    assert out["summary"]["autolora"]["ratio_to_adalora"]["median"] == pytest.approx(3.0)
    assert out["summary"]["lora"]["ratio_to_adalora"]["median"] == pytest.approx(0.9)
    assert out["summary"]["autolora"]["memory_ratio_to_adalora"]["median"] == pytest.approx(1.2)
    assert out["targets"]["autolora_vs_lora_grid"]["ratio_median"] == pytest.approx(30 / 35)
    assert out["targets"]["autolora_vs_lora_grid"]["met"] is False
    assert out["targets"]["autolora_vs_adalora"]["met"] is False
    assert out["targets"]["autolora_vs_adalora"]["process_cpu_ratio"]["median"] == pytest.approx(3.0)
    d = out["diagnosis"]
    # 4 iterations = 1 epoch of 64 rows at batch 16; 20 s per epoch; budget 1.5 * 10 - 10 = 5 s
    assert d["search_epochs_measured"]["median"] == pytest.approx(1.0)
    assert d["search_epochs_to_meet"]["autolora_vs_adalora"]["median"] == pytest.approx(0.25)
    assert d["search_epochs_to_meet"]["autolora_vs_lora_grid"]["median"] == pytest.approx((0.35 * 35 - 10) / 20)
    assert d["search_share"]["median"] == pytest.approx(20 / 30) and d["passes_per_iteration"] == [5]


def test_cost_summary_tolerates_a_missing_reference(cost):
    entries = [_cost_entry("autolora", 0, 20, 10, 1200, steps=4),
               {"method": "adalora", "seed": 0, "status": "failed", "error": "boom", "process": {}}]
    out = cost.summarise(entries, list(cost.METHODS), batch_size=16)
    assert out["targets"]["autolora_vs_adalora"]["met"] is None
    assert out["summary"]["adalora"]["cost_s"] is None


# ---- bench_quality ------------------------------------------------------------------------------


def test_quality_plan_is_seed_major_with_one_folder_per_run(quality, tmp_path, shared_data):
    args = quality.parse_args(["--tasks", "rte,stsb", "--seeds", "0,1", "--search-epochs", "1",
                               "--out", str(tmp_path), "--device", "cpu"])
    runs, settings = quality.plan(args)
    per_seed = 2 * len(quality.VARIANTS)
    assert len(runs) == 2 * per_seed and len({r.folder for r in runs}) == len(runs)
    assert {r.key["seed"] for r in runs[:per_seed]} == {0}
    lora8 = next(r for r in runs if r.key["method"] == "lora_r8")
    assert "method.r=8" in lora8.overrides and "task.max_train_samples=null" in lora8.overrides
    auto = next(r for r in runs if r.key["method"] == "autolora")
    assert "method.search.epochs=1" in auto.overrides
    assert not any("search" in o for o in lora8.overrides)
    assert settings["tasks"] == ["glue/rte", "glue/stsb"]
    # portable configs: the data folder as seen from the repository, so committed results resume elsewhere
    assert f"task.data_dir={bench.portable_data_dir(REPO.parent / 'shared' / 'data' / 'glue', REPO)}" in lora8.overrides
    assert bench.committed_store(args) == (tmp_path / "runs", REPO / "docs" / "bench" / "runs")
    assert quality.parse_args(["--quick"]).committed is None  # smoke runs stay out of the store
    assert quality.parse_args(["--committed", "none"]).committed is None


def _q_entry(task, method, seed, value, metric="accuracy"):
    return {"task": task, "method": method, "seed": seed, "status": "completed", "metric": metric,
            "best": {metric: value, "loss": 0.1}, "final": {metric: value - 0.01}, "data": {"train": 64},
            "params": {"trainable": 100}, "mean_rank": None, "cost_s": 1.0, "cpu_s": 1.0}


def test_quality_median_spread_average_and_targets(quality):
    methods = ["lora_r4", "adalora", "autolora"]
    entries = []
    for seed, noise in enumerate((0.0, 0.02, -0.02)):
        entries += [_q_entry("glue/rte", "lora_r4", seed, 0.60 + noise), _q_entry("glue/rte", "adalora", seed, 0.62 + noise),
                    _q_entry("glue/rte", "autolora", seed, 0.64 + noise),
                    _q_entry("glue/stsb", "lora_r4", seed, 0.80 + noise, "spearmanr"),
                    _q_entry("glue/stsb", "adalora", seed, 0.82 + noise, "spearmanr"),
                    _q_entry("glue/stsb", "autolora", seed, 0.78 + noise, "spearmanr")]
    entries.append(_q_entry("glue/cola", "lora_r4", 0, 0.3, "matthews_correlation"))  # cola incomplete
    out = quality.summarise(entries, ["glue/rte", "glue/stsb", "glue/cola"], methods)
    rte = out["per_task"]["glue/rte"]["autolora"]
    assert rte["best"]["median"] == pytest.approx(0.64) and rte["best"]["min"] == pytest.approx(0.62)
    assert rte["final"]["median"] == pytest.approx(0.63) and rte["best"]["n"] == 3
    assert out["per_task"]["glue/cola"]["adalora"] is None
    avg = out["average"]
    assert avg["autolora"]["tasks"] == ["glue/rte", "glue/stsb"]  # the tasks every method finished
    assert avg["autolora"]["best"] == pytest.approx(0.71) and avg["adalora"]["best"] == pytest.approx(0.72)
    assert out["targets"]["autolora_ge_lora_r4"]["met"] is True
    assert out["targets"]["autolora_ge_adalora"]["met"] is False
    lines = quality.target_lines(out["targets"])
    assert lines == ["- Target AutoLoRA average >= LoRA r=4: 71.00 vs 70.00 (met)",
                     "- Target AutoLoRA average >= AdaLoRA: 71.00 vs 72.00 (MISSED)"]


def test_quality_target_near_tie_prints_the_digits_that_decide_it(quality):
    """The GLUE evidence run (docs/bench/quality_glue_evidence.json): equal to one decimal."""
    tie = {"autolora_ge_lora_r4": {"autolora": 0.52759, "lora_r4": 0.52774, "met": False, "unfinished_runs": 0}}
    assert quality.target_lines(tie) == ["- Target AutoLoRA average >= LoRA r=4: 52.76 vs 52.77 (MISSED)"]


# ---- search_stop (replay of the stopping rule) --------------------------------------------------


def test_search_stop_replay_matches_a_search_that_really_stopped(tmp_path):
    """The replay on a full search's history fires where a search run with that rule stopped."""
    from autolora_exp.methods.autolora import SearchConfig, inject_selection_lora, search
    from autolora_tiny import batches, tiny_roberta

    def tiny_search(**kw):
        model = tiny_roberta(layers=2, dropout=0.0, seed=3)
        inject_selection_lora(model, ["query", "value"], k=4, trainable_extra=["classifier"])
        import torch

        torch.manual_seed(7)
        cfg = SearchConfig(k=4, lr_selection=0.05, lr_weights=1e-2, epochs=10, log_every=1, **kw)
        return search(model, batches(4, 1), batches(2, 2), cfg, progress=False)

    full, stopped = tiny_search(), tiny_search(patience=2, stop_tolerance=0.25)
    assert stopped.converged_at is not None
    path = tmp_path / "run" / "search.json"
    path.parent.mkdir()
    path.write_text(json.dumps(full.to_dict()))
    script = load_script("search_stop")
    assert script.main([str(path), "--patience", "2", "--tolerance", "0.25", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "search_stop.json").read_text())
    (a,) = report["searches"].values()
    (row,) = a["stops"]
    assert row["fires_at"] == stopped.steps and row["reason"] == stopped.stop_reason
    assert row["mean_rank"] == pytest.approx(stopped.mean_rank)
    assert a["path"][-1] == {"step": full.steps, "rank_distance": 0.0, "layers_same_rank": 4,
                             "mean_rank": full.mean_rank}
    assert "Reproduce: `python scripts/search_stop.py" in (tmp_path / "search_stop.md").read_text()
    assert script.main([str(tmp_path / "nope.json"), "--out", str(tmp_path)]) == 2


# ---- end to end (subprocess runs of the real pipeline) ------------------------------------------


@pytest.mark.slow
def test_cost_quick_writes_json_and_reuses_finished_runs(cost, tmp_path, shared_data):
    assert cost.main(["--quick", "--out", str(tmp_path)]) == 0
    report = json.loads((tmp_path / "cost_quick.json").read_text())
    for key in ("settings", "machine", "runs", "summary", "targets", "diagnosis", "bench_wall_s", "loadavg_end"):
        assert key in report
    assert report["runs_computed"] == len(cost.METHODS) and report["settings"]["model"] == "tiny-roberta"
    for m in cost.METHODS:
        s = report["summary"][m]
        assert s["cost_s"]["median"] > 0 and s["peak_mb"]["median"] > 0 and s["ratio_to_adalora"]["n"] == 1
    auto = next(e for e in report["runs"] if e["method"] == "autolora")
    # one search epoch over D_tr = 16 of the 32 rows at batch 8 (max_steps = 4 does not bind)
    assert auto["cost"]["search_s"] > 0 and auto["cost"]["search_steps"] == 2
    assert auto["search"]["split"]["d_tr"]["rows"] == 16
    assert auto["cost"]["passes_per_iteration"] >= 2 and auto["process"]["cpu_s"] > 0
    grid = next(e for e in report["runs"] if e["method"] == "lora_grid")
    assert set(grid["grid"]["per_rank"]) == {"1", "2"} and grid["cost"]["search_s"] > 0
    assert report["summary"]["adalora"]["ratio_to_adalora"]["median"] == pytest.approx(1.0)
    assert set(report["targets"]) == {f"{a}_vs_{b}" for a in cost.AUTOLORA_ROWS for b in ("lora_grid", "adalora", "lora")}
    fast = next(e for e in report["runs"] if e["method"] == "autolora_fast")
    # first order (2 passes) on half of D_tr = 8 rows at batch 8: one iteration
    assert fast["cost"]["passes_per_iteration"] == 2 and fast["search"]["steps"] == 1
    assert fast["search"]["split"]["d_tr"]["rows"] == 8 and fast["search"]["split"]["d_tr"]["subsample"] == 0.5
    assert report["summary"]["autolora_fast"]["cpu_ratio_to_lora"]["n"] == 1
    converge = next(e for e in report["runs"] if e["method"] == "autolora_converge")
    assert converge["search"]["steps"] <= auto["search"]["steps"]
    assert "Reproduce" in (tmp_path / "cost_quick.md").read_text()
    # resumable: a second call recomputes nothing and reports the same costs
    assert cost.main(["--quick", "--out", str(tmp_path)]) == 0
    again = json.loads((tmp_path / "cost_quick.json").read_text())
    assert again["runs_reused"] == len(cost.METHODS) and again["runs_computed"] == 0
    assert again["summary"]["autolora"]["cost_s"] == report["summary"]["autolora"]["cost_s"]
    assert next(e for e in again["runs"] if e["method"] == "autolora")["process"]["cpu_s"] > 0


@pytest.mark.slow
def test_quality_quick_writes_json_with_official_metrics(quality, tmp_path, shared_data):
    argv = ["--quick", "--methods", "lora_r4,adalora,autolora", "--out", str(tmp_path)]
    assert quality.main(argv) == 0
    report = json.loads((tmp_path / "quality_quick.json").read_text())
    for key in ("settings", "machine", "runs", "per_task", "average", "targets", "data_sizes"):
        assert key in report
    cell = report["per_task"]["glue/rte"]["autolora"]
    assert cell["metric"] == "accuracy" and 0.0 <= cell["best"]["median"] <= 1.0
    assert report["data_sizes"]["glue/rte"] == {"train": 32, "validation": 16}
    assert report["average"]["autolora"]["tasks"] == ["glue/rte"]
    assert set(report["targets"]) == {"autolora_ge_lora_r4", "autolora_ge_adalora"}
    assert all(t["met"] in (True, False) for t in report["targets"].values())


def test_report_names_finished_runs_whose_process_record_is_missing(tmp_path):
    """A benchmark SIGKILLed between a run's result.json and its bench.json leaves a finished run
    with no process record: the wall-time sum must say it leaves that run out, not count it as 0 s."""
    records = [bench.RunRecord({"seed": 0}, tmp_path / "a", "completed", reused=True, process={"wall_s": 100.0}),
               bench.RunRecord({"seed": 1}, tmp_path / "b", "completed", reused=True, process={}),
               bench.RunRecord({"seed": 2}, tmp_path / "c", "not_run")]
    assert bench.write_report("t", "s.py", [], {}, {"loadavg": [0, 0, 0]}, 0.0, records, [], {},
                              bench.process_wall_text, tmp_path, "r", echo=False) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["runs_process_wall_s"] == 100.0 and report["runs_without_process_record"] == 1
    assert (tmp_path / "r.md").read_text() == ("the runs' process wall time 100 s in all (1 finished run(s) "
                                                "without a process record in bench.json: not in it)")
    assert bench.process_wall_text({"runs_process_wall_s": 5.4}) == "the runs' process wall time 5 s in all"


@pytest.mark.slow
def test_a_failed_run_is_recorded_and_the_benchmark_goes_on(tmp_path):
    run = bench.BenchRun({"method": "lora", "seed": 0},
                         ["debug=default", "model=tiny-roberta", "task=glue/rte", f"task.data_dir={tmp_path / 'none'}"],
                         tmp_path / "run")
    rec = bench.run_one(run, REPO, echo=False)
    assert rec.status == "failed" and str(tmp_path / "none") in rec.error
    assert rec.folder.parent == tmp_path and rec.folder.name.startswith("run-")  # run-<config digest>
    assert rec.process["returncode"] != 0 and (rec.folder / "failed.json").exists()


def test_step_bench_tiny_model_counts_passes_and_writes_json(tmp_path):
    """scripts/bench_step.py end to end on tiny-roberta: every configuration timed, passes as
    documented (darts 4 with the one-sided difference, central 5, reuse 3), targets judged."""
    import subprocess

    cmd = [sys.executable, str(REPO / "scripts" / "bench_step.py"), "--model", "tiny-roberta", "--batch-size", "2",
           "--seq-len", "16", "--repeats", "1", "--warmup", "0", "--threads", "1", "--no-memory", "--out", str(tmp_path)]
    subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=300)
    step = json.loads((tmp_path / "step.json").read_text())
    assert step["passes"] == {"lora": 1, "inner": 1, "darts": 4, "darts_central": 5, "darts_reuse": 3,
                              "first_order": 2, "exact": 4}
    assert set(step["targets_met"]) == {"darts", "darts_reuse", "first_order", "exact"}
    assert "| darts_central | 5 |" in (tmp_path / "step.md").read_text()


def test_quality_settings_from_the_learning_curves(quality, tmp_path, shared_data):
    curves = tmp_path / "curves.json"
    chosen = {"pooling": "mean", "train_samples": 512, "max_length": 64, "lr": 0.0005, "epochs": 7}
    curves.write_text(json.dumps({"per_task": {"glue/stsb": {"status": "chosen", "chosen": chosen},
                                               "glue/rte": {"status": "no plateau", "chosen": None}}}))
    args = quality.parse_args(["--settings", str(curves), "--seeds", "0,1,2,3,4", "--out", str(tmp_path),
                               "--device", "cpu"])
    runs, settings = quality.plan(args)
    assert settings["tasks"] == ["glue/stsb"] and len(runs) == 5 * len(quality.VARIANTS)
    lora2 = next(r for r in runs if r.key["method"] == "lora_r2")
    for o in ("task.max_length=64", "train.epochs=7", "task.max_train_samples=512", "model.pooling=mean",
              "method.lr=0.0005", "method.r=2"):
        assert o in lora2.overrides
    full = next(r for r in runs if r.key["method"] == "full_ft")
    assert not any(o.startswith("method.lr") for o in full.overrides)  # full FT keeps its own lr
    authors = next(r for r in runs if r.key["method"] == "autolora_authors")
    assert not any("search.epochs" in o for o in authors.overrides)  # the preset's own search length
    bad = quality.parse_args(["--settings", str(curves), "--tasks", "rte", "--out", str(tmp_path)])
    with pytest.raises(UserError, match=r"no chosen setting for \['glue/rte'\]; it has: glue/stsb"):
        quality.plan(bad)


def test_quality_cost_in_cpu_hours_counts_the_finished_and_estimates_the_rest(quality):
    def finished(task, method, seed, cpu_s):
        return _q_entry(task, method, seed, 0.7) | {"cpu_s": cpu_s}

    def left(task, method, seed):
        return {"task": task, "method": method, "seed": seed, "status": "not_run"}

    entries = [finished("glue/rte", "lora_r4", 0, 600.0), finished("glue/rte", "lora_r4", 1, 1200.0),
               finished("glue/rte", "lora_r4", 2, 900.0), left("glue/rte", "lora_r4", 3),
               finished("glue/rte", "autolora", 0, 3600.0), left("glue/rte", "autolora", 1),
               left("glue/stsb", "lora_r4", 0)]  # a cell with no finished run: counted, not guessed
    summary = quality.summarise(entries, ["glue/rte", "glue/stsb"], ["lora_r4", "autolora"])
    target = summary["targets"]["autolora_ge_lora_r4"]  # not judged on a partial benchmark
    assert target["met"] is None and target["unfinished_runs"] == 3
    cost = summary["cost"]
    assert cost["planned_runs"] == 7 and cost["finished_runs"] == 4 and cost["left_runs"] == 3
    assert cost["finished_cpu_h"] == pytest.approx((600 + 1200 + 900 + 3600) / 3600)
    assert cost["left_estimated_cpu_h"] == pytest.approx((900 + 3600) / 3600)  # each at its cell's median
    assert cost["left_without_estimate"] == 1
    lines = "\n".join(quality.cost_lines(cost, ["glue/rte", "glue/stsb"], ["lora_r4", "autolora"]))
    assert "| LoRA r=4 | 900 | - |" in lines and "Finished: 4 of 7 runs, 1.75 CPU h." in lines
    assert "Left: 3 runs, about 1.25 CPU h" in lines and "about 3.00 CPU h plus those." in lines


def test_quality_no_compute_starts_nothing_and_reports_what_is_left(quality, tmp_path, shared_data):
    argv = ["--quick", "--methods", "lora_r4,autolora", "--out", str(tmp_path), "--no-compute"]
    assert quality.main(argv) == 0  # nothing failed: not run is not a failure
    report = json.loads((tmp_path / "quality_quick.json").read_text())
    assert [e["status"] for e in report["runs"]] == ["not_run", "not_run"]
    assert not list((tmp_path / "runs").rglob("result.json"))
    assert report["cost"]["left_runs"] == 2 and report["cost"]["left_without_estimate"] == 2
    md = (tmp_path / "quality_quick.md").read_text()
    assert "(this report: built with --no-compute from the finished runs)" in md


def test_quality_paired_differences_against_lora_r4(quality):
    entries = []
    for seed, up in enumerate((0.01, 0.03, 0.02, 0.02, 0.02)):
        entries += [_q_entry("glue/stsb", "lora_r4", seed, 0.7, "spearmanr"),
                    _q_entry("glue/stsb", "autolora", seed, 0.7 + up, "spearmanr")]
    out = quality.summarise(entries, ["glue/stsb"], ["lora_r4", "autolora"])
    diff = out["paired"]["autolora - lora_r4"]["glue/stsb"]
    assert diff["seeds"] == [0, 1, 2, 3, 4] and diff["mean"] == pytest.approx(0.02) and diff["wins"] == 5
    assert diff["separated"] and 0.01 - 1e-9 <= diff["ci"][0] < diff["ci"][1] <= 0.03 + 1e-9
    three = quality.summarise(entries[:6], ["glue/stsb"], ["lora_r4", "autolora"])  # 3 seeds: no interval
    assert three["paired"]["autolora - lora_r4"]["glue/stsb"]["ci"] is None
    assert not three["paired"]["autolora - lora_r4"]["glue/stsb"]["separated"]
