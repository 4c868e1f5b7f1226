"""Where a task's rows came from, for the log and for result.json's ``data`` record.

A loader that can take its rows from more than one place (the Hub, official release files, a
local folder) states the route it used with :func:`with_source`: one log line, and a record per
split that :func:`source_of` hands to the pipeline (``result["data"][split]["source"]``).

Routes: ``{"route": "hub", "id", "revision"}``, ``{"route": "release", "url", "sha256"}``,
``{"route": "data_dir", "path"}``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import datasets

log = logging.getLogger(__name__)

_ATTRIBUTE = "autolora_source"


def with_source(data: datasets.DatasetDict, what: str, sources: Mapping[str, Mapping[str, Any]],
                note: str = "") -> datasets.DatasetDict:
    """Attach ``sources`` ({split: route record}) to ``data`` and log the route in one line."""
    setattr(data, _ATTRIBUTE, {split: dict(record) for split, record in sources.items()})
    records = list(sources.values())
    route = records[0]["route"]
    where = sorted({str(r.get("id") or r.get("path") or r.get("url")) for r in records})
    shown = where[0] if len(where) == 1 else f"{len(where)} files under {os.path.commonprefix(where).rpartition('/')[0]}/"
    log.info("%s data: %s route, %s%s", what, route, shown, f"; {note}" if note else "")
    return data


def source_of(data: Any, split: str) -> dict[str, Any] | None:
    """The route record of ``split`` (``None`` when the loader records none)."""
    return (getattr(data, _ATTRIBUTE, None) or {}).get(split)
