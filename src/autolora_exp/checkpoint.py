"""Checkpoints of a training phase (the search, the retrain): save every N steps, resume exactly.

A checkpoint holds everything the next step depends on: the trainable weights (and selection
logits), the optimiser and scheduler states, the step and epoch, the metrics so far, the
method's own state (AdaLoRA's allocator) and the Python/NumPy/torch RNG states. Data order
needs no state: every epoch's shuffle is seeded by (seed, epoch) and a resumed epoch skips
the batches already done.

Files are written atomically (temporary file, then rename) and the previous checkpoint is kept
as ``<phase>.prev.pt``: a corrupt or half-written last checkpoint falls back to the previous one,
with a warning. A checkpoint carries the hash of the config that wrote it; resuming under a
different config is refused.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

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


class Checkpointer:
    """Save and load the checkpoints of one phase in ``directory``."""

    def __init__(self, directory: str | Path, phase: str, every_steps: int, config_hash: str) -> None:
        self.directory = Path(directory)
        self.phase = phase
        self.every_steps = every_steps
        self.config_hash = config_hash

    @property
    def path(self) -> Path:
        return self.directory / f"{self.phase}.pt"

    @property
    def previous(self) -> Path:
        return self.directory / f"{self.phase}.prev.pt"

    def due(self, step: int) -> bool:
        return bool(self.every_steps) and step % self.every_steps == 0

    def save(self, state: dict[str, Any]) -> Path:
        """Write ``state`` atomically; the last checkpoint becomes the previous one."""
        self.directory.mkdir(parents=True, exist_ok=True)
        state = {**state, "config_hash": self.config_hash, "phase": self.phase}
        fd, tmp = tempfile.mkstemp(prefix=f".{self.phase}.", suffix=".pt", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(state, f)
                f.flush()
                os.fsync(f.fileno())
            if self.path.exists():
                os.replace(self.path, self.previous)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return self.path

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
