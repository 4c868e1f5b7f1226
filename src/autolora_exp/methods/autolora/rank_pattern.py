"""From searched ranks to the peft ``LoraConfig`` of the retrain (the JSON file: :mod:`autolora_exp.rank_pattern_file`).

peft resolves a module's rank with ``re.match(rf"(.*\\.)?({key})$", module_name)`` over the
``rank_pattern`` keys (first match wins), and its targets with ``name == t or
name.endswith("." + t)``. A short key such as ``layer.1.attention.self.query`` would be a
regex in which '.' matches any character; keys here are therefore full module names passed
through ``re.escape``: the only module matching the key of ``...layer.1...query`` is that
module (``...layer.11...query`` does not end with it), and the retrain gets exactly the
searched rank in every layer. Layers with rank 0 (the sigmoid rule, ``search.min_rank`` 0) are
left out of ``target_modules``: they get no LoRA at all. When every layer has rank 0 there is
nothing to retrain: a UserError (the retrain would train the head alone, which is no AutoLoRA
result), naming ``search.min_rank=1``.

Scaling (peft computes ``scaling = lora_alpha / r`` per layer):

- ``per_layer``: every layer uses ``lora_alpha``, so its scale is lora_alpha / r_l and a
  rank-2 layer is scaled 4x more than a rank-8 one. This is what the authors' retrain does
  (and plain peft with a rank_pattern).
- ``fixed``: ``alpha_pattern`` sets alpha_l = lora_alpha * r_l / k, so every layer has the
  search layer's scale lora_alpha / k and the retrained update keeps the magnitude per rank-1
  term that the search used.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from autolora_exp.errors import UserError
# the file format is neutral (the pipeline writes it for any method); re-exported for AutoLoRA's users
from autolora_exp.rank_pattern_file import check_ranks, load_rank_pattern_json, save_rank_pattern_json

__all__ = ["SCALINGS", "check_ranks", "load_rank_pattern_json", "pattern_key", "rank_pattern_config",
           "save_rank_pattern_json"]

SCALINGS = ("per_layer", "fixed")


def pattern_key(module_name: str) -> str:
    """The rank_pattern/alpha_pattern key that matches exactly ``module_name`` in peft."""
    return re.escape(module_name)


def rank_pattern_config(
    ranks: Mapping[str, int],
    lora_alpha: float = 16.0,
    scaling: str = "per_layer",
    k: int | None = None,
) -> dict[str, Any]:
    """Keyword arguments for ``peft.LoraConfig`` that reproduce ``ranks`` layer by layer.

    Returns ``target_modules`` (full names of the rank > 0 layers), ``r`` (max rank; every
    target has its own entry anyway), ``lora_alpha``, ``rank_pattern`` and ``alpha_pattern``.
    ``k`` (the search's terms per layer) is required by ``scaling="fixed"``.
    """
    ranks = check_ranks(ranks)
    if scaling not in SCALINGS:
        raise UserError(f"unknown scaling {scaling!r}; accepted: {', '.join(SCALINGS)}")
    kept = {n: r for n, r in ranks.items() if r > 0}
    if not kept:
        # a retrain of the head alone would be reported as AutoLoRA without any LoRA: refused
        raise UserError(f"every searched layer has rank 0 ({len(ranks)} layers): no layer would get LoRA and the "
                        "retrain would train the head alone; set method.search.min_rank=1 to keep LoRA on every "
                        "layer (the search's outcome stays in the run folder: search.json, rank_pattern.json)")
    alpha_pattern: dict[str, float] = {}
    if scaling == "fixed":
        if not k or k < 1:
            raise UserError(f"scaling='fixed' needs k (the search's rank-1 terms per layer), got k={k!r}")
        # alpha_l / r_l = lora_alpha / k for every layer
        alpha_pattern = {pattern_key(n): float(lora_alpha) * r / k for n, r in kept.items()}
    return {
        "target_modules": list(kept),
        "r": max(kept.values()),
        "lora_alpha": lora_alpha,
        "rank_pattern": {pattern_key(n): r for n, r in kept.items()},
        "alpha_pattern": alpha_pattern,
    }
