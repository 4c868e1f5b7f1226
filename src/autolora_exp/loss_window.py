"""The mean of logged losses over the steps since the previous log point.

    mean = (1 / n) * sum_{s in window} loss_s        (window: the n steps since the last log)

Losses are summed as tensors where they were computed, so a window costs one host sync, when
its mean is read, not one per step. Used by the search's log points (``search/train_loss``,
``search/val_loss``) and by the training loop's per-step log (``train/loss``).
"""

from __future__ import annotations

from typing import Any

import torch


class LossWindow:
    """Sum and count of several loss series since the last :meth:`take`."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.n = 0

    def add(self, *losses: torch.Tensor) -> None:
        """One step's losses (0-dim tensors, in a fixed order)."""
        values = torch.stack([loss.detach().reshape(()).float() for loss in losses])
        self.sums = values if self.sums is None else self.sums + values
        self.n += 1

    def take(self) -> list[float] | None:
        """The window's means (one host sync), then an empty window; None when it is empty."""
        if self.sums is None or self.n == 0:
            return None
        means = (self.sums / self.n).tolist()
        self.sums, self.n = None, 0
        return means

    def state(self) -> dict[str, Any]:
        """For a checkpoint: a resumed phase continues the window where it was."""
        return {"sums": None if self.sums is None else self.sums.cpu(), "n": self.n}

    def load_state(self, state: dict[str, Any] | None, device: torch.device | None = None) -> None:
        if not state:
            return
        self.sums = None if state["sums"] is None else state["sums"].to(device or "cpu")
        self.n = state["n"]
