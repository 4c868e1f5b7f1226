"""TER the way GenerationEval's ``eval.py`` reports it: a mean of per-sentence scores.

For each sentence, TER against every reference slot with ``pyter`` (package ``pyter3``):

    TER(hyp, ref) = (shifts + edit distance after shifts) / |ref|     (tokens split on spaces;
                    pyter shifts greedily, the best-improving phrase move first)

an empty reference slot scores 1 and so does a pair on which pyter raises; the sentence
keeps the minimum over its slots, and the corpus TER is the plain mean over sentences. This
is not sacrebleu's corpus TER (total edits / total reference length), which gives a
different number on the same data. Lower is better; a sentence can exceed 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import pyter


def sentence_ter(hypothesis: str, reference_slots: Sequence[str]) -> float:
    """min over slots of pyter TER (1 for an empty slot or a failing pair)."""
    scores: list[float] = []
    for ref in reference_slots:
        if len(ref) == 0:
            scores.append(1.0)
            continue
        try:
            scores.append(float(pyter.ter(hypothesis.split(), ref.split())))
        except Exception:  # eval.py scores any failure of pyter as 1 (broad on purpose)
            scores.append(1.0)
    return min(scores)


def generationeval_ter(hypotheses: Sequence[str], reference_slots: Sequence[Sequence[str]]) -> float:
    """Mean of :func:`sentence_ter` over the corpus."""
    scores = [sentence_ter(h, slots) for h, slots in zip(hypotheses, reference_slots)]
    return sum(scores) / len(scores)
