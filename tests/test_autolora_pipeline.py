"""AutoLoRA through the whole pipeline: split, search, threshold, retrain, evaluate."""

from __future__ import annotations

import json

import pytest

from autolora_exp.data.split import ids_hash
from autolora_exp.methods.autolora.method import AutoLoRA
from autolora_exp.pipeline import run, split_for_search

TINY = ["debug=default", "model=tiny-roberta"]


@pytest.fixture(scope="module")
def autolora_result(tmp_path_factory):
    from conftest import compose

    out = tmp_path_factory.mktemp("autolora")
    return run(compose([*TINY, "method=autolora"], out)), out


def test_run_searches_then_retrains_with_found_ranks(autolora_result):
    result, out = autolora_result
    search = result["search"]
    assert result["method"] == "autolora"
    assert search["steps"] == 4 and search["passes_per_iteration"] == 4  # darts: 1 + 1 + 1 (forward difference) + 1
    assert search["converged_at"] is None  # no patience: the whole schedule
    # the retrained model carries exactly the searched rank in each named layer
    assert result["ranks"] == {n: r for n, r in search["ranks"].items() if r > 0}
    hidden, labels = 32, 5
    lora = sum(r * (hidden + hidden) for r in search["ranks"].values())
    head = hidden * hidden + hidden + hidden * labels + labels
    assert result["params"]["trainable"] == lora + head
    assert json.loads((out / "rank_pattern.json").read_text())
    assert (out / "rank_heatmap.png").stat().st_size > 0
    assert set(json.loads((out / "search.json").read_text())["alphas"]) == set(search["ranks"])
    assert {"search", "train"} <= set(result["phases"])


def test_search_split_is_a_partition_of_train(autolora_result):
    result, _ = autolora_result
    split = result["search"]["split"]
    assert split["d_tr"]["n"] + split["d_val"]["n"] == result["data"]["train"]["n"]
    assert abs(split["d_tr"]["n"] - split["d_val"]["n"]) <= 1


def test_split_for_search_is_disjoint_and_complete(shared_data):
    from autolora_exp.data.glue import load_glue

    train = load_glue("rte", data_dir=str(shared_data / "glue"))["train"]
    d_tr, d_val = split_for_search(train, seed=3)
    tr, val = set(d_tr["idx"]), set(d_val["idx"])
    assert not tr & val and tr | val == set(train["idx"])
    again = split_for_search(train, seed=3)
    assert ids_hash(again[0]["idx"]) == ids_hash(d_tr["idx"])
    assert ids_hash(split_for_search(train, seed=4)[0]["idx"]) != ids_hash(d_tr["idx"])


def test_search_never_sees_dev_or_test(make_cfg, monkeypatch):
    seen: list[set] = []
    original = AutoLoRA.search_ranks

    def spy(self, ctx):
        seen.extend([set(ctx.d_tr_loader.dataset["idx"]), set(ctx.d_val_loader.dataset["idx"])])
        return original(self, ctx)

    monkeypatch.setattr(AutoLoRA, "search_ranks", spy)
    cfg = make_cfg(*TINY, "method=autolora")
    result = run(cfg)
    from autolora_exp.pipeline import load_task_data

    data = load_task_data(cfg.task, cfg.seed)
    train_ids = set(data["train"]["idx"])
    held_out = set(data["validation"]["idx"]) | set(data["test"]["idx"])
    assert seen[0] | seen[1] == train_ids and not seen[0] & seen[1]
    assert not (seen[0] | seen[1]) & held_out
    assert result["search"]["split"]["d_tr"]["ids_sha256"] == ids_hash(seen[0])


@pytest.mark.parametrize("method", ["autolora_no_cst", "autolora_sigmoid", "autolora_eta0", "autolora_authors",
                                    "autolora_authors_eta0", "autolora_authors_bionlp"])
def test_ablations_run_end_to_end(make_cfg, method):
    result = run(make_cfg(*TINY, f"method={method}"))
    assert result["method"] == method
    assert result["search"]["ranks"]
    if method.endswith("eta0"):
        assert result["search"]["passes_per_iteration"] == 2
    if method in ("autolora_authors", "autolora_authors_bionlp"):
        assert result["search"]["passes_per_iteration"] == 5  # real step, validation, +, -, redone step


