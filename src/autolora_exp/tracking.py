"""Weights & Biases: one W&B run per run folder, continued across requeues, that never stops a run.

Curves. Each phase has its own x-axis, logged as a metric and bound with ``define_metric``;
nothing passes ``step=``, so W&B's rule that a logged step never decreases cannot drop a point
(before, the search's alpha logs at steps up to S * N / (2 * bs) made W&B drop every retrain
epoch logged at a lower step)::

    axis          metrics on it
    search/step   search/train_loss, search/val_loss (means since the previous point),
                  search/alpha/<layer>/<j>              (every method.search.log_every iterations)
                  the rank grid: search/rank, search/train_loss, search/d_val/<metric>
                                                        (every epoch of every rank; step = the
                                                        grid's optimiser steps so far)
    train/step    train/loss (mean since the previous point), train/lr (the rate the step used)
                                                        (every train.log_every steps)
    epoch         epoch/train_loss, epoch/step, eval/<split>/<metric>   (every epoch)

Summary (:func:`run_summary`): what the tables need, from result.json: ``final/``, ``best/``
and ``test/`` metrics, ``reported/`` (the score the tables report), ``best_epoch``, ``params/``,
``phases/<phase>/{wall_s,cpu_s,peak_mem_mb|peak_rss_mb}``, ``cost_s``, ``ranks/mean``,
``search/``. Media: ``ranks/table`` and ``ranks/heatmap`` for every method with per-layer
ranks, ``grid/table`` for the rank grid. Artifacts ``result-<id>`` (result.json) and
``search-<id>`` (search.json, rank_pattern.json).

Identity (:func:`run_identity`): project ``logger.project``, group = the experiment (``name``),
job_type = the method, name ``task/model/method/seed<N>``, tags ``logger.tags`` + task, model,
method, and id = sha256(run folder, config hash)[:16], so a stopped and requeued run (same
folder, same config) continues the same W&B run (``resume="allow"``). ``WANDB_RUN_ID`` (set by
a W&B sweep agent) wins in a single run (not in a Hydra sweep), as ``WANDB_MODE`` does for the mode.

Every W&B call goes through :meth:`Tracker._call`: the first failure is logged as a warning
and the tracker is silent from then on; the run goes on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from autolora_exp.errors import UserError
from autolora_exp.loss_window import LossWindow

log = logging.getLogger(__name__)

MODES = ("online", "offline", "disabled")

#: x-axis metric -> the metric globs plotted against it
AXES = {"search/step": ("search/*",), "train/step": ("train/*",), "epoch": ("epoch/*", "eval/*")}

#: artifact type -> the run-folder files it holds (those that exist)
ARTIFACT_FILES = {"result": ("result.json",), "search": ("search.json", "rank_pattern.json")}

HEATMAP_FILE = "rank_heatmap.png"


@dataclass(frozen=True)
class RunIdentity:
    """Who a run is in W&B: the same run folder and config give the same identity."""

    id: str
    name: str
    group: str
    job_type: str
    tags: list[str] = field(default_factory=list)
    #: task, model, method, seed, config hash: attached to the artifacts
    metadata: dict[str, Any] = field(default_factory=dict)


def run_identity(cfg: Any, digest: str) -> RunIdentity:
    """The W&B identity of the run that ``cfg`` (with config hash ``digest``) describes.

    id = sha256(resolved run folder + "\\n" + config hash)[:16]

    ``WANDB_RUN_ID`` (a W&B sweep agent's name for its one run) wins in a single run; in a Hydra
    sweep (``-m``) it is ignored with a warning: every job would continue one W&B run, each
    overwriting the others' summary and mixing their curves.
    """
    from autolora_exp.sweeps import in_multirun

    folder = Path(cfg.output_dir).resolve()
    run_id = os.environ.get("WANDB_RUN_ID")
    if run_id and in_multirun():
        log.warning("WANDB_RUN_ID=%s is ignored in a sweep (-m): each job gets its own W&B run", run_id)
        run_id = None
    run_id = run_id or hashlib.sha256(f"{folder}\n{digest}".encode()).hexdigest()[:16]
    task, model, method = cfg.task.name, cfg.model.name, cfg.method.name
    return RunIdentity(
        id=run_id, name=f"{task}/{model}/{method}/seed{cfg.seed}", group=cfg.logger.group or cfg.name,
        job_type=method, tags=list(dict.fromkeys([*cfg.logger.tags, task, model, method])),
        metadata={"experiment": cfg.name, "task": task, "model": model, "method": method, "seed": cfg.seed,
                  "config_hash": digest})


def flatten(obj: Any, prefix: str = "") -> dict[str, int | float]:
    """Nested dicts -> {"a/b/c": number}; only numbers are kept (booleans and None are not)."""
    out: dict[str, int | float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}/"))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix.rstrip("/")] = obj
    return out


def rank_source(result: dict[str, Any]) -> dict[str, int] | None:
    """The per-layer ranks a run found: the search's (rank-0 layers included) or the method's."""
    return (result.get("search") or {}).get("ranks") or result.get("ranks")


def run_summary(result: dict[str, Any]) -> dict[str, Any]:
    """The W&B summary of a finished run, from its result.json (see the module docstring)."""
    from autolora_exp.tables.load import COST_PHASES, reported

    metrics = result["metrics"]
    split, scores = reported(result, "best")
    summary: dict[str, Any] = {"status": result["status"], "primary_metric": metrics["primary"],
                               "best_epoch": metrics["best_epoch"], "reported_split": split}
    summary |= flatten(metrics["final"], "final/") | flatten(metrics["best"], "best/")
    summary |= flatten(metrics.get("test") or {}, "test/") | flatten(scores, "reported/")
    summary |= flatten(result["params"], "params/") | flatten(result["phases"], "phases/")
    costs = [result["phases"][p]["wall_s"] for p in COST_PHASES if p in result["phases"]]
    if costs:
        summary["cost_s"] = round(sum(costs), 3)
    ranks = rank_source(result)
    if ranks:
        summary["ranks/mean"] = sum(ranks.values()) / len(ranks)
    search = result.get("search") or {}
    summary |= flatten({k: search.get(k) for k in ("mean_rank", "steps", "passes_per_iteration", "converged_at")},
                       "search/")
    return summary


class Tracker:
    """The run's W&B run; every method is a no-op when W&B is disabled or has failed."""

    def __init__(self, logger_cfg: Any, config: dict[str, Any], identity: RunIdentity, output_dir: str,
                 log_every: int = 50) -> None:
        self.run: Any = None
        self.identity = identity
        #: ``train.log_every``: optimiser steps between two train/loss points
        self.every = int(log_every)
        mode = os.environ.get("WANDB_MODE") or logger_cfg.mode
        if mode not in MODES:
            raise UserError(f"W&B mode '{mode}' (logger.mode or WANDB_MODE) is not one of {', '.join(MODES)}")
        self._window = LossWindow()  # train/loss since the last train point
        if mode == "disabled":
            return
        try:
            import wandb

            self.run = wandb.init(project=logger_cfg.project, entity=logger_cfg.entity, group=identity.group,
                                  job_type=identity.job_type, name=identity.name, tags=identity.tags,
                                  id=identity.id, resume="allow", config=config, dir=output_dir, mode=mode,
                                  reinit="finish_previous")
            for axis, globs in AXES.items():
                self.run.define_metric(axis)
                for glob in globs:
                    self.run.define_metric(glob, step_metric=axis)
        except Exception as err:  # noqa: BLE001 - tracking must never kill a run
            log.warning("W&B init failed (%s: %s); continuing without it", type(err).__name__, err)
            self.run = None

    @classmethod
    def for_run(cls, cfg: Any, config: dict[str, Any], digest: str) -> "Tracker":
        return cls(cfg.logger, config, run_identity(cfg, digest), str(cfg.output_dir), cfg.train.log_every)

    def _call(self, what: str, fn: Callable[[], Any]) -> None:
        if self.run is None:
            return
        try:
            fn()
        except Exception as err:  # noqa: BLE001
            log.warning("W&B %s failed (%s: %s); continuing without it", what, type(err).__name__, err)
            self.run = None

    def log(self, data: dict[str, Any]) -> None:
        """One row; its x-axis is a metric inside ``data`` (see :data:`AXES`), never ``step=``."""
        self._call("log", lambda: self.run.log(data))

    # ---- curves ----------------------------------------------------------------------------

    def log_search(self, entry: dict[str, Any]) -> None:
        """A search history entry. AutoLoRA: {"step", "alphas": {layer: [alpha_j]}, "train_loss",
        "val_loss"}; the rank grid, after each epoch of a rank: {"step", "rank", "train_loss",
        "d_val": {metric: value}}."""
        row: dict[str, Any] = {"search/step": entry["step"]}
        for key in ("train_loss", "val_loss", "rank"):
            if entry.get(key) is not None:
                row[f"search/{key}"] = entry[key]
        row |= {f"search/alpha/{layer}/{j}": a for layer, values in entry.get("alphas", {}).items()
                for j, a in enumerate(values)}
        row |= flatten(entry.get("d_val", {}), "search/d_val/")
        self.log(row)

    def log_train_step(self, step: int, loss: torch.Tensor, lr: float) -> None:
        """Every optimiser step; logs train/loss (mean since the last point) and train/lr every
        ``train.log_every`` steps. The loss stays on its device until then."""
        if self.run is None:
            return
        self._window.add(loss)
        if step % self.every == 0:
            self.log({"train/step": step, "train/loss": self._window.take()[0], "train/lr": lr})

    def log_epoch(self, record: dict[str, Any]) -> None:
        """An epoch record of the training loop: {"epoch", "step", "train_loss", "eval": {split: metrics}}."""
        self.log({"epoch": record["epoch"], "epoch/step": record["step"], "epoch/train_loss": record["train_loss"],
                  **flatten(record["eval"], "eval/")})

    # ---- the end of a run ------------------------------------------------------------------

    def record_result(self, result: dict[str, Any], output_dir: str | os.PathLike) -> None:
        """Summary, rank table and heatmap, grid table (before result.json is written: a full
        disk then loses nothing in W&B)."""
        self._call("summary", lambda: self.run.summary.update(run_summary(result)))
        ranks = rank_source(result)
        if ranks:
            self._call("rank table", lambda: self._log_ranks(ranks, Path(output_dir) / HEATMAP_FILE))
        per_rank = (result.get("search") or {}).get("per_rank")
        if per_rank:
            self._call("grid table", lambda: self._log_grid(per_rank, result["metrics"]["primary"]))

    def _log_ranks(self, ranks: dict[str, int], heatmap: Path) -> None:
        import wandb

        from autolora_exp.rank_heatmap import layer_position

        rows = []
        for layer, rank in ranks.items():
            try:
                projection, block = layer_position(layer)
                rows.append([layer, block + 1, projection, int(rank)])
            except UserError:  # a module name without a block index: still listed
                rows.append([layer, None, None, int(rank)])
        row: dict[str, Any] = {"ranks/table": wandb.Table(columns=["layer", "block", "projection", "rank"], data=rows)}
        if heatmap.is_file():
            row["ranks/heatmap"] = wandb.Image(str(heatmap))
        self.run.log(row)

    def _log_grid(self, per_rank: dict[Any, dict[str, Any]], primary: str) -> None:
        import wandb

        columns = ["rank", f"d_val/{primary}", "best_epoch", "steps", "wall_s", "trainable"]
        data = [[int(r), v["value"], v["best_epoch"], v["steps"], v["wall_s"], v["trainable"]]
                for r, v in sorted(per_rank.items(), key=lambda kv: int(kv[0]))]
        self.run.log({"grid/table": wandb.Table(columns=columns, data=data)})

    def log_outputs(self, output_dir: str | os.PathLike) -> None:
        """result.json and the search's files as artifacts ``<type>-<run id>`` (W&B's run-scoped naming)."""

        def _log() -> None:
            import wandb

            for kind, names in ARTIFACT_FILES.items():
                paths = [Path(output_dir) / n for n in names if (Path(output_dir) / n).is_file()]
                if not paths:
                    continue
                artifact = wandb.Artifact(f"{kind}-{self.run.id}", type=kind, metadata=self.identity.metadata)
                for path in paths:
                    artifact.add_file(str(path))
                self.run.log_artifact(artifact)

        self._call("artifacts", _log)

    def finish(self) -> None:
        self._call("finish", lambda: self.run.finish())
        self.run = None

    def stopped(self, signum: int) -> None:
        """Stopped by a signal, exit code 128 + signal. By the scheduler (SIGTERM, SIGUSR2): marked
        preempting (W&B's convention for a run that will be requeued), and the requeued job resumes
        this run; by Ctrl-C (SIGINT): not marked, a rerun resumes it all the same."""

        def _stop() -> None:
            if signum != signal.SIGINT:
                self.run.mark_preempting()
            self.run.finish(exit_code=128 + signum)

        self._call("finish", _stop)
        self.run = None

    def failed(self, phase: str, err: BaseException) -> None:
        """A failed run: the phase and error in the summary, the run finished with exit code 1."""
        self._call("summary", lambda: self.run.summary.update(
            {"status": "failed", "failed/phase": phase, "failed/error": f"{type(err).__name__}: {err}"[:1000]}))
        self._call("finish", lambda: self.run.finish(exit_code=1))
        self.run = None
