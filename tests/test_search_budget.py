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
