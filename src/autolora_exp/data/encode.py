"""Tokenisation: one function per task kind turns a loader's rows into model inputs.

Every source of a task (hub or local official files) yields the same columns, so one encoder
serves both.
"""

from __future__ import annotations

from typing import Any

import datasets
import torch
from torch.utils.data import DataLoader

datasets.disable_progress_bars()  # per-split "Map" bars drown the training progress


def encode_classification(dataset: Any, tokenizer: Any, text_fields: list[str], max_length: int,
                          regression: bool = False) -> Any:
    """Text (or a text pair) -> ``input_ids``/``attention_mask`` (+ ``token_type_ids``), ``labels``.

    Truncation keeps the first ``max_length`` tokens (longest-first for pairs). Padding is
    dynamic, per batch (:func:`classification_loader`).
    """
    missing = [f for f in text_fields if f not in dataset.column_names]
    if missing:
        from autolora_exp.errors import UserError

        raise UserError(f"task.text_fields {missing} not in the data columns {dataset.column_names}")

    def tokenize(batch: dict[str, list]) -> dict[str, list]:
        texts = [batch[f] for f in text_fields]
        out = tokenizer(*texts, truncation=True, max_length=max_length)
        out["labels"] = [float(x) for x in batch["label"]] if regression else batch["label"]
        return out

    keep = {"idx"}
    return dataset.map(tokenize, batched=True, remove_columns=[c for c in dataset.column_names if c not in keep],
                       desc=None, load_from_cache_file=False, keep_in_memory=True)


def classification_loader(dataset: Any, tokenizer: Any, batch_size: int, shuffle: bool, seed: int,
                          num_workers: int = 0) -> DataLoader:
    """Dynamic-padding loader. Evaluation loaders never drop the last partial batch."""
    from transformers import DataCollatorWithPadding

    collate = DataCollatorWithPadding(tokenizer)
    columns = [c for c in dataset.column_names if c != "idx"]
    generator = torch.Generator().manual_seed(seed)

    def collate_fn(rows: list[dict]) -> dict[str, torch.Tensor]:
        return collate([{k: r[k] for k in columns} for r in rows])

    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                      collate_fn=collate_fn, drop_last=False, num_workers=num_workers)
