"""Progress of the long loops (training, the AutoLoRA search, decoding), readable in a terminal
and in a SLURM output file.

On a terminal (stderr is a TTY) :func:`progress_bar` is tqdm's bar. Otherwise (a batch job, a
pipe, a file) a bar would fill the file with carriage-return redraws, so it prints one plain line
to stdout at most every ``every_s`` seconds (``train.log_every_s``, default 30) and a last one
when the loop ends::

    train: step 1200/5000 (24%), 3.41 step/s, elapsed 0:05:52, ETA 0:18:34, epoch=1, loss=0.4127

rate = (steps done by this process) / (seconds since the loop started); ETA = steps left / rate.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any, Callable, TextIO

from tqdm.auto import tqdm

from autolora_exp.errors import UserError


@dataclass
class ProgressSettings:
    """Set once per run by the pipeline (:func:`configure`) from ``train.progress`` and
    ``train.log_every_s``; read by every loop that reports progress."""

    enabled: bool = True
    every_s: float = 30.0


SETTINGS = ProgressSettings()


def configure(enabled: bool | None = None, every_s: float | None = None) -> None:
    if enabled is not None:
        SETTINGS.enabled = bool(enabled)
    if every_s is not None:
        if every_s < 0:
            raise UserError(f"train.log_every_s={every_s}: expected a number of seconds >= 0")
        SETTINGS.every_s = float(every_s)


def format_duration(seconds: float) -> str:
    """``H:MM:SS`` (hours grow past 24: a five-day run is ``120:00:00``)."""
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format_value(value: Any) -> str:
    if hasattr(value, "item") and callable(value.item):  # a tensor: read at print time only
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class LineProgress:
    """tqdm's interface as the loops use it (``update``, ``set_postfix``, ``write``, ``close``, a
    context manager) printing plain lines instead of a redrawn bar.

    ``set_postfix`` values are formatted only when a line is printed, so a tensor passed there is
    read back from the device once per line, not once per step.
    """

    def __init__(self, total: int | None = None, desc: str = "", initial: int = 0, unit: str = "step",
                 every_s: float = 30.0, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.desc, self.unit = total, desc, unit
        self.n = self._start_n = self._printed_n = initial
        self.every_s = every_s
        self.stream = stream
        self.clock = clock
        self._start = self._last = clock()
        self._postfix: dict[str, Any] = {}
        self._pending = False
        self.closed = False

    def __enter__(self) -> "LineProgress":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        if self._pending:  # a line fell due at the last step and no set_postfix followed it
            self._print(self.clock())
        self.n += n
        if self.clock() - self._last >= self.every_s:
            self._pending = True  # printed by the set_postfix that usually follows, so it shows this step's values

    def set_postfix(self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any) -> None:
        self._postfix = {**(ordered_dict or {}), **kwargs}
        if self._pending:
            self._print(self.clock())

    def write(self, text: str) -> None:
        print(text, file=self.stream or sys.stdout, flush=True)

    def close(self) -> None:
        if not self.closed and (self._pending or self.n != self._printed_n):
            self._print(self.clock())
        self.closed = True

    def line(self, now: float) -> str:
        elapsed = now - self._start
        done = self.n - self._start_n
        parts = [f"{self.unit} {self.n}/{self.total}" if self.total else f"{self.unit} {self.n}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f}%)"
        rate = done / elapsed if elapsed > 0 else 0.0
        if rate > 0:
            parts.append(f"{rate:.3g} {self.unit}/s" if rate >= 1 else f"{1 / rate:.3g} s/{self.unit}")
        parts.append(f"elapsed {format_duration(elapsed)}")
        if self.total and rate > 0:
            parts.append(f"ETA {format_duration(max(self.total - self.n, 0) / rate)}")
        parts.extend(f"{k}={_format_value(v)}" for k, v in self._postfix.items())
        return f"{self.desc}: " + ", ".join(parts) if self.desc else ", ".join(parts)

    def _print(self, now: float) -> None:
        self.write(self.line(now))
        self._last, self._printed_n, self._pending = now, self.n, False


def progress_bar(total: int | None = None, desc: str = "", initial: int = 0, disable: bool = False,
                 unit: str = "step", every_s: float | None = None, stream: TextIO | None = None,
                 **tqdm_kwargs: Any) -> Any:
    """The progress reporter of a loop: tqdm on a terminal, :class:`LineProgress` elsewhere.

    ``disable`` (or ``train.progress=false``) silences both. Whether ``stream`` (default: stderr,
    where tqdm draws) is a TTY picks the kind; plain lines go to ``stream`` when one is given, else
    to stdout, next to the epoch summaries and the log.
    """
    off = disable or not SETTINGS.enabled
    target = stream or sys.stderr
    if off or _isatty(target):
        return tqdm(total=total, desc=desc, initial=initial, disable=off, unit=unit, file=target, **tqdm_kwargs)
    return LineProgress(total, desc, initial, unit, SETTINGS.every_s if every_s is None else every_s, stream)


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # closed or not a file
        return False
