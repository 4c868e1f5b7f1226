"""From searched ranks to a peft LoRA with exactly those ranks (the retrain's model)."""

from __future__ import annotations

import json

import pytest

from autolora_exp.errors import UserError
from autolora_exp.methods.autolora import load_rank_pattern_json, rank_pattern_config, save_rank_pattern_json

from autolora_tiny import tiny_roberta

LAYERS, K, LORA_ALPHA = 12, 8, 16.0


def _name(i, proj):
    return f"roberta.encoder.layer.{i}.attention.self.{proj}"


def _ranks():
    # distinct ranks in layers 1 and 11 (a loose key for layer 1 would also hit 11), zeros included
    ranks = {}
    for i in range(LAYERS):
        ranks[_name(i, "query")] = (i * 3) % 7  # 0 at layers 0 and 7
        ranks[_name(i, "value")] = 8 - (i % 5)
    assert ranks[_name(1, "query")] != ranks[_name(11, "query")]
    return ranks


def _peft_model(kwargs):
    from peft import LoraConfig, get_peft_model

    model = tiny_roberta(layers=LAYERS)
    return get_peft_model(model, LoraConfig(**kwargs, lora_dropout=0.0, modules_to_save=["classifier"]))


@pytest.mark.parametrize("scaling", ["per_layer", "fixed"])
def test_peft_model_has_exactly_the_searched_rank_in_every_layer(scaling):
    ranks = _ranks()
    kwargs = rank_pattern_config(ranks, lora_alpha=LORA_ALPHA, scaling=scaling, k=K)
    assert set(kwargs["target_modules"]) == {n for n, r in ranks.items() if r > 0}
    with _no_warning():
        peft_model = _peft_model(kwargs)
    modules = dict(peft_model.base_model.model.named_modules())
    expected_trainable = 0
    for name, r in ranks.items():
        module = modules[name]
        if r == 0:
            assert not hasattr(module, "lora_A"), f"{name} has rank 0 but got LoRA"
            continue
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
        assert a.shape == (r, module.in_features) and b.shape == (module.out_features, r), name
        scale = LORA_ALPHA / r if scaling == "per_layer" else LORA_ALPHA / K
        assert module.scaling["default"] == pytest.approx(scale), name
        expected_trainable += r * (module.in_features + module.out_features)
    head = sum(p.numel() for p in tiny_roberta(layers=1).classifier.parameters())
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    assert trainable == expected_trainable + head


class _no_warning:
    """Fail on peft's 'rank_pattern keys did not match' warning (a silently ignored rank)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("error", message=".*did not match.*")

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)


def test_keys_match_only_their_own_module_under_peft_rule():
    """peft matches key k to module m if re.match(rf'(.*\\.)?({k})$', m): each key hits one module."""
    import re

    names = [n for n, _ in tiny_roberta(layers=LAYERS).named_modules() if n]
    kwargs = rank_pattern_config(_ranks(), lora_alpha=LORA_ALPHA)
    for key in kwargs["rank_pattern"]:
        hits = [n for n in names if re.match(rf"(.*\.)?({key})$", n)]
        assert len(hits) == 1, (key, hits)


def test_rank_pattern_user_errors():
    with pytest.raises(UserError, match="per_layer, fixed"):
        rank_pattern_config({"a.query": 2}, scaling="global")
    with pytest.raises(UserError, match="needs k"):
        rank_pattern_config({"a.query": 2}, scaling="fixed")
    with pytest.raises(UserError, match="rank 0"):
        rank_pattern_config({"a.query": 0, "a.value": 0})
    with pytest.raises(UserError, match="integers >= 0"):
        rank_pattern_config({"a.query": -1})


def test_rank_pattern_json_round_trip(tmp_path):
    ranks = _ranks()
    path = save_rank_pattern_json(ranks, tmp_path / "sub" / "ranks.json")
    assert json.loads(path.read_text()) == ranks
    assert load_rank_pattern_json(path) == ranks
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="object"):
        load_rank_pattern_json(tmp_path / "bad.json")
    with pytest.raises(UserError, match="does not exist"):
        load_rank_pattern_json(tmp_path / "missing.json")
