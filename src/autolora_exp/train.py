"""The training loop shared by every method (and by AutoLoRA's retrain).

AdamW (no weight decay on biases and normalisation weights), a linear schedule with warm-up,
gradient clipping, evaluation after every epoch. Methods hook in through
:class:`~autolora_exp.contract.TrainingHooks` (parameter groups, step begin/end, the training
loss, checkpoint state: AdaLoRA's allocator, its orthogonality penalty); the loop imports no
method.

With a :class:`~autolora_exp.checkpoint.Checkpointer` the loop saves on its schedule (checked
after every step and epoch), at a stop signal and at the end, and a new call with the same
checkpointer resumes exactly where the last checkpoint left off (same weights, optimiser,
schedule, RNG and data order). A stop during an epoch's evaluation saves the state of the
epoch's last step (RNG as it was before the evaluation) and the evaluation is redone on resume.
A NaN/inf loss stops the run with the step named; the last good checkpoint stays on disk.
Losses and their finiteness stay on the device between read-backs (:class:`EpochLoss`): the
step loop makes no host synchronisation of its own between them.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch
from torch import nn

from autolora_exp.checkpoint import Checkpointer, load_trainable_state, rng_state, set_rng_state, trainable_state
from autolora_exp.contract import TrainingHooks
from autolora_exp.device import move_to
from autolora_exp.precision import Precision
from autolora_exp.preemption import Preempted, StopSignal
from autolora_exp.progress import progress_bar


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the run stops instead of training on garbage."""


@dataclass
class TrainResult:
    #: one entry per epoch: {"epoch", "step", "train_loss", "eval": {split: metrics}}
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    best_value: float | None = None
    steps: int = 0
    wall_s: float = 0.0
    #: the step this call resumed from (0 = a fresh start)
    resumed_from: int = 0


def planned_steps(n_batches: int, epochs: int, max_steps: int | None) -> int:
    total = n_batches * epochs
    return min(total, max_steps) if max_steps else total


def epoch_batches(loader: Any, epoch: int, skip: int = 0) -> Iterator[Any]:
    """The batches of ``epoch`` (1-based), shuffled by a generator seeded with (seed, epoch),
    so any epoch's order is reproducible on its own; ``skip`` drops the first batches (resume)."""
    generator = getattr(loader, "generator", None)
    if generator is not None and hasattr(loader, "base_seed"):
        generator.manual_seed(loader.base_seed * 100_003 + epoch)
    return itertools.islice(iter(loader), skip, None)


class EpochLoss:
    """The training losses since the last read-back, kept on the device (no host sync per step).

    Every step adds its loss to an on-device sum and, when the loss is not finite, records the
    first such step and its value (``torch.where``: no branch on the host). :meth:`read` copies
    them to the host once per window (every ``train.log_every`` steps, before a checkpoint and
    at the end of an epoch) and raises :class:`NonFiniteLossError` naming the first non-finite
    step and the window it fell in, before anything of the window is saved.
    """

    def __init__(self, device: torch.device, loss_sum: float = 0.0, n: int = 0, window_start: int = 1) -> None:
        self.device = device
        #: the loss sum of the epoch so far (float64 on the device), and its step count
        self.total = torch.tensor(loss_sum, dtype=torch.float64, device=device)
        self.n = n
        self.first_bad_step = torch.zeros((), dtype=torch.long, device=device)
        self.first_bad_value = torch.zeros((), dtype=torch.float32, device=device)
        #: the first step of the current window
        self.window_start = window_start

    def add(self, loss: torch.Tensor, step: int) -> None:
        loss = loss.detach().float()
        bad = ~torch.isfinite(loss) & (self.first_bad_step == 0)
        self.first_bad_step = torch.where(bad, torch.full_like(self.first_bad_step, step), self.first_bad_step)
        self.first_bad_value = torch.where(bad, loss, self.first_bad_value)
        self.total += loss
        self.n += 1

    def reset(self, step: int) -> None:
        """A new epoch: the sum starts again (the window goes on)."""
        self.total.zero_()
        self.n = 0
        self.window_start = step + 1

    def read(self, phase: str, step: int) -> float:
        """The epoch's loss sum so far (one host sync); raises if a loss of the window was not finite."""
        bad_step, total = int(self.first_bad_step), float(self.total)
        if bad_step:
            raise NonFiniteLossError(
                f"{phase}: loss is {float(self.first_bad_value)} at step {bad_step} (found at the check after "
                f"steps {self.window_start}..{step}); the last good checkpoint is kept (lower the learning rate "
                "or check the data)")
        self.window_start = step + 1
        return total

    def mean(self, phase: str, step: int) -> float:
        """The epoch's mean loss so far (a :meth:`read`)."""
        return self.read(phase, step) / max(self.n, 1)


