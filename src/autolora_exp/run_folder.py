"""Run identity: the folder a run writes to, and the check that a folder's files are its own.

    python run.py ...     ->  outputs/runs/<name>/<task>/<model>/<method>/seed<N>-<digest>/
    python run.py -m ...  ->  outputs/multirun/<name>/<task>/<model>/<method>/seed<N>-<digest>/
    digest = the first DIGEST_CHARS hex digits of results.config_hash(resolved config)

The digest covers every config key that can change a number; results.UNHASHED_KEYS lists the
ones left out (where the run writes, W&B, the progress bar, how often it checkpoints, whether
checkpoints are kept, how often it logs, pinned host memory). So two runs with different configs (``method.lr=1e-4`` vs ``1e-2``,
``debug=default`` vs a real run) never share a folder, the same config always lands in the
same folder (a relaunched sweep finds its finished runs), and the path stays readable. The
resolved config is in each folder (``.hydra/config.yaml``, and ``config`` in result.json).

The path is computed by Hydra from ``conf/config.yaml`` through the ``${run_digest:}``
resolver registered here (:func:`register_resolver`, called by ``schema.register`` before any
config is composed). A folder chosen by hand (``hydra.run.dir=...``) may already hold another
config's files: :func:`check_owner` refuses to write there. A folder that cannot be written
at all is refused before Hydra creates it (:class:`OutputFolderCheck`, a Hydra callback), with
one line instead of Hydra's logging traceback.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from autolora_exp import results
from autolora_exp.errors import UserError

#: hex digits of the config hash in a folder name (32 bits: a collision between two configs of
#: one task/model/method/seed is a 1-in-4-billion event, and check_owner still catches it)
DIGEST_CHARS = 8
RESOLVER = "run_digest"
#: checkpoints of the phases live in <run folder>/checkpoints/{search,train}.pt
CHECKPOINT_DIR = "checkpoints"
#: the sums of earlier attempts' phase costs (pipeline.PhaseTimer), beside the checkpoints
ATTEMPTS_FILE = "attempts.json"


def config_digest(cfg: DictConfig) -> str:
    """``results.config_hash`` of a composed config, the value pipeline.run records.

    Works on the whole Hydra config (the ``hydra`` node is dropped) and on the job's config.
    ``output_dir`` is blanked before resolving: it is not hashed, and it interpolates the
    very folder this digest names.
    """
    cfg = copy.deepcopy(cfg)
    with read_write(cfg), open_dict(cfg):
        if "hydra" in cfg:
            del cfg["hydra"]
        cfg.output_dir = ""
    return results.config_hash(OmegaConf.to_container(cfg, resolve=True))


def _short_digest(*, _root_: DictConfig) -> str:
    return config_digest(_root_)[:DIGEST_CHARS]


def register_resolver() -> None:
    """``${run_digest:}`` -> the short digest of the config being composed (idempotent)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, _short_digest, use_cache=False)


def with_digest(folder: str | Path, digest: str) -> Path:
    """``.../seed0`` -> ``.../seed0-<short digest>``: the last part of a run folder, as
    conf/config.yaml names it (``seed${seed}-${run_digest:}``), for code that plans folders
    itself (the benchmarks)."""
    folder = Path(folder)
    return folder.with_name(f"{folder.name}-{digest[:DIGEST_CHARS]}")


def check_owner(output_dir: str | Path, digest: str) -> None:
    """Refuse a run folder whose result.json or checkpoints were written by another config.

    The checkpoints' owner is read from ``checkpoints/attempts.json`` (written with the config
    hash at the end of every phase, before any checkpoint; each checkpoint also carries the hash
    and :class:`~autolora_exp.checkpoint.Checkpointer` refuses another's). A ``failed.json`` of
    another config is only a record of a failure: it is replaced, and so is its
    ``attempts.json`` when no checkpoint lies beside it. A file that cannot be read is not taken
    as another config's.
    """
    output_dir = Path(output_dir)
    owned = [output_dir / results.RESULT_FILE]
    if any((output_dir / CHECKPOINT_DIR).glob("*.pt")):
        owned.append(output_dir / CHECKPOINT_DIR / ATTEMPTS_FILE)
    for path in owned:
        owner = _owner(path)
        if owner is None or owner == digest:
            continue
        raise UserError(f"{path} belongs to another config (hash {owner[:DIGEST_CHARS]}, this run's is "
                        f"{digest[:DIGEST_CHARS]}); it is never overwritten: choose another folder "
                        "(drop hydra.run.dir / hydra.sweep.subdir to get this config's own) or move it away")


def _owner(path: Path) -> str | None:
    """The config hash a JSON file records (:func:`results.recorded_hash`: a result.json
    written before results carried ``config_hash`` is its config's), or None (no file,
    unreadable, no hash)."""
    try:
        return results.recorded_hash(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError):
        return None


#: held (flock) by the process running in a folder; left in place (removing it would race)
LOCK_FILE = ".lock"


@contextmanager
def exclusive(output_dir: str | Path) -> Iterator[None]:
    """Hold the run folder's lock, or fail at once naming the process that holds it.

    Two processes running one config in one folder (a sweep launched twice) would interleave
    their checkpoints; the second is refused. An advisory ``flock``: released by the kernel
    when its process dies (a killed or requeued job never leaves a stale lock). On file
    systems without working locks (some NFS setups) it protects nothing.
    """
    path = Path(output_dir) / LOCK_FILE
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        from autolora_exp.atomic import WriteError

        raise WriteError(path, err) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise UserError(f"another process (pid {holder}) is running in {output_dir}; wait for it to end "
                            "(its result is this config's) or stop it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def check_writable(folder: str | Path) -> None:
    """Create ``folder`` and a file in it (then remove the file), or raise ``OSError``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".write-check.", dir=folder)
    os.close(fd)
    os.unlink(probe)


class OutputFolderCheck(Callback):
    """Before a run (a sweep): its folder must be writable, else one line and exit status 2;
    a single run's folder must not hold another config's files nor be locked by another process
    (checked before Hydra rewrites the folder's ``.hydra/`` record).

    Hydra creates the folder and its log file before any of the app's code runs; on a folder
    it cannot write it fails with a logging traceback. Registered in conf/config.yaml
    (``hydra.callbacks.output_folder``)."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.run.dir, "hydra.run.dir")
        # before Hydra rewrites the folder's .hydra/ record: a hand-chosen folder of another
        # config, or a folder another process runs in (pipeline.run takes the lock for the run)
        try:
            check_owner(config.hydra.run.dir, config_digest(config))
            with exclusive(config.hydra.run.dir):
                pass
        except UserError as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        self._check(config.hydra.sweep.dir, "hydra.sweep.dir")

    @staticmethod
    def _check(folder: str, key: str) -> None:
        try:
            check_writable(folder)
        except OSError as err:
            print(f"error: the output folder {folder} cannot be written ({err.strerror or err}); "
                  f"choose a writable one with {key}=<folder>", file=sys.stderr, flush=True)
            sys.exit(2)


# Also on import: a submitit job process resolves its folder from the pickled config, and
# unpickling the Hydra callback above imports this module first (schema.register covers run.py).
register_resolver()
