"""result.json: the one interface between a run and everything downstream (tables, sweeps).

Schema (``schema_version`` 1)::

    status        "completed"
    name, task, model, method, seed
    config_hash   sha256 of the resolved config (see :func:`config_hash`)
    config        the resolved Hydra config
    metrics       {"primary": name, "final": {split: {...}}, "best": {split: {...}},
                   "best_epoch": int, "per_epoch": [{"epoch", "step", "train_loss", "eval"}],
                   "test": {...} or null}
    params        {"trainable": int, "total": int} (+ a method's own counts, e.g. SoRA's "effective")
    ranks         {module name: rank} or null
    phases        {phase: {"wall_s", "cpu_s", "attempts", "peak_mem_mb" | "peak_rss_mb", ...}}
                  (data, search, train, test): seconds summed over every attempt of a resumed
                  run, ``attempts`` = how many attempts ran the phase (pipeline.PhaseTimer)
    data          {split: {"n": int, "ids_sha256": str, "source": {"route": ...} (E2E, WebNLG)}}
    env           package versions, device, git commit
    created       ISO time

Files are written by :mod:`autolora_exp.atomic` (temporary file in the same folder, then
``os.replace``; mode 0644 under the usual umask): a crash leaves the old file or the new one,
never half of one.
"""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from autolora_exp.atomic import atomic_write_json

SCHEMA_VERSION = 1
RESULT_FILE = "result.json"
FAILED_FILE = "failed.json"

PACKAGES = ("torch", "transformers", "peft", "datasets", "hydra-core", "omegaconf", "wandb",
            "scikit-learn", "scipy", "numpy")


def git_commit(cwd: str | Path | None = None) -> str | None:
    """The commit of the code that ran (``+dirty`` when the tree has changes), if in a git repo."""
    cwd = cwd or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: str) -> dict[str, Any]:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    return {"python": platform.python_version(), "platform": platform.platform(), "device": device,
            "packages": versions, "git_commit": git_commit()}


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


#: config keys that do not change a run's numbers (left out of its hash)
UNHASHED_KEYS = (("output_dir",), ("logger",), ("train", "progress"), ("train", "log_every_s"),
                 ("train", "checkpoint_every"), ("train", "checkpoint_every_s"), ("train", "keep_checkpoints"),
                 ("train", "log_every"), ("train", "pin_memory"))


def config_hash(config: dict[str, Any]) -> str:
    """sha256 of the resolved config without the keys that do not change the numbers.

    Two runs with the same hash compute the same thing: a finished run is skipped, and a
    checkpoint only resumes a run with the same hash.
    """
    import copy
    import hashlib

    config = copy.deepcopy(config)
    for path in UNHASHED_KEYS:
        node = config
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def recorded_hash(record: Any) -> str | None:
    """The config hash of the run that wrote ``record`` (a result.json, failed.json or
    attempts.json), or None when it names none.

        recorded_hash = record["config_hash"]            when present
                      = config_hash(record["config"])    for files written before results
                                                         carried config_hash (same schema_version)
    """
    if not isinstance(record, dict):
        return None
    digest = record.get("config_hash")
    if isinstance(digest, str) and digest:
        return digest
    config = record.get("config")
    return config_hash(config) if isinstance(config, dict) and config else None


def finished_result(output_dir: str | Path, digest: str) -> dict[str, Any] | None:
    """The result.json in ``output_dir`` when it was written by a config with hash ``digest``."""
    path = Path(output_dir) / RESULT_FILE
    if not path.exists():
        return None
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return result if recorded_hash(result) == digest and result.get("status") == "completed" else None


def write_failure(output_dir: str | Path, phase: str, error: BaseException, config: dict[str, Any],
                  digest: str) -> Path | None:
    """failed.json: the error and the phase it happened in, for sweeps and ``make tables``.

    Never raises: a failure to record a failure (disk full) must not hide the original error.
    """
    import traceback

    record = {"schema_version": SCHEMA_VERSION, "status": "failed", "phase": phase,
              "error": f"{type(error).__name__}: {error}",
              "traceback": "".join(traceback.format_exception(error))[-8000:],
              "task": config.get("task", {}).get("name"), "model": config.get("model", {}).get("name"),
              "method": config.get("method", {}).get("name"), "seed": config.get("seed"),
              "name": config.get("name"), "config_hash": digest, "config": config, "created": now()}
    try:
        return atomic_write_json(Path(output_dir) / FAILED_FILE, record)
    except OSError:
        return None


REQUIRED_KEYS = ("schema_version", "status", "task", "model", "method", "seed", "config", "metrics",
                 "params", "phases", "data", "env")


def validate_result(result: dict[str, Any]) -> None:
    """Raise ``ValueError`` naming the first missing key or wrong version."""
    for key in REQUIRED_KEYS:
        if key not in result:
            raise ValueError(f"result is missing '{key}'")
    if result["schema_version"] != SCHEMA_VERSION:
        raise ValueError(f"result schema_version {result['schema_version']} != {SCHEMA_VERSION}")
    for key in ("primary", "final", "best", "per_epoch"):
        if key not in result["metrics"]:
            raise ValueError(f"result metrics are missing '{key}'")


def write_result(output_dir: str | Path, result: dict[str, Any]) -> Path:
    validate_result(result)
    return atomic_write_json(Path(output_dir) / RESULT_FILE, result)

