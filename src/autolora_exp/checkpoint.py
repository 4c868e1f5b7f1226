"""Checkpoints of a training phase (the search, the retrain): save on a schedule, resume exactly.

A checkpoint holds everything the next step depends on: the trainable weights (and selection
logits), the optimiser and scheduler states, the step and epoch, the metrics so far, the
method's own state (AdaLoRA's allocator) and the Python/NumPy/torch RNG states. Data order
needs no state: every epoch's shuffle is seeded by (seed, epoch) and a resumed epoch skips
the batches already done.

When: every ``train.checkpoint_every_s`` seconds (default 1800: a hard kill loses at most 30
minutes, and a 1.5-4.3 GB full fine-tuning checkpoint is written twice an hour whatever the
step time) and/or every ``train.checkpoint_every`` steps (default 0, off: a step takes
milliseconds on a GPU and seconds on a CPU, so no step count suits both), both checked at
every step and epoch boundary; at a stop signal (:mod:`autolora_exp.preemption`), which is
how preemption loses nothing; and at the end of each phase.

Files are written by :func:`autolora_exp.atomic.atomic_write` and the previous checkpoint is
kept as ``<phase>.prev.pt``: a corrupt or half-written last checkpoint falls back to the previous
one, with a warning. A save that fails (disk full) leaves both as they were and stops the run
with one line (:class:`CheckpointWriteError`). A checkpoint carries the hash of the config that
wrote it; resuming under a different config is refused.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from autolora_exp.atomic import WriteError, atomic_write
from autolora_exp.errors import UserError

log = logging.getLogger(__name__)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The parameters that train (everything else is reloaded from the backbone's source)."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    missing = [n for n in state if n not in params]
    if missing:
        raise UserError(f"checkpoint has parameters the model lacks, e.g. {missing[:3]}; "
                        "it was written by a different model or method")
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


def checkpoint_schedule(train_cfg: Any) -> dict[str, Any]:
    """``every_steps`` and ``every_s`` of :class:`Checkpointer` from ``train.checkpoint_every``
    and ``train.checkpoint_every_s`` (0 or null: that criterion is off), checked."""
    every_steps, every_s = train_cfg.checkpoint_every, train_cfg.get("checkpoint_every_s")
    if every_steps is not None and every_steps < 0:
        raise UserError(f"train.checkpoint_every={every_steps} is not valid; use a number of steps >= 1, "
                        "or 0 for no step-based checkpoints")
    if every_s is not None and every_s < 0:
        raise UserError(f"train.checkpoint_every_s={every_s} is not valid; use a number of seconds > 0, "
                        "or 0/null for no time-based checkpoints")
    return {"every_steps": every_steps or 0, "every_s": every_s or None}


class CheckpointWriteError(WriteError):
    """A checkpoint could not be saved; the ones on disk are untouched."""

    def __init__(self, err: WriteError, kept: list[Path]) -> None:
        super().__init__(err.path, err)
        where = " and ".join(str(p) for p in kept)
        self.message += (f"; the last checkpoint is kept ({where}): free space and run the same command again "
                         "to resume from it" if kept else "; no earlier checkpoint of this phase exists")


class Checkpointer:
    """Save and load the checkpoints of one phase in ``directory``.

    :meth:`due` says when the schedule asks for one: every ``every_steps`` steps, or once
    ``every_s`` seconds have passed since the last save (or since this checkpointer was made).
    """

    def __init__(self, directory: str | Path, phase: str, every_steps: int, config_hash: str,
                 every_s: float | None = None) -> None:
        self.directory = Path(directory)
        self.phase = phase
        self.every_steps = every_steps
        self.every_s = every_s
        self.config_hash = config_hash
        self._last_save = time.monotonic()

    def for_phase(self, phase: str) -> "Checkpointer":
        """A checkpointer of another phase (e.g. one rank of the grid) with the same folder,
        schedule and config hash."""
        return Checkpointer(self.directory, phase, self.every_steps, self.config_hash, self.every_s)

    @property
    def path(self) -> Path:
        return self.directory / f"{self.phase}.pt"

    @property
    def previous(self) -> Path:
        return self.directory / f"{self.phase}.prev.pt"

    def due(self, step: int) -> bool:
        by_steps = bool(self.every_steps) and step % self.every_steps == 0
        return by_steps or (bool(self.every_s) and time.monotonic() - self._last_save >= self.every_s)

    def save(self, state: dict[str, Any]) -> Path:
        """Write ``state`` atomically; the last checkpoint becomes the previous one."""
        state = {**state, "config_hash": self.config_hash, "phase": self.phase}
        try:
            path = atomic_write(self.path, lambda f: torch.save(state, f), keep_previous=self.previous)
        except WriteError as err:
            raise CheckpointWriteError(err, [p for p in (self.path, self.previous) if p.exists()]) from err
        self._last_save = time.monotonic()
        return path

    def load(self) -> dict[str, Any] | None:
        """The newest readable checkpoint of this phase, or None to start the phase afresh."""
        for path in (self.path, self.previous):
            if not path.exists():
                continue
            try:
                state = torch.load(path, map_location="cpu", weights_only=False)
            except Exception as err:  # noqa: BLE001 - any unreadable file: try the previous one
                log.warning("checkpoint %s is unreadable (%s: %s); trying the previous one",
                            path, type(err).__name__, err)
                continue
            if state.get("config_hash") != self.config_hash:
                raise UserError(f"{path} was written by a different config; delete {self.directory} to start "
                                "afresh, or run with the config that wrote it")
            log.info("resuming %s from %s (step %s)", self.phase, path.name, state.get("step"))
            return state
        return None

    def clear(self) -> None:
        for path in (self.path, self.previous):
            path.unlink(missing_ok=True)
