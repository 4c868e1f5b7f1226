"""Preemption: SIGTERM/SIGUSR2 stop a run at the next step boundary, after a checkpoint.

Cluster schedulers warn a job before killing it (SLURM sends SIGUSR2 ``signal_delay_s`` early
with submitit, SIGTERM on preemption). :class:`StopSignal` records the signal instead of dying
mid-step; the training loops check :attr:`StopSignal.requested` after every step, save a
checkpoint and raise :class:`Preempted`. :meth:`StopSignal.finish` then hands the signal to the
handler that was installed before (submitit's, which requeues the job through the launcher's
``checkpoint`` hook) or exits with the conventional status 128 + signal number. The requeued run
resumes from the checkpoint.
"""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any

SIGNALS = tuple(s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGUSR2", None)) if s is not None)


class Preempted(Exception):
    """The run was asked to stop; its progress is in the last checkpoint."""

    def __init__(self, signum: int, phase: str, step: int) -> None:
        super().__init__(f"stopped by signal {signal.Signals(signum).name} in {phase} at step {step}; "
                         "run the same command again to resume from the checkpoint")
        self.signum = signum


class StopSignal:
    """Records SIGTERM/SIGUSR2 while installed (a context manager); no-op outside the main thread."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        #: the handlers that were installed before: finish() hands the signal on to them
        self._chained: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.signum = signum

    def __enter__(self) -> "StopSignal":
        try:
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._previous.clear()
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._chained = dict(self._previous)
        self._previous.clear()

    def check(self, phase: str, step: int, save: Any) -> None:
        """After a step: when a stop was requested, ``save()`` a checkpoint and raise :class:`Preempted`."""
        if self.signum is not None:
            save()
            raise Preempted(self.signum, phase, step)

    def finish(self) -> None:
        """Hand the recorded signal to the handler installed before (submitit requeues the job
        there), then exit with status 128 + signal number."""
        if self.signum is None:
            return
        handler = self._chained.get(self.signum)
        if callable(handler):
            handler(self.signum, None)
        sys.exit(128 + self.signum)
