"""Read back what an offline W&B run wrote: the records of its ``run-<id>.wandb`` file.

wandb 0.31 has no Python reader of its transaction log (the old ``wandb.sdk.internal.datastore``
is gone with the Go core), so this is one: the file is a LevelDB-style log

    header   ":W&B" + magic 0xBEE1 (little endian) + version 0                 (7 bytes)
    blocks   32 KiB; each record: crc32 (4) + length (2, LE) + type (1) + payload, a record
             that does not fit is split FIRST/MIDDLE/LAST across blocks; a block tail shorter
             than a header is zero padding

and every payload is a ``wandb.proto.wandb_internal_pb2.Record``. History rows are what W&B kept
after its own rules (a ``step=`` below the current step is dropped by W&B before it is written).
"""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

BLOCK = 32 * 1024
HEADER = 7
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def payloads(path: Path) -> Iterator[bytes]:
    data = Path(path).read_bytes()
    if data[:4] != b":W&B" or struct.unpack("<H", data[4:6])[0] != 0xBEE1:
        raise ValueError(f"{path} is not a W&B transaction log")
    pos, parts = HEADER, b""
    while pos + HEADER <= len(data):
        left = BLOCK - pos % BLOCK
        if left < HEADER:  # padding at the end of a block
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + HEADER])
        payload = data[pos + HEADER:pos + HEADER + length]
        pos += HEADER + length
        if kind == FULL:
            yield payload
        elif kind == FIRST:
            parts = payload
        elif kind == MIDDLE:
            parts += payload
        elif kind == LAST:
            yield parts + payload
        else:  # zero type: the unwritten end of the last block
            break


def _put(row: dict[str, Any], item: Any) -> None:
    """A history/summary item into ``row``; W&B splits a dict value (media: an image's path,
    size, ...) into items with nested keys, rebuilt here as a dict."""
    keys = [item.key] if item.key else list(item.nested_key)
    for key in keys[:-1]:
        row = row.setdefault(key, {})
    row[keys[-1]] = json.loads(item.value_json)


@dataclass
class OfflineRun:
    path: Path
    run: Any = None                                            # the RunRecord (id, group, job_type, ...)
    history: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)      # the summary updates, merged in order
    metrics: list[Any] = field(default_factory=list)           # define_metric records
    artifacts: list[Any] = field(default_factory=list)         # ArtifactRecords
    exit_code: int | None = None
    preempting: bool = False                                   # run.mark_preempting() was called

    def curve(self, axis: str, key: str) -> list[tuple[Any, Any]]:
        """(axis value, metric value) of every kept history row that holds ``key``."""
        return [(row.get(axis), row[key]) for row in self.history if key in row]


def read_offline_run(path: Path, wait_s: float = 30.0) -> OfflineRun:
    """The run's records; waits up to ``wait_s`` for its exit record, since W&B's service may
    still be writing the file when ``finish()`` has returned (seen for the first run of a process)."""
    deadline = time.monotonic() + wait_s
    while True:
        out = _read(Path(path))
        if out.exit_code is not None or time.monotonic() > deadline:
            return out
        time.sleep(0.05)


def _read(path: Path) -> OfflineRun:
    from wandb.proto import wandb_internal_pb2 as pb

    out = OfflineRun(path)
    for payload in payloads(path):
        record = pb.Record()
        record.ParseFromString(payload)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            out.run = record.run
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _put(row, item)
            out.history.append(row)
        elif kind == "summary":
            for item in record.summary.update:
                _put(out.summary, item)
        elif kind == "metric":
            out.metrics.append(record.metric)
        elif kind == "artifact":
            out.artifacts.append(record.artifact)
        elif kind == "preempting":
            out.preempting = True
        elif kind == "exit":
            out.exit_code = record.exit.exit_code
    return out


def offline_runs(run_folder: Path) -> list[OfflineRun]:
    """Every offline W&B run under ``<run folder>/wandb``, oldest first (one per attempt)."""
    files = sorted(Path(run_folder, "wandb").glob("offline-run-*/run-*.wandb"))
    runs = [read_offline_run(f) for f in files]
    return sorted(runs, key=lambda r: r.run.start_time.ToNanoseconds())
