"""Weights & Biases: one run per Hydra job. A W&B failure is logged and never kills the run."""

from __future__ import annotations

import logging
import os
from typing import Any

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")


class Tracker:
    """Thin wrapper over a wandb run; every call is a no-op once W&B has failed or is disabled."""

    def __init__(self, logger_cfg: Any, config: dict[str, Any], name: str, output_dir: str) -> None:
        self.run = None
        mode = os.environ.get("WANDB_MODE") or logger_cfg.mode
        if mode not in MODES:
            log.warning("W&B mode '%s' is not one of %s; logging disabled", mode, MODES)
            return
        if mode == "disabled":
            return
        try:
            import wandb

            self.run = wandb.init(project=logger_cfg.project, entity=logger_cfg.entity,
                                  group=logger_cfg.group or config.get("name"), name=name,
                                  tags=list(logger_cfg.tags), config=config, dir=output_dir,
                                  mode=mode, reinit="finish_previous")
        except Exception as err:  # noqa: BLE001 - tracking must never kill a run
            log.warning("W&B init failed (%s: %s); continuing without it", type(err).__name__, err)
            self.run = None

    def _call(self, what: str, fn: Any, *args: Any, **kwargs: Any) -> None:
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as err:  # noqa: BLE001
            log.warning("W&B %s failed (%s: %s); continuing without it", what, type(err).__name__, err)
            self.run = None

    def log(self, data: dict[str, Any], step: int | None = None) -> None:
        self._call("log", lambda: self.run.log(data, step=step))

    def log_image(self, key: str, path: str) -> None:
        def _log() -> None:
            import wandb

            self.run.log({key: wandb.Image(path)})

        self._call("log_image", _log)

    def summary(self, data: dict[str, Any]) -> None:
        self._call("summary", lambda: self.run.summary.update(data))

    def finish(self) -> None:
        self._call("finish", lambda: self.run.finish())
