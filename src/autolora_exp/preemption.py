"""Preemption: SIGTERM/SIGUSR2/SIGINT stop a run at the next step boundary, after a checkpoint.

Cluster schedulers warn a job before killing it (SLURM sends SIGUSR2 ``signal_delay_s`` early
with submitit, SIGTERM on preemption, ``scancel`` and Kubernetes SIGTERM the whole process
group); Ctrl-C sends SIGINT to the terminal's foreground process group. :class:`StopSignal`
records the signal instead of dying mid-step:

- the training loops call :meth:`StopSignal.check` after every step: on a stop it saves a
  checkpoint and raises :class:`Preempted`;
- loops that keep no state of their own (evaluation, the test split, beam decoding) call
  :func:`stop_point` between batches: the stop is raised at once, the phase keeps its checkpoint
  from the last step boundary and the evaluation is redone on resume;
- DataLoader workers ignore the stop signals (:func:`ignore_stop_signals`): a process-group
  signal reaches them too, and the main process owns the stop (it shuts them down with the
  loader);
- a second Ctrl-C while a stop is pending aborts at once (``KeyboardInterrupt``); the last
  checkpoint written stays on disk (checkpoints are written atomically).

:meth:`StopSignal.finish` then hands the signal to the handler that was installed before
(submitit's, which requeues the job through the launcher's ``checkpoint`` hook) or exits with the
conventional status 128 + signal number (143 for SIGTERM, 130 for Ctrl-C). The requeued run
resumes from the checkpoint.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType
from typing import Any, ClassVar

SIGNALS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGUSR2", "SIGINT") if hasattr(signal, name))
#: Python's own handlers: nothing to hand a recorded signal on to
_DEFAULT_HANDLERS = (signal.SIG_DFL, signal.SIG_IGN, signal.default_int_handler, None)


class Preempted(Exception):
    """The run was asked to stop; its progress is in the last checkpoint.

    ``phase`` is where the stop was taken (``train``, ``search``, ``grid r=4``, ``test``),
    ``step`` the step boundary of the checkpoint (None when the phase has no steps), ``during``
    the stateless work that was cut short (``evaluation``, ``decoding``) and is redone on resume.
    """

    def __init__(self, signum: int, phase: str, step: int | None = None, during: str | None = None) -> None:
        where = phase if step is None else f"{phase} at step {step}"
        if during is not None:
            where += f" (during {during}, redone on resume)"
        super().__init__(f"stopped by signal {signal.Signals(signum).name} in {where}; "
                         "run the same command again to resume from the checkpoint")
        self.signum, self.phase, self.step, self.during = signum, phase, step, during

    def within(self, phase: str, step: int | None = None) -> "Preempted":
        """This stop, raised inside stateless work, as seen by the ``phase`` that ran that work."""
        return Preempted(self.signum, phase, step, during=self.phase)


class StopSignal:
    """Records SIGTERM/SIGUSR2/SIGINT while installed (a context manager); no-op outside the main thread."""

    #: the StopSignal whose handlers are installed now (signal handlers are per process):
    #: evaluation and decoding loops reach it through :func:`stop_point`
    active: ClassVar["StopSignal | None"] = None

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}
        #: the handlers that were installed before: finish() hands the signal on to them
        self._chained: dict[int, Any] = {}
        self._outer: StopSignal | None = None

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if signum == getattr(signal, "SIGINT", None):
            if self.signum is not None:  # a second Ctrl-C: abort now, keep the last checkpoint
                raise KeyboardInterrupt
            try:  # os.write on fd 2, not print: a handler may interrupt a print to the same stream
                os.write(2, b"interrupt: stopping at the next step boundary after a checkpoint "
                            b"(Ctrl-C again aborts at once)\n")
            except OSError:
                pass
        if self.signum is None:  # the first signal names the stop
            self.signum = signum

    def __enter__(self) -> "StopSignal":
        try:
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            for s, handler in self._previous.items():
                signal.signal(s, handler)
            self._previous.clear()
            return self
        self._outer, StopSignal.active = StopSignal.active, self
        return self

    def __exit__(self, *exc: Any) -> None:
        if StopSignal.active is self:
            StopSignal.active = self._outer
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        self._chained = dict(self._previous)
        self._previous.clear()

    def check(self, phase: str, step: int, save: Any) -> None:
        """After a step: when a stop was requested, ``save()`` a checkpoint and raise :class:`Preempted`."""
        if self.requested:
            save()
            raise Preempted(self.signum, phase, step)

    def finish(self) -> None:
        """Hand the recorded signal to the handler installed before (submitit requeues the job
        there), then exit with status 128 + signal number."""
        if self.signum is None:
            return
        handler = self._chained.get(self.signum)
        if callable(handler) and handler not in _DEFAULT_HANDLERS:
            handler(self.signum, None)
        sys.exit(128 + self.signum)


def stop_requested() -> bool:
    """Whether the installed :class:`StopSignal` (if any) has recorded a stop signal."""
    stop = StopSignal.active
    return stop is not None and stop.requested


def stop_point(work: str) -> None:
    """Between two batches of stateless work (``work``: evaluation, decoding): when a stop was
    requested, raise :class:`Preempted` at once. Nothing is saved here: the caller's phase keeps
    its checkpoint from the last step boundary and redoes the work on resume."""
    if stop_requested():
        raise Preempted(StopSignal.active.signum, work)  # type: ignore[union-attr]


def ignore_stop_signals(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: the workers ignore the stop signals.

    A process-group signal (SLURM, ``scancel``, Kubernetes, Ctrl-C) reaches the workers too;
    PyTorch's worker handler would end a worker on SIGTERM and the main process would then fail
    with "DataLoader worker ... is killed by signal". The main process owns the stop: it
    finishes the step, saves, and shuts the workers down with the loader (a worker whose main
    process is gone exits on its own, PyTorch's watchdog).
    """
    for s in SIGNALS:
        signal.signal(s, signal.SIG_IGN)
