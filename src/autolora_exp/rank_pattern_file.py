"""``rank_pattern.json``: {full module name: rank} of a rank search, written for any method.

The pipeline writes the ranks a method's search found (:class:`~autolora_exp.contract.RankSearch`)
with :func:`save_rank_pattern_json`; :func:`load_rank_pattern_json` reads them back (validated),
e.g. to hand them to peft (``methods.autolora.rank_pattern.rank_pattern_config``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from autolora_exp.atomic import atomic_write_text
from autolora_exp.errors import UserError


def check_ranks(ranks: Mapping[str, int]) -> dict[str, int]:
    """``ranks`` as {str: int}, each an integer >= 0; at least one layer."""
    if not ranks:
        raise UserError("no ranks given; the search found no selection layers")
    checked = {}
    for name, r in ranks.items():
        if isinstance(r, bool) or not isinstance(r, int) or r < 0:
            raise UserError(f"rank {r!r} of layer {name!r} is not valid; ranks are integers >= 0")
        checked[str(name)] = int(r)
    return checked


def save_rank_pattern_json(ranks: Mapping[str, int], path: str | os.PathLike) -> Path:
    """Write {full module name: rank} as JSON (readable by :func:`load_rank_pattern_json`)."""
    ranks = check_ranks(ranks)
    return atomic_write_text(path, json.dumps(ranks, indent=2) + "\n")  # a reader never sees half a file


def load_rank_pattern_json(path: str | os.PathLike) -> dict[str, int]:
    """Read a file written by :func:`save_rank_pattern_json` (validated)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"rank pattern file {str(path)!r} does not exist")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise UserError(f"rank pattern file {str(path)!r} is not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise UserError(f"rank pattern file {str(path)!r} must hold an object {{module name: rank}}")
    return check_ranks(data)
