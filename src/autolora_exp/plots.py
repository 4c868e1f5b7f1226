"""Figures: the learned rank of every LoRA layer (the paper's Figure 3).

Rows are the projections (q, then k and v, then anything else), columns the transformer blocks
1..L, and each cell prints the rank. Module names are parsed, not assumed: the block is the
last integer in the dotted name and the projection its last component, so RoBERTa/BERT
(``...layer.3.attention.self.query``), GPT-2 (``transformer.h.3.attn.c_attn.q``, one unit per
slice of the fused projection) and Llama (``model.layers.3.self_attn.q_proj``) all work.
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

#: last name component -> row label
_PROJECTIONS = {
    "query": "q", "q_proj": "q", "q": "q",
    "key": "k", "k_proj": "k", "k": "k",
    "value": "v", "v_proj": "v", "v": "v",
}  # fmt: skip
_ROW_ORDER = ("q", "k", "v")


def layer_position(name: str) -> tuple[str, int]:
    """(projection row label, 0-based block index) of a LoRA module name."""
    parts = name.split(".")
    blocks = [i for i, p in enumerate(parts) if re.fullmatch(r"\d+", p)]
    if not blocks:
        raise UserError(
            f"cannot find a block index in module name {name!r}; expected e.g. 'encoder.layer.3.attention.self.query'"
        )
    leaf = parts[-1]
    return _PROJECTIONS.get(leaf, leaf), int(parts[blocks[-1]])


def rank_heatmap(ranks: Mapping[str, int], path: str | os.PathLike, title: str | None = None) -> Path:
    """Draw the rank of every layer as a projections x blocks grid with numbers; returns ``path``."""
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

    fig = Figure(figsize=(max(4.0, 0.45 * len(blocks) + 1.5), 0.55 * len(rows) + 1.3))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(grid, cmap="Blues", vmin=0, vmax=vmax, aspect="auto")
    for i, row in enumerate(grid):
        for j, value in enumerate(row):
            if not math.isnan(value):
                # dark cells get white digits so the number stays readable
                color = "white" if value > 0.6 * vmax else "black"
                ax.text(j, i, str(int(value)), ha="center", va="center", fontsize=9, color=color)
    ax.set_xticks(range(len(blocks)), [str(b + 1) for b in blocks])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("block")
    fig.colorbar(image, ax=ax, label="rank", fraction=0.03, pad=0.02)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=150)
