"""Figures: the learned rank of every LoRA layer (the paper's Figure 3).

Rows are the layer types of a block (q, k, v, then the attention output and the feed-forward
layers, then anything else), columns the transformer blocks 1..L, and each cell prints the rank;
a rank-0 cell (the layer got no LoRA) is grey, a layer type a block does not adapt is blank.
Module names are parsed, not assumed: the block is the last integer in the dotted name and the
layer type the path after it, matched by its longest known suffix (:data:`_LAYER_TYPES`), so
RoBERTa/BERT (``...layer.3.attention.self.query``, ``...layer.3.output.dense``), GPT-2
(``transformer.h.3.attn.c_attn.q``, one unit per slice of the fused projection;
``transformer.h.3.mlp.c_proj``) and Llama (``model.layers.3.self_attn.q_proj``) all work.
Rendering uses the Agg canvas directly, so importing this module never changes the process's
matplotlib backend.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path

from autolora_exp.atomic import atomic_save_figure
from autolora_exp.errors import UserError

#: a layer's path inside its block (a dotted suffix of it) -> row label: q/k/v, and Llama's names
#: for the attention output and the feed-forward layers, which BERT and GPT-2 name otherwise
_LAYER_TYPES = {
    "query": "q", "q_proj": "q", "q": "q",
    "key": "k", "k_proj": "k", "k": "k",
    "value": "v", "v_proj": "v", "v": "v",
    "o_proj": "o_proj", "attention.output.dense": "o_proj", "attn.c_proj": "o_proj",
    "gate_proj": "gate_proj",
    "up_proj": "up_proj", "intermediate.dense": "up_proj", "mlp.c_fc": "up_proj",
    "down_proj": "down_proj", "output.dense": "down_proj", "mlp.c_proj": "down_proj",
}  # fmt: skip
_ROW_ORDER = ("q", "k", "v", "o_proj", "gate_proj", "up_proj", "down_proj")
#: colour of a rank-0 cell (no LoRA on that layer)
RANK_ZERO_COLOR = "#bdbdbd"


def layer_position(name: str) -> tuple[str, int]:
    """(layer type row label, 0-based block index) of a LoRA module name."""
    parts = name.split(".")
    blocks = [i for i, p in enumerate(parts) if re.fullmatch(r"\d+", p)]
    if not blocks:
        raise UserError(
            f"cannot find a block index in module name {name!r}; expected e.g. 'encoder.layer.3.attention.self.query'"
        )
    inside = parts[blocks[-1] + 1:]
    for start in range(len(inside)):  # the longest known suffix of the path inside the block
        label = _LAYER_TYPES.get(".".join(inside[start:]))
        if label is not None:
            return label, int(parts[blocks[-1]])
    return ".".join(inside) or parts[-1], int(parts[blocks[-1]])


def rank_heatmap(ranks: Mapping[str, int], path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw the rank of every layer as a layer types x blocks grid with numbers; returns ``path``.

    Rank 0 (no LoRA on that layer) is a grey cell marked 0; a (type, block) with no layer is blank.
    """
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not ranks:
        raise UserError("no ranks to plot")
    cells = {layer_position(n): int(r) for n, r in ranks.items()}
    extra = sorted({row for row, _ in cells} - set(_ROW_ORDER))
    rows = [r for r in _ROW_ORDER if any(row == r for row, _ in cells)] + extra
    blocks = sorted({b for _, b in cells})
    grid = [[cells.get((row, b), math.nan) for b in blocks] for row in rows]
    vmax = max(max(cells.values()), 1)
    cmap = colormaps["Blues"].with_extremes(under=RANK_ZERO_COLOR, bad="white")

    fig = Figure(figsize=(max(4.0, 0.45 * len(blocks) + 2.0), 0.45 * len(rows) + 1.4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    # ranks 1..vmax on the colour scale, 0 below it (grey), no layer = NaN (blank)
    image = ax.imshow(grid, cmap=cmap, vmin=0.5, vmax=vmax, aspect="auto")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if not math.isnan(value):
                # dark cells get white digits so the number stays readable
                color = "white" if value > 0.6 * vmax else "black"
                ax.text(j, i, str(int(value)), ha="center", va="center", fontsize=9, color=color)
    ax.set_xticks(range(len(blocks)), [str(b + 1) for b in blocks])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("block")
    zero = any(v == 0 for v in cells.values())
    fig.colorbar(image, ax=ax, label="rank", fraction=0.03, pad=0.02, extend="min" if zero else "neither",
                 ticks=range(1, vmax + 1, max(1, vmax // 8)))
    if zero:
        ax.set_xlabel("block   (grey: rank 0, no LoRA)")
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=150)
