"""Reading local data files so that a broken file is named: its path, the line, what is wrong.

Python's decoders report a bad byte by its offset in an internal buffer and never name the
file; :func:`named_decode_errors` turns that into ``<file>:<line>: byte 0xff is not UTF-8``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from autolora_exp.errors import UserError


def decode_error(path: str | Path, encoding: str = "utf-8") -> UserError:
    """A UserError naming ``path`` and the first line holding a byte that is not ``encoding``."""
    for line_no, line in enumerate(Path(path).read_bytes().split(b"\n"), start=1):
        try:
            line.decode(encoding)
        except UnicodeDecodeError as err:
            return UserError(f"{path}:{line_no}: byte 0x{line[err.start]:02x} is not valid {encoding}; "
                             f"save the file as {encoding}")
    return UserError(f"{path} is not valid {encoding}; save the file as {encoding}")


@contextmanager
def named_decode_errors(path: str | Path, encoding: str = "utf-8") -> Iterator[None]:
    """Re-raise a UnicodeDecodeError met while reading ``path`` as :func:`decode_error`."""
    try:
        yield
    except UnicodeDecodeError:
        raise decode_error(path, "utf-8" if encoding == "utf-8-sig" else encoding) from None