def fit(
    model: nn.Module,
    hooks: TrainingHooks,
    train_loader: Any,
    evaluate: Callable[[nn.Module], dict[str, dict[str, float]]],
    train_cfg: Any,
    lr: float,
    primary_metric: str,
    device: torch.device,
    greater_is_better: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    phase: str = "train",
    on_step: Callable[[int, torch.Tensor, float], None] | None = None,
    checkpointer: Checkpointer | None = None,
    stop: StopSignal | None = None,
    precision: Precision | None = None,
) -> TrainResult:
    """Train ``model`` for ``train_cfg.epochs`` epochs (or ``max_steps``), evaluating each epoch.

    The best epoch is the one with the best ``primary_metric`` on the first evaluated split.
    ``on_step(step, loss, lr)`` is called after every optimiser step with the step's loss (a
    detached tensor, not synced) and the learning rate that step used.
    Forwards run under ``precision``'s autocast (fp16 with its loss scale); ``evaluate`` is the
    caller's, which applies the precision itself. The loss is read back to the host every
    ``train_cfg.log_every`` steps (progress bar), before each checkpoint and at each epoch end.
    ``hooks`` is the method as the loop sees it (:class:`~autolora_exp.contract.TrainingHooks`,
    whose docstring shows where each hook is called).
    """
    from transformers import get_linear_schedule_with_warmup

    precision = precision or Precision("fp32", device)
    log_every = max(int(getattr(train_cfg, "log_every", 50) or 1), 1)
    n_batches = max(len(train_loader), 1)
    total = planned_steps(len(train_loader), train_cfg.epochs, train_cfg.max_steps)
    optimizer = torch.optim.AdamW(hooks.param_groups(model, train_cfg.weight_decay), lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(train_cfg.warmup_ratio * total), total)
    scaler = precision.scaler()
    hooks.on_train_begin(model, total)
    trainable = [p for p in model.parameters() if p.requires_grad]

    result, step, loss_sum, n = TrainResult(), 0, 0.0, 0
    state = checkpointer.load() if checkpointer else None
    if state is not None:
        load_trainable_state(model, state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        hooks.load_state_dict(model, state["method"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        result = TrainResult(**state["result"])
        step, loss_sum, n = state["step"], state["loss_sum"], state["n"]
        result.resumed_from = step
        set_rng_state(state["rng"])
        if state.get("done"):
            return result
    losses = EpochLoss(device, loss_sum, n, window_start=step + 1)

    def save(done: bool = False, rng: dict[str, Any] | None = None) -> None:
        if checkpointer is not None:
            loss_sum = losses.read(phase, step)  # never save the weights of a window with a NaN loss
            checkpointer.save({"model": trainable_state(model), "optimizer": optimizer.state_dict(),
                               "scheduler": scheduler.state_dict(), "method": hooks.state_dict(model),
                               "scaler": scaler.state_dict() if scaler is not None else None,
                               "result": asdict(result), "step": step, "loss_sum": loss_sum,
                               "n": losses.n, "rng": rng or rng_state(), "done": done})

    start = time.perf_counter() - result.wall_s
    bar = progress_bar(total=total, initial=step, desc=phase, disable=not train_cfg.progress, dynamic_ncols=True)
    epochs = math.ceil(total / n_batches)
    first_epoch = len(result.epochs) + 1
    for epoch in range(first_epoch, epochs + 1):
        model.train()
        done_in_epoch = step - (epoch - 1) * n_batches
        if done_in_epoch == 0:
            losses.reset(step)
        for batch in epoch_batches(train_loader, epoch, skip=done_in_epoch):
            if step >= total:
                break
            hooks.on_step_begin(model, step)
            with precision.autocast():
                outputs = model(**move_to(batch, device))
                loss = hooks.training_loss(model, outputs)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if train_cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, train_cfg.max_grad_norm)
            step_lr = optimizer.param_groups[0]["lr"]  # this step's rate (the scheduler moves it next)
            if scaler is not None:
                scaler.step(optimizer)  # skipped when the scaled gradients overflowed
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            step += 1
            hooks.on_step_end(model, step, optimizer)
            optimizer.zero_grad(set_to_none=True)
            losses.add(loss, step)
            bar.update(1)
            if step % log_every == 0:
                bar.set_postfix(epoch=epoch, loss=f"{losses.mean(phase, step):.4f}")
            if on_step is not None:
                on_step(step, loss.detach(), step_lr)
            if checkpointer is not None and checkpointer.due(step):
                save()
            if stop is not None:
                stop.check(phase, step, save)
        train_loss = losses.mean(phase, step)
        rng_at_step = rng_state()
        try:
            scores = evaluate(model)
        except Preempted as stopped:  # mid-evaluation: keep the step boundary, evaluate again on resume
            save(rng=rng_at_step)
            raise stopped.within(phase, step) from None
        record = {"epoch": epoch, "step": step, "train_loss": train_loss, "eval": scores}
        result.epochs.append(record)
        value = next(iter(scores.values()))[primary_metric]
        better = result.best_value is None or (value > result.best_value if greater_is_better
                                               else value < result.best_value)
        if better and not math.isnan(value):
            result.best_value, result.best_epoch = value, epoch
        result.steps, result.wall_s = step, time.perf_counter() - start
        if checkpointer is not None and checkpointer.due(step):
            save()
        if on_epoch is not None:
            on_epoch(record)
        bar.write(f"[{phase}] epoch {epoch}: loss {record['train_loss']:.4f}, "
                  + ", ".join(f"{s} {primary_metric} {m[primary_metric]:.4f}" for s, m in scores.items()))
    bar.close()
    result.steps, result.wall_s = step, time.perf_counter() - start
    save(done=True)
    return result


def bound_fit(train_cfg: Any, primary_metric: str, device: torch.device, greater_is_better: bool = True,
              stop: StopSignal | None = None, precision: Precision | None = None) -> Callable[..., TrainResult]:
    """:func:`fit` bound to a run's loop settings, device, precision and stop signal: the
    ``SearchContext.fit`` a searching method trains with,
    ``fit(model, hooks, loader, evaluate, lr, phase=..., checkpointer=..., on_epoch=...)``."""

    def bound(model: nn.Module, hooks: TrainingHooks, train_loader: Any,
              evaluate: Callable[[nn.Module], dict[str, dict[str, float]]], lr: float, **kwargs: Any) -> TrainResult:
        return fit(model, hooks, train_loader, evaluate, train_cfg, lr, primary_metric, device,
                   greater_is_better=greater_is_better, stop=stop, precision=precision, **kwargs)

    return bound
