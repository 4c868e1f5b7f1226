"""The search budget curve (issue 19): a shorter search is a prefix of a longer one, and the
retrain of a truncated search's ranks (``method=lora method.rank_pattern_file=...``) is the
retrain an AutoLoRA run with those ranks does."""

from __future__ import annotations

import json

import pytest

from autolora_exp.errors import UserError
from autolora_exp.methods.autolora.threshold import threshold_ranks
from autolora_exp.pipeline import run

#: tiny RoBERTa, 32 training rows: D_tr 16 rows = 2 search iterations per epoch at batch 8; no
#: step cap (debug=default caps train and search at 4 steps); beta moves fast enough to change ranks
TINY = ["debug=default", "model=tiny-roberta", "train.max_steps=null", "train.epochs=1"]
SEARCH = ["method=autolora", "method.search.lr_selection=0.3", "method.search.log_every=1",
          "method.search.max_steps=null"]


def _autolora(tmp_path, name, epochs):
    from conftest import compose

    out = tmp_path / name
    result = run(compose([*TINY, *SEARCH, f"method.search.epochs={epochs}"], out))
    return result, json.loads((out / "search.json").read_text()), out


@pytest.fixture(scope="module")
def searches(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("budget")
    return {epochs: _autolora(tmp, f"e{epochs}", epochs) for epochs in (2, 4)}


def test_a_shorter_search_is_the_prefix_of_a_longer_one(searches):
    """Nothing in the search depends on its length (no lr schedule; D_tr's order is seeded by
    (seed, epoch)): the E-epoch search's beta is the 2E-epoch search's beta after E epochs."""
    (short, short_search, _), (long, long_search, _) = searches[2], searches[4]
    assert short_search["steps"] == 4 and long_search["steps"] == 8
    assert long_search["history"][: len(short_search["history"])] == short_search["history"]
    at_short = next(h for h in long_search["history"] if h["step"] == short_search["steps"])
    assert at_short["selection_logits"] == short_search["selection_logits"]
    rule = "softmax"
    assert threshold_ranks(at_short["selection_logits"], rule) == short["search"]["ranks"]
    # not vacuous: beta moved on after the shorter search ended
    assert long_search["selection_logits"] != short_search["selection_logits"]


def test_lora_with_the_found_ranks_retrains_exactly_as_autolora(searches, tmp_path):
    from conftest import compose

    found, _, out = searches[2]
    lora = run(compose([*TINY, "method=lora", f"method.rank_pattern_file={out / 'rank_pattern.json'}"],
                       tmp_path / "lora"))
    assert lora["ranks"] == found["ranks"] == found["search"]["ranks"]
    assert lora["params"] == found["params"]
    assert lora["metrics"]["per_epoch"] == found["metrics"]["per_epoch"]  # losses and dev scores, every epoch


def test_rank_pattern_file_refuses_a_missing_file_and_a_second_pattern(tmp_path):
    from autolora_exp.methods.lora import LoRA

    with pytest.raises(UserError, match="does not exist"):
        LoRA(rank_pattern_file=str(tmp_path / "missing.json"))
    path = tmp_path / "ranks.json"
    path.write_text(json.dumps({"a.query": 2, "a.value": 0}))
    with pytest.raises(UserError, match="leave method.rank_pattern"):
        LoRA(rank_pattern_file=str(path), rank_pattern={"a\\.query": 1})
    lora = LoRA(rank_pattern_file=str(path))
    assert lora.target_modules == ["a.query"] and lora.r == 2  # a rank-0 layer gets no LoRA


# ---- the budget curve's arithmetic (src/autolora_exp/search_budget.py) and its script -----------

from pathlib import Path  # noqa: E402

from autolora_exp import bench  # noqa: E402
from autolora_exp.methods.autolora import search_budget as sb  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
LAYERS = ["l0.query", "l0.value"]


def test_budget_step_must_be_an_alpha_log():
    assert sb.budget_step(0.05, 320, 4) == 16 and sb.budget_step(1, 320, 4) == 320
    with pytest.raises(UserError, match="budget 0.01 x 320 iterations = 3.2 is not an alpha log"):
        sb.budget_step(0.01, 320, 4)
    with pytest.raises(UserError, match="0.0125"):  # names the accepted multiples
        sb.budget_step(0.02, 320, 4)
    with pytest.raises(UserError, match="budget 1.5"):
        sb.budget_step(1.5, 320, 4)
    assert [sb.budget_label(b) for b in (0.05, 0.025, 1.0, 0.3)] == ["1/20", "1/40", "1", "0.3"]


def _search_json(logits_by_step, total):
    """A search.json: softmax gate, k = 4 (rank = entries with softmax >= 1/4)."""
    history = [{"step": s, "selection_logits": dict(zip(LAYERS, b))} for s, b in logits_by_step]
    return {"config": {"threshold": None, "gate": "softmax", "k": 4, "selection_init": None, "log_every": 2},
            "steps": total, "history": history, "selection_logits": history[-1]["selection_logits"]}


def test_search_ranks_thresholds_every_alpha_log_and_cuts_at_a_budget():
    flat, one = [0, 0, 0, 0], [5, 0, 0, 0]
    path = sb.search_ranks(_search_json([(0, (flat, flat)), (2, (one, flat)), (4, (one, one))], 4))
    assert path["rule"] == "softmax" and path["layers"] == LAYERS and path["steps"] == [0, 2, 4]
    assert path["ranks"] == [[4, 4], [1, 4], [1, 1]] and path["final"] == [1, 1]
    assert sb.ranks_at(path, 2) == {"l0.query": 1, "l0.value": 4}
    with pytest.raises(UserError, match="no alpha at iteration 3"):
        sb.ranks_at(path, 3)


def _result(score, search_wall=None, search_cpu=None, train_wall=100.0, train_cpu=50.0, ranks=None, steps=None,
            passes=4):
    phases = {"train": {"wall_s": train_wall, "cpu_s": train_cpu}}
    out = {"metrics": {"primary": "spearmanr", "best": {"validation": {"spearmanr": score}},
                       "final": {"validation": {"spearmanr": score - 0.01}}}, "phases": phases, "ranks": ranks}
    if search_wall is not None:
        phases["search"] = {"wall_s": search_wall, "cpu_s": search_cpu}
        out["search"] = {"ranks": ranks, "steps": steps, "passes_per_iteration": passes}
    return out


def test_points_derive_budget_costs_reuse_the_full_retrain_for_equal_ranks_and_list_what_is_missing(monkeypatch):
    final = {"l0.query": 1, "l0.value": 1}
    early = {"l0.query": 1, "l0.value": 4}
    path = {"total_steps": 8, "log_every": 2, "layers": LAYERS, "steps": [0, 2, 4, 6, 8],
            "ranks": [[4, 4], [1, 4], [1, 1], [1, 1], [1, 1]], "final": [1, 1]}
    full = {0: _result(0.70, search_wall=80.0, search_cpu=40.0, ranks=final, steps=8),
            1: _result(0.60, search_wall=80.0, search_cpu=40.0, ranks=final, steps=8)}
    fast = {0: _result(0.65, search_wall=4.0, search_cpu=2.0, train_cpu=52.0, ranks=early, steps=1, passes=2)}
    lora = {0: _result(0.50, train_wall=100.0, train_cpu=50.0), 1: _result(0.55, train_wall=100.0, train_cpu=50.0)}
    retrains = {(0, sb.ranks_digest(early)): _result(0.66, train_wall=110.0, train_cpu=55.0, ranks=early)}
    rows = sb.points(full, {0: path, 1: path}, retrains, fast, lora, budgets=[0.25, 0.5])
    two_seeds = sb.summarise(rows, lora)
    assert all(p["within_full_seed_spread"] is None for p in two_seeds["points"])  # 2 seeds < 3
    assert "needs 3 seeds; cost met" in sb.markdown_table(two_seeds)
    monkeypatch.setattr(sb, "VERDICT_SEEDS", 1)
    by = {(r["point"], r["seed"]): r for r in rows}
    quarter = by[("1/4", 0)]  # 2 iterations: early ranks, retrained on their own
    assert quarter["iterations"] == 2 and quarter["ranks"] == early and quarter["retrain"] == "lora rank_pattern_file"
    assert quarter["rank_distance"] == 1.5 and quarter["layers_same_rank"] == 1
    assert quarter["search_cpu_s"] == 10.0 and quarter["cost_cpu_s"] == 65.0  # 2/8 x 40, + 55
    assert quarter["cpu_ratio_to_lora"] == 65.0 / 50.0 and quarter["ratio_to_lora"] == (20.0 + 110.0) / 100.0
    assert quarter["cpu_ratio_to_grid"] == pytest.approx(65.0 / 50.0 / 3.5)  # no grid run: the estimate
    assert by[("1/4", 1)]["retrain"] == "not run" and by[("1/4", 1)]["score"] is None
    half = by[("1/2", 0)]  # 4 iterations: the full search's ranks already; its retrain is the full run's
    assert half["rank_distance"] == 0 and half["score"] == 0.70 and half["retrain"].startswith("same ranks")
    assert by[("1", 1)]["cost_cpu_s"] == 90.0 and by[("fast", 0)]["cost_cpu_s"] == 54.0
    summary = sb.summarise(rows, lora)
    points = {p["point"]: p for p in summary["points"]}
    assert summary["full_score_range"] == [0.60, 0.70]
    assert points["1/4"]["not_retrained_seeds"] == [1] and points["1/4"]["retrained_seeds"] == [0]
    assert points["fast"]["within_full_seed_spread"] and points["fast"]["cost_targets_met"]  # 1.08x LoRA
    assert points["fast"]["meets_item3"] and points["fast"]["paired_score_minus_full"]["median"] == pytest.approx(-0.05)
    assert points["1"]["cost_targets_met"] is False and points["1"]["meets_item3"] is False  # 1.8x LoRA
    assert points["1/4"]["meets_item3"] is False  # 1.3x LoRA
    table = sb.markdown_table(summary)
    assert "`autolora_fast`" in table and "misses: cost" in table and "| meets |" in table
    assert "/ 5-rank grid (CPU, est.)" in table


def test_a_measured_grid_replaces_the_estimate_and_decides_the_cost_target():
    final = {"l0.query": 1, "l0.value": 1}
    path = {"total_steps": 8, "log_every": 2, "layers": LAYERS, "steps": [0, 2, 4, 6, 8],
            "ranks": [[4, 4], [1, 4], [1, 1], [1, 1], [1, 1]], "final": [1, 1]}
    full = {0: _result(0.70, search_wall=80.0, search_cpu=40.0, ranks=final, steps=8)}
    fast = {0: _result(0.70, search_wall=4.0, search_cpu=2.0, train_cpu=50.0, ranks=final, steps=1, passes=2)}
    lora = {0: _result(0.70, train_wall=100.0, train_cpu=50.0)}
    # the grid's search + train phases: 100 + 30 and 90 + 30 CPU s -> median 125 (its seeds' cost, not seed 0's)
    grid = {0: _result(0.7, search_wall=1.0, search_cpu=100.0, train_cpu=30.0),
            1: _result(0.7, search_wall=1.0, search_cpu=90.0, train_cpu=30.0)}
    assert sb.grid_cpu(grid)["median"] == 125.0
    rows = sb.points(full, {0: path}, {}, fast, lora, budgets=[0.25], grid_cpu_s=125.0)
    by = {r["point"]: r for r in rows}
    assert by["fast"]["cpu_ratio_to_grid"] == pytest.approx(52.0 / 125.0)  # measured, not 52 / 50 / 3.5 = 0.30
    summary = sb.summarise(rows, lora, grid)
    assert summary["grid"]["seeds"] == [0, 1] and summary["grid"]["measured"]["n"] == 2
    fast_point = next(p for p in summary["points"] if p["point"] == "fast")
    assert fast_point["cost_targets_met"] is False  # 0.42x the measured grid > 0.35x; the estimate said 0.30x
    assert "/ 5-rank grid (CPU, measured)" in sb.markdown_table(summary)


def test_script_plan_shares_bench_costs_folders_seed_by_seed(tmp_path, shared_data):
    from test_bench import load_script

    script = load_script("bench_search_budget")
    args = script.parse_args(["--out", str(tmp_path), "--device", "cpu"])
    runs, st = script.plan(args, script._bench_cost())
    assert [(r.key["seed"], r.key["method"]) for r in runs[:5]] == [
        (0, "autolora"), (0, "autolora_fast"), (0, "lora"), (0, "lora_grid"), (1, "autolora")] and len(runs) == 12
    cost = load_script("bench_cost")
    cost_runs, _ = cost.plan(cost.parse_args(st["bench_cost_command"].split()[2:] + ["--out", str(tmp_path),
                                                                                      "--device", "cpu"]))
    shared = {(r.key["method"], r.key["seed"]): (r.folder, sorted(r.overrides)) for r in cost_runs}
    assert all(shared[(r.key["method"], r.key["seed"])] == (r.folder, sorted(r.overrides)) for r in runs)
    full = runs[0].overrides
    assert {"method.search.epochs=20", "method.search.log_every=4", "model.pooling=mean", "task.max_length=64",
            "train.epochs=7", "task.max_train_samples=512"} <= set(full)
    with pytest.raises(UserError, match="--retrain-budgets"):
        script.plan(script.parse_args(["--out", str(tmp_path), "--retrain-budgets", "0.3"]), script._bench_cost())


def test_committed_store_keeps_the_search_ranks(tmp_path):
    runs_root, store = tmp_path / "runs", tmp_path / "store"
    done = runs_root / "cost" / "x" / "seed0-abc"
    bench.results.atomic_write_json(done / bench.results.RESULT_FILE, {"status": "completed", "config_hash": "abc"})
    (done / bench.SEARCH_RANKS_FILE).write_text("{}")
    (done / "search.json").write_text("{}")  # large: not committed
    assert bench.export_committed([bench.RunRecord({}, done, "completed")], runs_root, store) == 1
    kept = store / "cost" / "x" / "seed0-abc"
    assert (kept / bench.SEARCH_RANKS_FILE).is_file() and not (kept / "search.json").exists()
    folder, _ = bench.import_committed(tmp_path / "other" / "cost" / "x" / "seed0", "abc", tmp_path / "other", store)
    assert (folder / bench.SEARCH_RANKS_FILE).is_file()


def test_run_one_without_compute_reports_an_unfinished_run_as_not_run(tmp_path):
    planned = tmp_path / "runs" / "x" / "seed0"
    rec = bench.run_one(bench.BenchRun({"seed": 0}, ["debug=default", "model=tiny-roberta"], planned), REPO,
                        echo=False, compute=False)
    assert rec.status == "not_run" and rec.result is None and not planned.parent.exists()
