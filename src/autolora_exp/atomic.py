"""The one way this project writes a file: atomically, readable by others, with a clear error.

    write the bytes to a temporary file beside the target (same folder, so same file system)
    flush + fsync, give it the mode a plain ``open()`` would   (0666 & ~umask: 0644 under umask 022)
    [keep_previous: the old target becomes <keep_previous>]
    os.replace(temporary, target)                             (atomic on POSIX)

A crash or a full disk leaves the old file or the new one, never half of one, and no
temporary file. ``tempfile.mkstemp`` creates its file 0600: without the chmod a colleague's
``make tables`` could not read a result. A failing write raises :class:`WriteError` (a
:class:`~autolora_exp.errors.UserError`: the user frees space or fixes permissions) naming the
file and the reason, with the ``OSError`` chained.

Used for result.json, failed.json, search.json, rank_pattern.json, checkpoints, predictions,
figures, tables and benchmark summaries.

A folder (a converted model, an unpacked archive, a tokenizer's data files) is built the same
way by :func:`atomic_build_folder`: in a temporary sibling folder, then renamed into place, so
no reader ever sees half of one and two processes building it at once both end with a whole one.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from autolora_exp.errors import UserError


class WriteError(UserError, OSError):
    """A file of a run could not be written (disk full, read-only, permissions).

    Also an ``OSError`` (with the original ``errno``), so code that guards a write with
    ``except OSError`` keeps working."""

    def __init__(self, path: Path, err: OSError) -> None:
        self.message = f"could not write {path} ({err.strerror or err})"
        super().__init__(self.message)
        self.errno, self.strerror, self.filename = err.errno, err.strerror, str(path)
        self.path = path

    def __str__(self) -> str:
        return self.message


def _process_umask() -> int:
    old = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(old)
    return old


#: what a plain open() / mkdir() creates in this process (read once, at import: single-threaded then)
FILE_MODE = 0o666 & ~_process_umask()
FOLDER_MODE = 0o777 & ~_process_umask()


class _RecordingFile:
    """A binary file that remembers the ``OSError`` its ``write`` raised: writers in C
    (``torch.save``'s zip writer) turn it into a ``RuntimeError`` that no longer says
    "No space left on device"."""

    def __init__(self, f: IO[bytes]) -> None:
        self._f = f
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._f.write(data)
        except OSError as err:
            self.error = err
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], Any],
                 keep_previous: str | os.PathLike | None = None) -> Path:
    """Write ``path`` through ``write(binary file)``; see the module docstring.

    ``keep_previous``: move the current ``path`` there first (the last checkpoint becomes the
    previous one only once the new one is complete on disk).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as err:
        raise WriteError(path, err) from err
    recorder = None
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            recorder = _RecordingFile(f)
            write(recorder)
            f.flush()
            os.fsync(f.fileno())
        if keep_previous is not None and path.exists():
            os.replace(path, keep_previous)
        os.replace(tmp, path)
    except BaseException as err:
        Path(tmp).unlink(missing_ok=True)
        cause = err if isinstance(err, OSError) else (recorder.error if recorder is not None else None)
        if cause is not None:
            raise WriteError(path, cause) from err
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def atomic_save_figure(fig: Any, path: str | os.PathLike, **savefig_kwargs: Any) -> Path:
    """A matplotlib figure as PNG (the format is taken from the suffix)."""
    fmt = Path(path).suffix.lstrip(".") or "png"
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, **savefig_kwargs))


def atomic_build_folder(target: str | os.PathLike, build: Callable[[Path], Any],
                        is_complete: Callable[[Path], bool]) -> Path:
    """``target``, built by ``build(empty folder)`` unless ``is_complete(target)`` already.

        build(<temporary sibling folder>), chmod to a plain mkdir()'s mode (mkdtemp gives 0700)
        an incomplete target (an interrupted earlier build) is removed
        os.replace(temporary, target); if that fails, a complete target is another process's
        finished build (kept), anything else is a :class:`WriteError`

    An error of ``build`` propagates unchanged; the temporary folder never stays behind.
    """
    target = Path(target)
    if is_complete(target):
        return target
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    except OSError as err:
        raise WriteError(target, err) from err
    try:
        build(staging)
        os.chmod(staging, FOLDER_MODE)
        if target.exists() and not is_complete(target):
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(staging, target)
        except OSError as err:
            if not is_complete(target):  # not a concurrent build that finished first
                raise WriteError(target, err) from err
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, (set, tuple)):
        return list(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
