"""Sequence labelling (BioNLP/JNLPBA, WNUT-16): one tag per word, scored entity by entity.

Words are split into sub-tokens; a word's tag is trained on and read from its first sub-token
(:mod:`autolora_exp.data.token_labels`). Sentences longer than ``task.max_length`` become
overlapping windows (``task.stride`` shared sub-tokens) so no word is cut from the score: the
metric sees one prediction per original word of every sentence.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from autolora_exp.atomic import atomic_write_json
from autolora_exp.data.token_labels import IGNORE_INDEX, tokenize_and_align, word_predictions
from autolora_exp.device import move_to
from autolora_exp.errors import UserError
from autolora_exp.preemption import stop_point
from autolora_exp.task_types.base import TaskKind

#: columns kept for decoding, never fed to the model
ALIGNMENT_COLUMNS = ("idx", "word_ids", "sentence_index")


class TokenClassification(TaskKind):
    auto_class = "AutoModelForTokenClassification"

    def __init__(self, task_cfg: Any, tokenizer: Any, metric: Any) -> None:
        super().__init__(task_cfg, tokenizer, metric)
        from transformers import DataCollatorForTokenClassification

        self._pad = DataCollatorForTokenClassification(tokenizer, label_pad_token_id=IGNORE_INDEX)
        self.label_names: list[str] | None = None

    def metric_names(self) -> set[str]:
        """The metric's numeric keys on a made-up sentence (they do not depend on it); not the
        entity count ``support``."""
        tags = [["B-x", "I-x", "O"]]
        scores = self.metric(predictions=tags, references=tags)
        return {k for k, v in scores.items() if isinstance(v, float)}

    def encode(self, split: str, dataset: Any) -> Any:
        names = dataset.features["ner_tags"].feature.names
        if len(names) != self.task_cfg.num_labels:
            raise UserError(f"task '{self.task_cfg.name}' declares num_labels={self.task_cfg.num_labels} but the "
                            f"data has {len(names)} tags: {names}")
        if self.label_names is not None and names != self.label_names:
            raise UserError(f"split '{split}' has tags {names}, other splits {self.label_names}")
        self.label_names = list(names)
        tokenizer, max_length, stride = self.tokenizer, self.task_cfg.max_length, self.task_cfg.stride

        def align(batch: dict[str, list], indices: list[int]) -> dict[str, list]:
            out = tokenize_and_align(tokenizer, batch["tokens"], batch["ner_tags"], max_length, stride,
                                     sentence_index=indices)
            # every window keeps its sentence's id: AutoLoRA's 1:1 split groups windows by sentence
            out["idx"] = [batch["idx"][s] for s in out.pop("overflow_to_sample_mapping")]
            return out

        return dataset.map(align, batched=True, with_indices=True, remove_columns=dataset.column_names,
                           load_from_cache_file=False, keep_in_memory=True)

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        return self._pad([{k: v for k, v in r.items() if k not in ALIGNMENT_COLUMNS} for r in rows])

    @torch.no_grad()
    def predict_windows(self, model: nn.Module, loader: DataLoader, device: torch.device) -> list[list[int]]:
        """Token-level argmax per window, in loader order, unpadded."""
        was_training = model.training
        model.eval()
        windows: list[list[int]] = []
        for batch in loader:
            stop_point("evaluation")
            batch.pop("labels", None)
            lengths = batch["attention_mask"].sum(-1).tolist()
            argmax = model(**move_to(batch, device)).logits.argmax(-1).cpu()
            windows += [row[:n].tolist() for row, n in zip(argmax, lengths)]
        model.train(was_training)
        return windows

    def evaluate(self, model: nn.Module, split: str, raw: Any, loader: DataLoader, device: torch.device,
                 output_dir: Path | None = None) -> dict[str, Any]:
        encoded = loader.dataset
        windows = self.predict_windows(model, loader, device)
        per_word = word_predictions(windows, encoded["word_ids"], encoded["sentence_index"],
                                    [len(t) for t in raw["tokens"]])
        names = self.label_names
        predictions = [[names[t] for t in sentence] for sentence in per_word]
        references = [[names[t] for t in sentence] for sentence in raw["ner_tags"]]
        scores = dict(self.metric(predictions=predictions, references=references))
        scores["n"] = len(references)
        if output_dir is not None:
            atomic_write_json(Path(output_dir) / f"predictions_{split}.json",
                              [{"idx": i, "tokens": t, "prediction": p, "reference": r}
                               for i, t, p, r in zip(raw["idx"], raw["tokens"], predictions, references)])
        return scores
