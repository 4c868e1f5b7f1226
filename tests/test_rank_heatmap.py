"""The rank heatmap (paper Figure 3): name parsing and a written PNG."""

from __future__ import annotations

import pytest

from autolora_exp.errors import UserError
from autolora_exp.rank_heatmap import layer_position, rank_heatmap


@pytest.mark.parametrize(
    "name, position",
    [
        ("roberta.encoder.layer.11.attention.self.query", ("q", 11)),
        ("bert.encoder.layer.0.attention.self.value", ("v", 0)),
        ("transformer.h.3.attn.c_attn.q", ("q", 3)),
        ("transformer.h.23.attn.c_attn.v", ("v", 23)),
        ("model.layers.5.self_attn.q_proj", ("q", 5)),
        ("model.layers.5.self_attn.v_proj", ("v", 5)),
        ("model.layers.2.mlp.down_proj", ("down_proj", 2)),
    ],
)
def test_layer_position(name, position):
    assert layer_position(name) == position


@pytest.mark.parametrize(
    "fmt",
    [
        "roberta.encoder.layer.{i}.attention.self.{p}",
        "transformer.h.{i}.attn.c_attn.{p}",
        "model.layers.{i}.self_attn.{p}_proj",
    ],
)
def test_rank_heatmap_writes_a_png(tmp_path, fmt):
    short = {"query": "q", "value": "v"}
    ranks = {}
    for i in range(12):
        for p in ("query", "value"):
            ranks[fmt.format(i=i, p=p if "roberta" in fmt else short[p])] = (i + len(p)) % 8
    path = rank_heatmap(ranks, tmp_path / "fig" / "ranks.png", title="QQP")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_rank_heatmap_rejects_names_without_a_block():
    with pytest.raises(UserError, match="block index"):
        rank_heatmap({"classifier.dense": 2}, "unused.png")
