"""The WebNLG metrics of the microsoft/LoRA GPT-2 recipe: its decode step, then GenerationEval.

microsoft/LoRA scores WebNLG in two steps:

1. ``src/gpt2_decode.py --ref_type webnlg --ref_num 6 --tokenize --lower`` writes the
   hypothesis file and ``reference0..5``. Every text is lower-cased and then split around
   every non-word character, ``' '.join(' '.join(re.split(r'(\\W)', text)).split())``
   (:func:`lora_postprocess`; e.g. ``"Runway 18L/36R."`` -> ``"runway 18l / 36r ."``). Each
   input gets exactly 6 reference lines: its first 6 references, and where it has fewer
   the first reference again (:func:`lora_reference_slots`) -- never an empty line, whose
   zero length would distort BLEU's brevity penalty and TER (see :mod:`.generationeval`).
2. GenerationEval's ``eval.py -nr 6 -m bleu,meteor,ter`` scores those files
   (:func:`.generationeval.generationeval_scores`), which tokenises once more with
   ``nltk.word_tokenize`` for METEOR and TER.

Scale: BLEU as a fraction (eval.py prints x100), METEOR and TER fractions; lower TER is better.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from autolora_exp.errors import UserError

from .generationeval import generationeval_scores
from .inputs import check_corpus
from .java import needs_java

# gpt2_decode.py --ref_num for WebNLG (and the -nr of eval.py).
LORA_NUM_REFS = 6
WEBNLG_METRICS = ("bleu", "meteor", "ter")

_NON_WORD = re.compile(r"(\W)")


def lora_postprocess(text: str) -> str:
    """``--lower --tokenize`` of gpt2_decode.py: lower-case, then every non-word character
    (Unicode-aware ``\\W``: punctuation, symbols) becomes its own token; whitespace collapses."""
    return " ".join(" ".join(_NON_WORD.split(text.lower())).split())


def lora_reference_slots(references: Sequence[Sequence[str]], num_refs: int = LORA_NUM_REFS) -> list[list[str]]:
    """Exactly ``num_refs`` reference lines per input, as gpt2_decode.py writes them: the first
    ``num_refs`` references, missing slots filled with the first reference (a repeated
    reference changes none of the three scores; more than ``num_refs`` are dropped)."""
    return [[refs[k] if k < len(refs) else refs[0] for k in range(num_refs)] for refs in references]


@needs_java
def webnlg_metrics(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], *, num_refs: int = LORA_NUM_REFS
) -> dict[str, float]:
    """``{"bleu", "meteor", "ter"}`` of one system output on WebNLG, as the LoRA recipe reports them.

    ``hypotheses[i]`` is the output for triple set ``i`` and ``references[i]`` all its
    lexicalisations (any number >= 1; raw text, line breaks allowed). ``num_refs`` is
    gpt2_decode.py's ``--ref_num`` (6 in the recipe). Needs ``java`` (METEOR jar); raises
    :class:`~.inputs.MetricInputError` (a ``ValueError``) for an empty or misaligned corpus.
    """
    if isinstance(num_refs, bool) or not isinstance(num_refs, int) or num_refs < 1:
        raise UserError(f"num_refs={num_refs!r}: expected a positive int (the LoRA recipe uses {LORA_NUM_REFS})")
    hyps, refs = check_corpus(hypotheses, references)
    hyps = [lora_postprocess(h) for h in hyps]
    refs = [[lora_postprocess(r) for r in ref_list] for ref_list in refs]
    scores = generationeval_scores(hyps, lora_reference_slots(refs, num_refs))
    return {name: float(scores[name]) for name in WEBNLG_METRICS}


#: the scores returned, known without running Java (checked against task.primary_metric)
webnlg_metrics.metric_names = WEBNLG_METRICS