def test_search_split_share_and_batch_size_come_from_the_search_config(make_cfg, monkeypatch):
    """method.search.val_fraction holds out that share as D_val; method.search.batch_size feeds
    both search loaders, while the retrain keeps train.batch_size."""
    seen = {}
    original = AutoLoRA.search_ranks

    def spy(self, ctx):
        seen.update(tr=len(ctx.d_tr_loader.dataset), val=len(ctx.d_val_loader.dataset),
                    batch=(ctx.d_tr_loader.batch_size, ctx.d_val_loader.batch_size))
        return original(self, ctx)

    monkeypatch.setattr(AutoLoRA, "search_ranks", spy)
    result = run(make_cfg(*TINY, "method=autolora_authors", "method.search.batch_size=4"))
    n = result["data"]["train"]["n"]
    assert seen["tr"] + seen["val"] == n and abs(seen["val"] - 0.3 * n) <= 1  # the authors' 30 %
    assert seen["batch"] == (4, 4) and result["config"]["train"]["batch_size"] == 8


def test_same_seed_same_ranks(make_cfg, autolora_result):
    again = run(make_cfg(*TINY, "method=autolora"))
    assert again["search"]["ranks"] == autolora_result[0]["search"]["ranks"]
    assert again["search"]["alphas"] == autolora_result[0]["search"]["alphas"]


def test_search_patience_from_the_config_ends_the_search_early(tmp_path):
    from conftest import compose

    cfg = compose([*TINY, "method=autolora", "method.search.patience=1", "method.search.log_every=1",
                   "method.search.lr_selection=0.2", "method.search.max_steps=20"], tmp_path)
    search = run(cfg)["search"]
    assert search["converged_at"] == search["steps"] < 20
    assert json.loads((tmp_path / "search.json").read_text())["converged_at"] == search["steps"]


def test_subsample_for_search_keeps_a_seeded_share_and_whole_groups():
    from datasets import Dataset

    from autolora_exp.pipeline import subsample_for_search

    part = Dataset.from_dict({"idx": list(range(40)), "group": [i // 2 for i in range(40)]})
    half = subsample_for_search(part, seed=0, fraction=0.5)
    assert abs(len(half) - 20) <= 2 and set(half["idx"]) < set(part["idx"])
    assert all(half["group"].count(g) == 2 for g in set(half["group"]))  # both rows of a group, or none
    assert half["idx"] == subsample_for_search(part, seed=0, fraction=0.5)["idx"]  # seeded
    assert half["idx"] != subsample_for_search(part, seed=1, fraction=0.5)["idx"]
    assert subsample_for_search(part, seed=0, fraction=1.0) is part


def test_search_on_a_share_of_d_tr_and_d_val_is_recorded(tmp_path, autolora_result):
    from conftest import compose

    cfg = compose([*TINY, "method=autolora", "method.search.subsample_tr=0.5", "method.search.subsample_val=0.5"],
                  tmp_path)
    result = run(cfg)
    split, full = result["search"]["split"], autolora_result[0]["search"]["split"]
    for part in ("d_tr", "d_val"):
        assert split[part]["subsample"] == 0.5 and full[part]["subsample"] == 1.0
        assert abs(split[part]["rows"] - full[part]["rows"] / 2) <= 1
    assert result["data"]["train"]["n"] == autolora_result[0]["data"]["train"]["n"]  # the retrain uses all rows
    assert json.loads((tmp_path / "search.json").read_text())["config"]["subsample_tr"] == 0.5
    assert result["config"]["method"]["search"]["subsample_val"] == 0.5


def test_the_no_argument_default_is_autolora_with_the_fast_search(tmp_path):
    """`python run.py` with no arguments: AutoLoRA (autolora_fast) on the packaged MiniLM and BBC News."""
    from conftest import compose

    cfg = compose([])
    assert (cfg.method.name, cfg.task.name, cfg.model.name) == ("autolora_fast", "bbc_news", "minilm")
    assert cfg.method.search.hypergrad == "first_order" and cfg.method.search.subsample_tr == 0.5
    result = run(compose(["debug=default", "model=tiny-roberta"], tmp_path))  # the default, sized for a test
    search = result["search"]
    assert result["method"] == "autolora_fast" and search["passes_per_iteration"] == 2
    assert search["split"]["d_tr"]["subsample"] == 0.5 and "stop_reason" in search
    assert {"search", "train"} <= set(result["phases"]) and 0.0 <= result["metrics"]["test"]["accuracy"] <= 1.0
