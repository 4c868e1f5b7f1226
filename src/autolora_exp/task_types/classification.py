"""Sequence classification and regression (GLUE, BBC News): one label per text or text pair."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from autolora_exp.errors import UserError
from autolora_exp.task_types.base import TaskKind
from autolora_exp.preemption import stop_point
from autolora_exp.device import move_to


class SequenceClassification(TaskKind):
    auto_class = "AutoModelForSequenceClassification"

    def __init__(self, task_cfg: Any, tokenizer: Any, metric: Any) -> None:
        super().__init__(task_cfg, tokenizer, metric)
        from transformers import DataCollatorWithPadding

        self.regression = task_cfg.kind == "regression"
        self._pad = DataCollatorWithPadding(tokenizer)
        fields = list(task_cfg.text_fields)
        # truncation below the special tokens is silently switched off by the tokenizer
        shortest = tokenizer.num_special_tokens_to_add(pair=len(fields) == 2) + len(fields)
        if task_cfg.max_length < shortest:
            raise UserError(f"task.max_length={task_cfg.max_length} leaves no room for text: the tokenizer adds "
                            f"{shortest - len(fields)} special tokens to {'a pair' if len(fields) == 2 else 'a text'}; "
                            f"use task.max_length >= {shortest}")

    def head_kwargs(self) -> dict[str, Any]:
        kwargs = super().head_kwargs()
        if self.regression:
            kwargs["problem_type"] = "regression"
        return kwargs

    def metric_names(self) -> set[str]:
        """The metric's keys on a small made-up split (they do not depend on the values)."""
        import warnings

        labels = np.array([0.0, 1.0, 2.0, 1.5] if self.regression else [0, 1, 0, 1])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = self.metric(predictions=labels, references=labels)
        return {k for k, v in scores.items() if isinstance(v, (int, float))}

    def encode(self, split: str, dataset: Any) -> Any:
        """Text (or a text pair) -> ``input_ids``/``attention_mask`` (+ ``token_type_ids``), ``labels``.

        Truncation keeps the first ``task.max_length`` tokens (longest-first for pairs); padding
        is dynamic, per batch.
        """
        fields = list(self.task_cfg.text_fields)
        missing = [f for f in fields if f not in dataset.column_names]
        if missing:
            raise UserError(f"task.text_fields {missing} not in the data columns {dataset.column_names}")
        regression, tokenizer, max_length = self.regression, self.tokenizer, self.task_cfg.max_length

        def tokenize(batch: dict[str, list]) -> dict[str, list]:
            out = tokenizer(*[batch[f] for f in fields], truncation=True, max_length=max_length)
            out["labels"] = [float(x) for x in batch["label"]] if regression else batch["label"]
            return out

        drop = [c for c in dataset.column_names if c != "idx"]
        return dataset.map(tokenize, batched=True, remove_columns=drop, load_from_cache_file=False,
                           keep_in_memory=True)

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self._pad([{k: v for k, v in r.items() if k != "idx"} for r in rows])

    @torch.no_grad()
    def predict(self, model: nn.Module, loader: DataLoader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
        """Predictions (argmax, or the regression output) and references over the whole loader."""
        was_training = model.training
        model.eval()
        preds, refs = [], []
        for batch in loader:
            stop_point("evaluation")
            labels = batch.pop("labels")
            logits = model(**move_to(batch, device)).logits
            preds.append(logits.squeeze(-1).float().cpu() if self.regression else logits.argmax(-1).cpu())
            refs.append(labels)
        model.train(was_training)
        return torch.cat(preds).numpy(), torch.cat(refs).numpy()

    def evaluate(self, model: nn.Module, split: str, raw: Any, loader: DataLoader, device: torch.device,
                 output_dir: Path | None = None) -> dict[str, float]:
        predictions, references = self.predict(model, loader, device)
        scores = {k: float(v) for k, v in self.metric(predictions=predictions, references=references).items()}
        scores["n"] = int(len(references))
        return scores
