"""The LoRA rank grid: one training per rank on D_tr, the best on D_val retrained."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import RobertaConfig, RobertaForSequenceClassification

from autolora_exp.contract import SearchContext
from autolora_exp.methods.lora import lora_ranks
from autolora_exp.methods.lora_grid import LoRAGrid
from autolora_exp.pipeline import run
from autolora_exp.train import bound_fit
from conftest import compose


def tiny_model():
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40, num_labels=2)
    return RobertaForSequenceClassification(cfg)


def batches(n=3):
    g = torch.Generator().manual_seed(1)
    return [{"input_ids": torch.randint(3, 50, (4, 8), generator=g), "labels": torch.randint(0, 2, (4,), generator=g)}
            for _ in range(n)]


def test_grid_picks_the_best_rank_on_the_held_out_half():
    scored = []

    def evaluate_val(model):  # a D_val metric that peaks at rank 4
        rank = next(iter(lora_ranks(model).values()))
        scored.append(rank)
        return {"accuracy": -abs(rank - 4)}

    train_cfg = compose(["debug=default"]).train
    ctx = SearchContext(new_model=tiny_model, target_modules=["query", "value"], head_modules=["classifier"],
                        d_tr_loader=batches(), d_val_loader=batches(1), evaluate_val=evaluate_val,
                        fit=bound_fit(train_cfg, "accuracy", torch.device("cpu")), train_cfg=train_cfg, primary_metric="accuracy", greater_is_better=True,
                        device=torch.device("cpu"), progress=False)
    found = LoRAGrid(ranks=[1, 2, 4, 8]).search_ranks(ctx)
    result = found.artifacts["search.json"]  # the grid's own record, written as search.json
    assert result["best_rank"] == 4 and sorted(set(scored)) == [1, 2, 4, 8]
    assert set(found.ranks.values()) == {4} and len(found.ranks) == 4
    assert found.record["per_rank"][4]["trainable"] > found.record["per_rank"][1]["trainable"]
    retrain = LoRAGrid(ranks=[1, 2, 4, 8]).after_search(found)
    assert retrain.r == 4


def test_bad_grid_is_refused():
    from autolora_exp.errors import UserError

    with pytest.raises(UserError, match="ranks"):
        LoRAGrid(ranks=[2, 2])


def test_grid_through_the_pipeline_records_every_training(tmp_path):
    result = run(compose(["debug=default", "model=tiny-roberta", "method=lora_grid", "method.ranks=[1,4]"],
                         tmp_path))
    search = json.loads((tmp_path / "search.json").read_text())
    assert set(search["per_rank"]) == {"1", "4"}
    assert result["ranks"] and set(result["ranks"].values()) == {search["best_rank"]}
    assert result["phases"]["search"]["wall_s"] > 0  # the grid's cost, for the cost table
