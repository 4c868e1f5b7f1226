"""The contract of a task kind (see :mod:`autolora_exp.task_types`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import datasets
import torch
from torch import nn
from torch.utils.data import DataLoader

from autolora_exp.errors import UserError
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
        # longer sequences crash in the position embeddings at the first long batch; tokenizers
        # that do not know their model's length report a huge placeholder (1e30)
        positions = getattr(tokenizer, "model_max_length", None)
        if isinstance(positions, int) and positions < 10**9 and task_cfg.max_length > positions:
            raise UserError(f"task.max_length={task_cfg.max_length} exceeds the {positions} positions of the model's "
                            f"tokenizer (model_max_length); use task.max_length <= {positions}")

    def head_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``from_pretrained``/``from_config`` that shape the task head."""
        return {"num_labels": self.task_cfg.num_labels}

    def metric_names(self) -> set[str]:
        """The scores :meth:`evaluate` reports that can select the best epoch
        (``task.primary_metric`` must be one; counts such as ``n`` are not), known before training."""
        raise NotImplementedError

    def encode(self, split: str, dataset: Any) -> Any:
        """Rows of one split -> a dataset of model inputs (keeps the ``idx`` column)."""
        raise NotImplementedError

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Rows -> a padded batch (``idx`` dropped)."""
        raise NotImplementedError

    def loader(self, dataset: Any, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
               pin_memory: bool = False, group_by_length: bool = False) -> DataLoader:
        """Batches of ``dataset``. Never drops the last partial batch: evaluation covers whole splits.

        ``group_by_length`` (shuffled loaders only): batches of similar ``input_ids`` lengths in
        a seeded random order (:class:`~autolora_exp.data.length_grouping.LengthGroupedBatchSampler`).
        ``num_workers`` > 0 collates in worker processes (persistent across epochs); workers
        ignore the stop signals: the main process owns the stop. ``pin_memory`` pins the batches
        for asynchronous host-to-GPU copies.
        """
        generator = torch.Generator().manual_seed(seed)
        workers = {"num_workers": num_workers, "pin_memory": pin_memory, "persistent_workers": num_workers > 0,
                   "worker_init_fn": ignore_stop_signals}
        if shuffle and group_by_length:
            from autolora_exp.data.length_grouping import LengthGroupedBatchSampler

            lengths = [len(ids) for ids in dataset["input_ids"]]
            sampler = LengthGroupedBatchSampler(lengths, batch_size, generator)
            loader = DataLoader(dataset, batch_sampler=sampler, generator=generator, collate_fn=self.collate,
                                **workers)
        else:
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                                collate_fn=self.collate, drop_last=False, **workers)
        loader.base_seed = seed  # train.epoch_batches reseeds the shuffle per epoch from it
        return loader

    def evaluate(self, model: nn.Module, split: str, raw: Any, loader: DataLoader, device: torch.device,
                 output_dir: Path | None = None) -> dict[str, float]:
        """The task's metric on one whole split (``output_dir``: where to write predictions, if any)."""
        raise NotImplementedError
