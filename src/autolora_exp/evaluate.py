"""Evaluation: whole splits (no dropped batch), scored with the task's official metric."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from autolora_exp.train import move_to


@torch.no_grad()
def predict(model: nn.Module, loader: Any, device: torch.device, regression: bool) -> tuple[np.ndarray, np.ndarray]:
    """Predictions (argmax, or the regression output) and references over the whole loader."""
    was_training = model.training
    model.eval()
    preds, refs = [], []
    for batch in loader:
        labels = batch.pop("labels")
        logits = model(**move_to(batch, device)).logits
        preds.append(logits.squeeze(-1).float().cpu() if regression else logits.argmax(-1).cpu())
        refs.append(labels)
    model.train(was_training)
    return torch.cat(preds).numpy(), torch.cat(refs).numpy()


def evaluate_splits(model: nn.Module, loaders: dict[str, Any], metric: Callable[..., dict[str, float]],
                    device: torch.device, regression: bool) -> dict[str, dict[str, float]]:
    """``{split: metric(predictions, references)}`` for every loader."""
    scores = {}
    for split, loader in loaders.items():
        predictions, references = predict(model, loader, device, regression)
        scores[split] = {k: float(v) for k, v in metric(predictions=predictions, references=references).items()}
        scores[split]["n"] = int(len(references))
    return scores
