"""Data-to-text generation (E2E, WebNLG) with a causal LM: teacher-forced training, beam-search scoring.

Training sequence (microsoft/LoRA's ``gpt2_encode.py --add_bos --add_eos``)::

    input_ids = source  <sep>  " " + target  <eos>
    labels    = -100 ... -100  target       <eos>        (loss on the target tokens only)

``<sep>`` and ``<eos>`` are both the tokenizer's end-of-text token, as in the recipe (GPT-2's
``<|endoftext|>``; a tokenizer without one, such as the BERT vocabulary of the tiny test
model, uses its ``[SEP]``). Padding is on the right, with ``-100`` labels.

Truncation to ``task.max_length`` never cuts a target silently. When source + target do not
fit, the source loses its tail first, down to half of the room; only a target longer than the
rest is cut, and a cut target has no ``<eos>`` (the model must not learn to stop at an
arbitrary cut). Every cut is counted and logged as a warning with the split and the length to
set instead. For decoding, the prompt (source + ``<sep>``) is cut to ``task.max_length`` and to
the model's positions minus ``max_new_tokens``, also with a warning.

Scoring a split (:meth:`CausalGeneration.evaluate`): the teacher-forced ``loss`` over all its
rows, then one hypothesis per distinct input (``group``) from beam search
(:mod:`autolora_exp.decoding`), scored by the task's metric against all references of that
input. Decoding is the expensive part, so it is budgeted: the per-epoch eval splits decode the
first ``task.generation.max_eval_inputs`` inputs (``None`` = all; the per-epoch scores only
select the best epoch), the test split is always decoded whole. Predictions and references
are written next to result.json: ``predictions_<split>.txt`` (one hypothesis per line),
``references_<split>.txt`` (each input's references one per line, a blank line between inputs:
e2e-metrics' format) and ``predictions_<split>.jsonl`` (input, hypothesis, references).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from autolora_exp.atomic import atomic_write_text
from autolora_exp.errors import UserError
from autolora_exp.decoding import generate_texts
from autolora_exp.task_types.base import TaskKind
from autolora_exp.preemption import stop_point
from autolora_exp.device import move_to

log = logging.getLogger(__name__)

IGNORE_INDEX = -100
#: metrics where a smaller value is better (the primary metric decides the best epoch)
LOWER_IS_BETTER = frozenset({"ter", "loss"})
REQUIRED_COLUMNS = ("source", "target", "idx", "group")


def end_of_text_id(tokenizer: Any) -> int:
    """The end-of-text token id (``eos``; else ``[SEP]`` for BERT-style vocabularies)."""
    for token_id in (tokenizer.eos_token_id, getattr(tokenizer, "sep_token_id", None)):
        if token_id is not None:
            return int(token_id)
    raise UserError(f"tokenizer {type(tokenizer).__name__} has neither an eos nor a sep token; "
                    "a generation task needs an end-of-text token: choose another model.tokenizer")


def fit_to_length(source: list[int], target: list[int], max_length: int) -> tuple[list[int], list[int], bool]:
    """(source', target', target_cut) with len(source') + 1 + len(target') + (0 if cut else 1) <= max_length.

    room = max_length - 2 (separator and end-of-text). The source keeps
    min(len(source), max(room - len(target), room // 2)) leading tokens; the target keeps what
    is left, plus the end-of-text slot when it is cut.
    """
    room = max_length - 2
    if len(source) + len(target) <= room:
        return source, target, False
    keep_source = min(len(source), max(room - len(target), room // 2))
    if len(target) <= room - keep_source:
        return source[:keep_source], target, False
    return source[:keep_source], target[:room + 1 - keep_source], True


class CausalGeneration(TaskKind):
    auto_class = "AutoModelForCausalLM"

    def __init__(self, task_cfg: Any, tokenizer: Any, metric: Any) -> None:
        super().__init__(task_cfg, tokenizer, metric)
        if task_cfg.max_length < 4:
            raise UserError(f"task.max_length={task_cfg.max_length} is too short for input, separator, "
                            "target and end-of-text; use at least 4 (the recipe uses 512)")
        self.settings = task_cfg.generation
        if self.settings.num_beams < 1 or self.settings.max_new_tokens < 1 or self.settings.batch_size < 1:
            raise UserError(f"task.generation: num_beams={self.settings.num_beams}, max_new_tokens="
                            f"{self.settings.max_new_tokens}, batch_size={self.settings.batch_size} must all be >= 1")
        self.eos_id = end_of_text_id(tokenizer)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.eos_id
        self.greater_is_better = task_cfg.primary_metric not in LOWER_IS_BETTER

    def head_kwargs(self) -> dict[str, Any]:
        """No new head (the LM head is the pretrained one); the model's special tokens are the
        tokenizer's (a model built from a config with a borrowed vocabulary would otherwise keep
        GPT-2's ids, outside that vocabulary)."""
        bos = self.tokenizer.bos_token_id
        return {"eos_token_id": self.eos_id, "bos_token_id": self.eos_id if bos is None else int(bos)}

    def metric_names(self) -> set[str]:
        """The metric's declared ``metric_names`` (the official NLG metrics start Java: not run
        for this), else its keys on one made-up input; plus the teacher-forced ``loss``."""
        declared = getattr(getattr(self.metric, "func", self.metric), "metric_names", None)
        if declared is None:
            declared = self.metric(["a small test"], [["a small test"]]).keys()
        return set(declared) | {"loss"}

    # ---- encoding ---------------------------------------------------------------------------
    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        return self.tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []

    def encode(self, split: str, dataset: Any) -> Any:
        """Rows -> ``input_ids``, ``labels`` (+ ``idx``, ``group``); see the module docstring."""
        import datasets

        missing = [c for c in REQUIRED_COLUMNS if c not in dataset.column_names]
        if missing:
            raise UserError(f"task '{self.task_cfg.name}' data lacks columns {missing}; a generation loader "
                            f"returns {list(REQUIRED_COLUMNS)}")
        sources = self._tokenize(list(dataset["source"]))
        # the target follows the separator with a leading space, as the recipe encodes ' ' + completion
        targets = self._tokenize([" " + t for t in dataset["target"]])
        max_length = self.task_cfg.max_length
        columns: dict[str, list] = {"input_ids": [], "labels": [], "idx": list(dataset["idx"]),
                                    "group": list(dataset["group"])}
        cut_sources = cut_targets = 0
        for src, tgt in zip(sources, targets):
            src_kept, tgt_kept, target_cut = fit_to_length(src, tgt, max_length)
            cut_sources += len(src_kept) < len(src)
            cut_targets += target_cut
            end = [] if target_cut else [self.eos_id]
            columns["input_ids"].append(src_kept + [self.eos_id] + tgt_kept + end)
            columns["labels"].append([IGNORE_INDEX] * (len(src_kept) + 1) + tgt_kept + end)
        if cut_sources or cut_targets:
            longest = max((len(s) + len(t) + 2 for s, t in zip(sources, targets)), default=0)
            log.warning("task '%s' split '%s': %d of %d inputs and %d targets cut to task.max_length=%d "
                        "(cut targets have no end-of-text); the longest row needs task.max_length=%d",
                        self.task_cfg.name, split, cut_sources, len(sources), cut_targets, max_length, longest)
        return datasets.Dataset.from_dict(columns)

    def collate(self, rows: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right padding: pad token, attention 0, label -100."""
        width = max(len(r["input_ids"]) for r in rows)
        input_ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
        for i, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[i, :n] = torch.tensor(row["input_ids"], dtype=torch.long)
            attention_mask[i, :n] = 1
            labels[i, :n] = torch.tensor(row["labels"], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}

    # ---- scoring ----------------------------------------------------------------------------
    @staticmethod
    def grouped_inputs(raw: Any) -> list[tuple[int, str, list[str]]]:
        """(group, source, all references) per distinct input, in order of first appearance."""
        inputs: dict[int, tuple[str, list[str]]] = {}
        for group, source, target in zip(raw["group"], raw["source"], raw["target"]):
            inputs.setdefault(int(group), (source, []))[1].append(target)
        return [(g, s, refs) for g, (s, refs) in inputs.items()]

    def prompts(self, sources: list[str], max_positions: int | None, split: str) -> list[list[int]]:
        """source + <sep>, cut to task.max_length and to the model's positions minus max_new_tokens."""
        limit = self.task_cfg.max_length
        if max_positions:
            limit = min(limit, max_positions - self.settings.max_new_tokens)
        if limit < 2:
            raise UserError(f"the model has {max_positions} positions: no room for a prompt and "
                            f"task.generation.max_new_tokens={self.settings.max_new_tokens}; lower it")
        out, cut = [], 0
        for ids in self._tokenize(sources):
            cut += len(ids) > limit - 1
            out.append(ids[:limit - 1] + [self.eos_id])
        if cut:
            log.warning("task '%s' split '%s': %d of %d prompts cut to %d tokens (task.max_length=%d, "
                        "max_new_tokens=%d, model positions %s)", self.task_cfg.name, split, cut, len(out), limit,
                        self.task_cfg.max_length, self.settings.max_new_tokens, max_positions)
        return out

    @torch.no_grad()
    def loss(self, model: nn.Module, loader: DataLoader, device: torch.device) -> float:
        """Teacher-forced cross-entropy per target token over the whole split."""
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        for batch in loader:
            stop_point("evaluation")
            n = int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())  # the model shifts labels by one
            if n:
                total += float(model(**move_to(batch, device)).loss) * n
                count += n
        model.train(was_training)
        return total / count if count else float("nan")

    def evaluate(self, model: nn.Module, split: str, raw: Any, loader: DataLoader, device: torch.device,
                 output_dir: Path | None = None) -> dict[str, Any]:
        inputs = self.grouped_inputs(raw)
        cap = self.settings.max_eval_inputs
        if split != self.task_cfg.test_split and cap is not None:
            inputs = inputs[:cap]
        config = getattr(model, "config", None)
        max_positions = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
        prompts = self.prompts([s for _, s, _ in inputs], max_positions, split)
        hypotheses = generate_texts(model, self.tokenizer, prompts, self.settings, self.eos_id, self.pad_id, device,
                                    desc=f"decode {split}")
        references = [refs for _, _, refs in inputs]
        empty = sum(not h.strip() for h in hypotheses)
        if hypotheses and empty == len(hypotheses):
            log.warning("task '%s' split '%s': all %d generated texts are empty, so every metric is 0; the model "
                        "ends each prompt at once (an undertrained or tiny model?)", self.task_cfg.name, split, empty)
        scores: dict[str, Any] = {k: float(v) for k, v in self.metric(hypotheses, references).items()}
        scores["n_empty"] = empty
        scores["loss"] = self.loss(model, loader, device)
        scores["n_inputs"] = len(inputs)
        scores["n_references"] = sum(len(r) for r in references)
        if output_dir is not None:
            write_predictions(Path(output_dir), split, inputs, hypotheses)
        return scores


def _one_line(text: str) -> str:
    return " ".join(text.split())


def write_predictions(output_dir: Path, split: str, inputs: list[tuple[int, str, list[str]]],
                      hypotheses: list[str]) -> None:
    """``predictions_<split>.txt``, ``references_<split>.txt`` (e2e-metrics layout) and ``.jsonl``."""
    atomic_write_text(output_dir / f"predictions_{split}.txt", "".join(_one_line(h) + "\n" for h in hypotheses))
    atomic_write_text(output_dir / f"references_{split}.txt",
                      "\n".join("".join(_one_line(r) + "\n" for r in refs) for _, _, refs in inputs))
    atomic_write_text(output_dir / f"predictions_{split}.jsonl", "".join(
        json.dumps({"group": g, "source": s, "prediction": h, "references": refs}, ensure_ascii=False) + "\n"
        for (g, s, refs), h in zip(inputs, hypotheses)))
