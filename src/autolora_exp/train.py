"""The training loop shared by every method (and by AutoLoRA's retrain).

AdamW (no weight decay on biases and LayerNorm weights), a linear schedule with warm-up,
gradient clipping, evaluation after every epoch. Methods hook in through
:class:`~autolora_exp.methods.base.Method` (AdaLoRA's allocator, its orthogonality penalty).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn
from tqdm.auto import tqdm

from autolora_exp.methods.base import Method


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite: the run stops instead of training on garbage."""


@dataclass
class TrainResult:
    #: one entry per epoch: {"epoch", "step", "train_loss", "eval": {split: metrics}}
    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int | None = None
    steps: int = 0
    wall_s: float = 0.0


def move_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in batch.items()}


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices, none on biases and normalisation weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def planned_steps(n_batches: int, epochs: int, max_steps: int | None) -> int:
    total = n_batches * epochs
    return min(total, max_steps) if max_steps else total


def fit(
    model: nn.Module,
    method: Method,
    train_loader: Any,
    evaluate: Callable[[nn.Module], dict[str, dict[str, float]]],
    train_cfg: Any,
    lr: float,
    primary_metric: str,
    device: torch.device,
    greater_is_better: bool = True,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    phase: str = "train",
) -> TrainResult:
    """Train ``model`` for ``train_cfg.epochs`` epochs (or ``max_steps``), evaluating each epoch.

    The best epoch is the one with the best ``primary_metric`` on the first evaluated split.
    """
    from transformers import get_linear_schedule_with_warmup

    total = planned_steps(len(train_loader), train_cfg.epochs, train_cfg.max_steps)
    optimizer = torch.optim.AdamW(param_groups(model, train_cfg.weight_decay), lr=lr)
    scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(train_cfg.warmup_ratio * total), total)
    method.on_train_begin(model, total)
    trainable = [p for p in model.parameters() if p.requires_grad]

    result = TrainResult()
    best = None
    start = time.perf_counter()
    bar = tqdm(total=total, desc=phase, disable=not train_cfg.progress, dynamic_ncols=True)
    step = 0
    epochs = math.ceil(total / max(len(train_loader), 1))
    for epoch in range(1, epochs + 1):
        model.train()
        loss_sum, n = 0.0, 0
        for batch in train_loader:
            if step >= total:
                break
            outputs = model(**move_to(batch, device))
            loss = method.training_loss(model, outputs)
            if not torch.isfinite(loss):
                raise NonFiniteLossError(f"{phase}: loss is {loss.item()} at step {step + 1} (epoch {epoch})")
            loss.backward()
            if train_cfg.max_grad_norm:
                torch.nn.utils.clip_grad_norm_(trainable, train_cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            step += 1
            method.on_after_backward(model, step)
            optimizer.zero_grad(set_to_none=True)
            loss_sum += loss.item()
            n += 1
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{loss_sum / n:.4f}")
        scores = evaluate(model)
        record = {"epoch": epoch, "step": step, "train_loss": loss_sum / max(n, 1), "eval": scores}
        result.epochs.append(record)
        first = next(iter(scores.values()))
        value = first[primary_metric]
        better = best is None or (value > best if greater_is_better else value < best)
        if better and not math.isnan(value):
            best, result.best_epoch = value, epoch
        if on_epoch is not None:
            on_epoch(record)
        bar.write(f"[{phase}] epoch {epoch}: loss {record['train_loss']:.4f}, "
                  + ", ".join(f"{s} {primary_metric} {m[primary_metric]:.4f}" for s, m in scores.items()))
    bar.close()
    result.steps = step
    result.wall_s = time.perf_counter() - start
    return result
