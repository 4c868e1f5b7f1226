"""Decoding for the generation tasks: batched beam search with ``generate``, then the cut rules.

microsoft/LoRA's GPT-2 recipe (``gpt2_beam.py`` + ``gpt2_decode.py``) decodes each input with
beam search (10 beams, length penalty 0.8, no repeated 4-grams, at most 64 new tokens) and
keeps the text up to the end-of-text token and up to the first blank line (it passes GPT-2's
``"\\n\\n"`` token as the end token). Here:

- prompts of different lengths share a batch by *left* padding (the attention mask hides the
  pads; a causal LM continues from the last position, which must be a real token);
- the new tokens of a hypothesis are cut at the first end-of-text token (beam search pads
  finished beams with the pad token, which for GPT-2 is the same token), decoded without
  special tokens, then cut at the first blank line (:func:`cut_hypothesis`). Cutting the text
  rather than matching one token id also catches a blank line that a tokenizer spells with
  other tokens (``"\\n"`` + ``"\\n"``, ``".\\n\\n"``).

A stop signal (:mod:`autolora_exp.preemption`) ends the beam search of the current batch at the
next token and decoding stops there; the decoding is redone on resume.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from autolora_exp.preemption import stop_point, stop_requested
from autolora_exp.progress import progress_bar

_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")


def cut_hypothesis(text: str, stop_at_blank_line: bool = True) -> str:
    """The text before the first blank line (a line break, optional spaces, a line break), stripped."""
    if stop_at_blank_line:
        text = _BLANK_LINE.split(text, maxsplit=1)[0]
    return text.strip()


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` with every prompt right-aligned (pads on the left)."""
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        if prompt:
            ids[row, width - len(prompt):] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt):] = 1
    return ids, mask


def until_eos(token_ids: Sequence[int], eos_id: int) -> list[int]:
    """The tokens before the first end-of-text token."""
    out = []
    for t in token_ids:
        if t == eos_id:
            break
        out.append(int(t))
    return out


def generation_kwargs(settings: Any, eos_id: int, pad_id: int) -> dict[str, Any]:
    """``generate`` arguments from the task's ``generation`` settings (deterministic beam search)."""
    kwargs: dict[str, Any] = {
        "num_beams": int(settings.num_beams),
        "max_new_tokens": int(settings.max_new_tokens),
        "no_repeat_ngram_size": int(settings.no_repeat_ngram_size),
        "do_sample": False,
        "eos_token_id": eos_id,
        "pad_token_id": pad_id,
    }
    if settings.num_beams > 1:  # transformers rejects a length penalty without beams
        kwargs["length_penalty"] = float(settings.length_penalty)
    return kwargs


def stop_signal_criteria() -> Any:
    """A ``generate`` stopping criterion that ends every beam once a stop signal has arrived (the
    cut-short batch is then thrown away by :func:`stop_point`)."""
    from transformers import StoppingCriteria, StoppingCriteriaList

    class StopSignalCriterion(StoppingCriteria):
        def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.Tensor:
            return torch.full((input_ids.shape[0],), stop_requested(), dtype=torch.bool, device=input_ids.device)

    return StoppingCriteriaList([StopSignalCriterion()])


@torch.no_grad()
def generate_texts(model: nn.Module, tokenizer: Any, prompts: Sequence[Sequence[int]], settings: Any,
                   eos_id: int, pad_id: int, device: torch.device, desc: str = "decode") -> list[str]:
    """One hypothesis per prompt (token ids ending with the separator), in prompt order;
    progress is reported as ``desc`` (:mod:`autolora_exp.progress`)."""
    from transformers import GenerationConfig

    was_training = model.training
    model.eval()
    config = GenerationConfig(**generation_kwargs(settings, eos_id, pad_id))
    stopping = stop_signal_criteria()
    texts: list[str] = []
    bar = progress_bar(total=len(prompts), desc=desc, unit="input", leave=False, dynamic_ncols=True)
    try:
        for start in range(0, len(prompts), settings.batch_size):
            chunk = prompts[start:start + settings.batch_size]
            input_ids, attention_mask = left_pad(chunk, pad_id)
            out = model.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                                 generation_config=config, stopping_criteria=stopping)
            stop_point("decoding")  # a batch that the stop cut short is not used
            for row in out[:, input_ids.shape[1]:].tolist():
                text = tokenizer.decode(until_eos(row, eos_id), skip_special_tokens=True)
                texts.append(cut_hypothesis(text, settings.stop_at_blank_line))
            bar.update(len(chunk))
    finally:
        bar.close()
        model.train(was_training)
    return texts
