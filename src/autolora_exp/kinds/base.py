"""The contract of a task kind (see :mod:`autolora_exp.kinds`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import datasets
import torch
from torch import nn
from torch.utils.data import DataLoader

from autolora_exp.preemption import ignore_stop_signals

datasets.disable_progress_bars()  # per-split "Map" bars drown the training progress bar


class TaskKind:
    """Encodes a loader's rows into model inputs, batches them, and scores a model on a split."""

    #: transformers Auto class of the model this kind trains
    auto_class: str = "AutoModelForSequenceClassification"
    #: whether a larger primary metric is better (selects the best epoch)
    greater_is_better: bool = True

    def __init__(self, task_cfg: Any, tokenizer: Any, metric: Callable[..., dict[str, float]]) -> None:
        self.task_cfg = task_cfg
        self.tokenizer = tokenizer
        self.metric = metric

    def head_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``from_pretrained``/``from_config`` that shape the task head."""
        return {"num_labels": self.task_cfg.num_labels}

    def encode(self, split: str, dataset: Any) -> Any:
        """Rows of one split -> a dataset of model inputs (keeps the ``idx`` column)."""
        raise NotImplementedError

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Rows -> a padded batch (``idx`` dropped)."""
        raise NotImplementedError

    def loader(self, dataset: Any, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0) -> DataLoader:
        """Batches of ``dataset``. Never drops the last partial batch: evaluation covers whole splits.
        Workers (``num_workers`` > 0) ignore the stop signals: the main process owns the stop."""
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                            collate_fn=self.collate, drop_last=False, num_workers=num_workers,
                            worker_init_fn=ignore_stop_signals)
        loader.base_seed = seed  # train.epoch_batches reseeds the shuffle per epoch from it
        return loader

    def evaluate(self, model: nn.Module, split: str, raw: Any, loader: DataLoader, device: torch.device,
                 output_dir: Path | None = None) -> dict[str, float]:
        """The task's metric on one whole split (``output_dir``: where to write predictions, if any)."""
        raise NotImplementedError
