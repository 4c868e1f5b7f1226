"""scripts/bench_curves.py (autolora_exp.curves): plateau and choice rules, plan, committed-results store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from autolora_exp import bench, curves, results
from autolora_exp.errors import UserError

REPO = Path(__file__).resolve().parents[1]


def _curve(scores, steps_per_epoch=10):
    return [{"epoch": i + 1, "step": (i + 1) * steps_per_epoch, "score": s, "train_loss": None}
            for i, s in enumerate(scores)]


def test_plateau_is_the_first_epoch_within_tol_of_the_best_with_patience_after_it():
    a = curves.plateau(_curve([0.2, 0.5, 0.795, 0.80, 0.798, 0.79]), tol=0.01, patience=2)
    assert (a["plateau_epoch"], a["plateau_step"], a["best_epoch"]) == (3, 30, 4)
    assert a["plateaued"] and a["best"] == pytest.approx(0.80) and a["final"] == pytest.approx(0.79)
    rising = curves.plateau(_curve([0.2, 0.4, 0.6, 0.7]), tol=0.01, patience=2)
    assert rising["plateau_epoch"] == 4 and not rising["plateaued"]
    # one epoch after the plateau is not enough with patience 2
    assert not curves.plateau(_curve([0.2, 0.7, 0.7]), tol=0.01, patience=2)["plateaued"]
    assert curves.plateau(_curve([0.2, 0.7, 0.7]), tol=0.01, patience=1)["plateaued"]


def test_chance_levels():
    assert curves.chance_level("accuracy", [1, 1, 0, 1]) == pytest.approx(0.75)
    assert curves.chance_level("spearmanr", None) == 0.0 == curves.chance_level("matthews_correlation", None)
    with pytest.raises(ValueError, match="no chance level"):
        curves.chance_level("bleu", None)


def _setting(label, scores, length=64, steps_per_epoch=10, chance=0.5, margin=0.05):
    a = curves.plateau(_curve(scores, steps_per_epoch), 0.01, 2)
    a["learned"] = a["best"] >= chance + margin
    return {"setting": {"max_length": length}, "label": label, "analysis": a}


def test_choice_is_the_cheapest_plateaued_curve_that_reaches_the_task_best():
    small_low = _setting("small, lower plateau", [0.6, 0.7, 0.7, 0.7], steps_per_epoch=5)
    big = _setting("big", [0.6, 0.8, 0.8, 0.8], steps_per_epoch=20)
    medium = _setting("medium", [0.6, 0.75, 0.795, 0.795, 0.795], steps_per_epoch=10)
    long = _setting("medium, longer sequences", [0.6, 0.75, 0.8, 0.8, 0.8], length=128, steps_per_epoch=10)
    pick = curves.choose([small_low, big, medium, long], tol=0.01)
    # big reaches 0.8 at step 40 (x64 = 2560); medium 0.795 at step 30 (1920); long 30 x 128
    assert pick["status"] == "chosen" and pick["chosen"]["label"] == "medium" and pick["top"] == pytest.approx(0.8)
    rising = curves.choose([_setting("r", [0.6, 0.7, 0.8, 0.9])], tol=0.01)
    assert rising["status"] == "still_rising" and rising["chosen"] is None
    flat = curves.choose([_setting("f", [0.5, 0.51, 0.5, 0.5])], tol=0.01)
    assert flat["status"] == "cannot_learn" and flat["top"] == pytest.approx(0.51)


def _entry(task, n, seed, scores, metric="accuracy", pooling="cls"):
    return {"task": task, "pooling": pooling, "train_samples": n, "max_length": 64, "lr": 5e-4, "seed": seed,
            "status": "completed", "metric": metric, "curve": _curve(scores, n // 16), "rows": {"train": n},
            "train_s": 10.0}


def test_summary_takes_the_median_over_seeds_and_lists_tasks_that_cannot_learn():
    st = {"tasks": ["glue/sst2", "glue/rte", "glue/cola"], "tol": 0.01, "patience": 2, "margin": 0.05}
    entries = [_entry("glue/sst2", 160, 0, [0.6, 0.8, 0.85, 0.85, 0.85]),
               _entry("glue/sst2", 160, 1, [0.6, 0.8, 0.87, 0.86, 0.85]),
               _entry("glue/sst2", 160, 2, [0.6, 0.7, 0.80, 0.85, 0.85]),
               _entry("glue/rte", 160, 0, [0.5, 0.52, 0.51, 0.5]),
               {"task": "glue/cola", "pooling": "cls", "train_samples": 160, "max_length": 64, "lr": 5e-4,
                "seed": 0, "status": "failed", "error": "boom"}]
    out = curves.summarise(entries, st, lambda task, seed: [1, 0])  # chance 0.5
    sst2 = out["per_task"]["glue/sst2"]
    assert [p["score"] for p in sst2["settings"][0]["curve"]] == pytest.approx([0.6, 0.8, 0.85, 0.85, 0.85])
    assert sst2["status"] == "chosen" and sst2["chosen"]["epochs"] == 3 and sst2["chosen"]["steps"] == 30
    assert sst2["chosen"]["pooling"] == "cls" and sst2["chance"] == pytest.approx(0.5)
    assert out["per_task"]["glue/rte"]["status"] == "cannot_learn"
    assert out["per_task"]["glue/rte"]["settings"][0]["curve"]  # listed with its curve
    assert out["per_task"]["glue/cola"]["status"] == "no_runs"


def test_plan_one_run_per_setting_and_seed_with_a_relative_data_dir(tmp_path, shared_data):
    args = curves.parse_args(["--tasks", "stsb,rte", "--train-samples", "256,1024", "--lrs", "5e-4,1e-3",
                              "--poolings", "cls,mean", "--seeds", "0,1", "--out", str(tmp_path),
                              "--device", "cpu"], REPO)
    runs, st = curves.plan(args, REPO)
    assert len(runs) == 2 * 2 * 2 * 2 * 2 and len({r.folder for r in runs}) == len(runs)
    assert [r.key["task"] for r in runs[:16]] == ["glue/stsb"] * 16  # task-major
    first = runs[0].overrides
    assert "task.data_dir=../shared/data/glue" in first and "method.r=4" in first and "model.pooling=cls" in first
    assert "task.max_train_samples=256" in first and "train.epochs=12" in first
    assert st["committed"] == str(REPO / "docs" / "bench" / "runs")
    with pytest.raises(UserError, match="--poolings"):
        curves.plan(curves.parse_args(["--poolings", "max", "--out", str(tmp_path)], REPO), REPO)
    with pytest.raises(UserError, match="--data-dir"):
        curves.plan(curves.parse_args(["--data-dir", "nowhere", "--out", str(tmp_path)], REPO), REPO)
    with pytest.raises(UserError, match="--train-samples"):
        curves.plan(curves.parse_args(["--train-samples", "0", "--out", str(tmp_path)], REPO), REPO)


def _finished(folder, digest):
    results.atomic_write_json(folder / results.RESULT_FILE, {"status": "completed", "config_hash": digest, "x": 1})
    results.atomic_write_json(folder / bench.BENCH_FILE, {"process": {"wall_s": 3.0}})


def test_committed_store_exports_finished_runs_and_imports_only_the_same_config(tmp_path):
    runs_root, store = tmp_path / "out" / "runs", tmp_path / "store"
    done = runs_root / "curves" / "stsb" / "seed0"
    _finished(done, "abc")
    recs = [bench.RunRecord({}, done, "completed"), bench.RunRecord({}, runs_root / "x", "failed")]
    assert bench.export_committed(recs, runs_root, store) == 1
    assert bench.export_committed(recs, runs_root, store) == 0  # unchanged: nothing copied again
    kept = store / "curves" / "stsb" / "seed0"
    assert json.loads((kept / results.RESULT_FILE).read_text())["config_hash"] == "abc"
    assert (kept / bench.BENCH_FILE).is_file() and not (kept / bench.LOG_FILE).exists()
    # another machine: an empty output folder resumes from the store, for the same hash only
    fresh = tmp_path / "other" / "runs"
    target = fresh / "curves" / "stsb" / "seed0"
    assert bench.import_committed(target, "different", fresh, store) is None
    folder, result = bench.import_committed(target, "abc", fresh, store)
    assert folder == target and result["x"] == 1 and results.finished_result(target, "abc")["x"] == 1
    assert bench.import_committed(target, "abc", fresh, store) is None  # a local result is never overwritten
    # the layout with the digest in the folder name (seed0-<digest>) is found from the planned seed0
    _finished(store / "curves" / "rte" / "seed0-abcdef12", "abcdef12ffff")
    hit = bench.import_committed(fresh / "curves" / "rte" / "seed0", "abcdef12ffff", fresh, store)
    assert hit is not None and hit[0] == fresh / "curves" / "rte" / "seed0-abcdef12"


@pytest.mark.slow
def test_quick_curves_end_to_end_and_resume_from_the_store(tmp_path, shared_data):
    store = tmp_path / "store"
    assert curves.main(["--quick", "--out", str(tmp_path / "a"), "--committed", str(store)], REPO) == 0
    report = json.loads((tmp_path / "a" / "curves_quick.json").read_text())
    rte = report["per_task"]["glue/rte"]
    assert len(rte["settings"][0]["curve"]) == 3 and rte["status"] in curves.STATUS_TEXT
    assert (tmp_path / "a" / "curves_quick_rte.png").stat().st_size > 1000
    assert list(store.rglob("result.json"))
    # another output folder (another machine): the store is imported, nothing recomputed
    assert curves.main(["--quick", "--out", str(tmp_path / "b"), "--committed", str(store)], REPO) == 0
    again = json.loads((tmp_path / "b" / "curves_quick.json").read_text())
    assert again["runs_computed"] == 0 and again["runs_reused"] == 1
    assert again["per_task"]["glue/rte"]["settings"][0]["curve"] == rte["settings"][0]["curve"]


def test_plan_adalora_curves_use_its_own_config_and_folders(tmp_path, shared_data):
    lora, _ = curves.plan(curves.parse_args(["--out", str(tmp_path), "--device", "cpu"], REPO), REPO)
    ada, st = curves.plan(curves.parse_args(["--method", "adalora", "--out", str(tmp_path), "--device", "cpu"],
                                            REPO), REPO)
    assert "method=adalora" in ada[0].overrides and not any(o.startswith("method.r=") for o in ada[0].overrides)
    assert ada[0].folder != lora[0].folder and "_adalora_" in ada[0].folder.parent.name
    assert curves.method_label(st) == "AdaLoRA (its config)"


def test_a_result_from_before_a_schema_key_was_added_is_reused_only_at_the_key_default(tmp_path):
    """After a merge adds a config key (at its default), committed results still resume; at any
    other value of the new key, or with any other difference, they are another config."""
    import copy

    from omegaconf import OmegaConf

    overrides = ["debug=default", "model=tiny-roberta", "method=autolora"]
    current = OmegaConf.to_container(bench.compose_config(overrides, tmp_path, REPO / "conf"), resolve=True)
    old = copy.deepcopy(current)
    del old["train"]["warmup_ratio"], old["method"]["search"]["patience"]  # keys "added since" the run
    assert bench.added_keys_at_default(current, current) == []
    assert sorted(bench.added_keys_at_default(old, current)) == ["method.search.patience", "train.warmup_ratio"]
    moved = copy.deepcopy(current)
    moved["train"]["warmup_ratio"] = 0.2  # the new key away from its default: not the same computation
    assert bench.added_keys_at_default(old, moved) is None
    other = copy.deepcopy(old)
    other["seed"] = 7
    assert bench.added_keys_at_default(other, current) is None
    extra = copy.deepcopy(current)
    extra["train"]["removed_key"] = 1
    assert bench.added_keys_at_default(extra, current) is None
    # through the folder check: an old result.json (other hash) is reused, flagged
    results.atomic_write_json(tmp_path / "run" / results.RESULT_FILE,
                              {"status": "completed", "config_hash": "old", "config": old})
    digest = results.config_hash(current)
    assert bench.reusable_result(tmp_path / "run", digest) is None  # without the config: hash only
    reused = bench.reusable_result(tmp_path / "run", digest, current)
    assert sorted(reused["reused_with_added_keys"]) == ["method.search.patience", "train.warmup_ratio"]
    assert bench.reusable_result(tmp_path / "run", digest, moved) is None


def test_a_result_from_before_task_search_epochs_was_dropped_is_reused(tmp_path):
    """Issue 18 moved AutoLoRA's search length from task.search_epochs to the method: a stored
    run whose config still has the key (its value now in method.search.epochs) is the same
    computation; with method.search.epochs or anything else differing it is not."""
    import copy

    from omegaconf import OmegaConf

    overrides = ["task=glue/rte", "model=tiny-roberta", "method=autolora", "train.max_steps=4"]
    current = OmegaConf.to_container(bench.compose_config(overrides, tmp_path, REPO / "conf"), resolve=True)
    assert current["method"]["search"]["epochs"] == 20 and "search_epochs" not in current["task"]
    old = copy.deepcopy(current)
    old["task"]["search_epochs"] = 20
    dropped: list[str] = []
    assert bench.added_keys_at_default(old, current, dropped) == [] and dropped == ["task.search_epochs"]
    unknown = copy.deepcopy(current)
    unknown["task"]["other_dropped_key"] = 1  # not in bench.DROPPED_KEYS: another config
    assert bench.added_keys_at_default(unknown, current) is None
    longer = copy.deepcopy(old)
    longer["method"]["search"]["epochs"] = 50
    assert bench.added_keys_at_default(longer, current) is None
    results.atomic_write_json(tmp_path / "run" / results.RESULT_FILE,
                              {"status": "completed", "config_hash": "old", "config": old})
    reused = bench.reusable_result(tmp_path / "run", results.config_hash(current), current)
    assert reused["reused_with_dropped_keys"] == ["task.search_epochs"] and reused["reused_with_added_keys"] == []


def test_a_result_from_before_the_target_presets_is_reused_while_no_preset_is_used(tmp_path):
    """Issue 18 added model.target_presets (valued by each model config, so never at the schema
    default) and method.search.min_rank (default 0): committed runs that list their target
    modules computed what they compute now; a run naming a preset is another config."""
    import copy

    from omegaconf import OmegaConf

    overrides = ["debug=default", "model=tiny-roberta", "method=autolora"]
    current = OmegaConf.to_container(bench.compose_config(overrides, tmp_path, REPO / "conf"), resolve=True)
    assert current["model"]["target_presets"]["all_linear"] and isinstance(current["model"]["target_modules"], list)
    old = copy.deepcopy(current)
    del old["model"]["target_presets"], old["method"]["search"]["min_rank"]
    assert sorted(bench.added_keys_at_default(old, current)) == ["method.search.min_rank", "model.target_presets"]
    preset = OmegaConf.to_container(bench.compose_config(overrides + ["model.target_modules=all_linear"], tmp_path,
                                                         REPO / "conf"), resolve=True)
    assert bench.added_keys_at_default(old, preset) is None
