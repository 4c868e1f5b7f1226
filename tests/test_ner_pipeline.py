"""Sequence labelling through the pipeline: BioNLP from the official files, WNUT-16 offline."""

from __future__ import annotations

import json

import pytest

from autolora_exp.pipeline import run

TINY = ["debug=default", "model=tiny-roberta", "method=lora"]


@pytest.mark.parametrize("method", ["lora", "autolora"])
def test_bionlp_local_files_write_f1_and_word_predictions(make_cfg, shared_data, method, tmp_path):
    cfg = make_cfg(*TINY, "task=bionlp", f"task.data_dir={shared_data / 'jnlpba'}", f"method={method}")
    result = run(cfg)
    scores = result["metrics"]["final"]["validation"]
    assert {"f1", "precision", "recall", "per_type"} <= set(scores)
    assert 0.0 <= scores["f1"] <= 1.0 and scores["n"] == 16
    assert result["metrics"]["test"]["n"] == 16
    rows = json.loads((tmp_path / "run" / "predictions_validation.json").read_text())
    assert len(rows) == 16
    # one prediction per original word, never cut by the 32-sub-token windows of the debug preset
    assert all(len(r["prediction"]) == len(r["tokens"]) == len(r["reference"]) for r in rows)
    assert max(len(r["tokens"]) for r in rows) > 16
    if method == "autolora":
        split = result["search"]["split"]
        assert split["d_tr"]["n"] + split["d_val"]["n"] == result["data"]["train"]["n"]


def test_search_split_keeps_windows_of_a_sentence_together(shared_data):
    from autolora_exp.data.ner import load_bionlp
    from autolora_exp.task_types.token_classification import TokenClassification
    from autolora_exp.models import load_tokenizer
    from autolora_exp.pipeline import split_for_search
    from conftest import compose

    cfg = compose(["task=bionlp", "model=minilm", "task.max_length=24", "task.stride=4"])
    raw = load_bionlp(str(shared_data / "jnlpba"))["validation"].select(range(60))
    kind = TokenClassification(cfg.task, load_tokenizer(cfg.model, "token_classification"), None)
    encoded = kind.encode("validation", raw)
    assert len(encoded) > len(raw)  # long sentences became several windows
    d_tr, d_val = split_for_search(encoded, seed=0)
    assert not set(d_tr["idx"]) & set(d_val["idx"])
    assert set(d_tr["idx"]) | set(d_val["idx"]) == set(raw["idx"])


def test_wnut16_runs_offline_end_to_end(make_cfg):
    result = run(make_cfg(*TINY, "task=wnut16"))
    assert result["task"] == "wnut16" and "f1" in result["metrics"]["final"]["validation"]


def test_label_count_mismatch_fails_before_training(make_cfg):
    from autolora_exp.errors import UserError

    with pytest.raises(UserError, match="num_labels=5"):
        run(make_cfg(*TINY, "task=wnut16", "task.num_labels=5"))
