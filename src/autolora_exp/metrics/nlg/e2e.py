"""The E2E NLG Challenge metrics, as tuetschek/e2e-metrics ``measure_scores.py -p`` reports them.

The microsoft/LoRA GPT-2 recipe decodes the E2E test set with the raw texts (no extra
lower-casing or tokenisation) and runs ``measure_scores.py <refs> <hyps> -p``:

- BLEU, NIST: MT-Eval v13a, case-insensitive (the ``-p`` pure-Python port): :mod:`.mteval`;
- METEOR, ROUGE-L, CIDEr(-D): the MS-COCO caption code after PTB tokenisation: :mod:`.coco`.

Scale, as measure_scores.py prints it: BLEU, METEOR and ROUGE-L are fractions in [0, 1]
(BLEU 0.7203, not 72.03), NIST (about 0-15) and CIDEr (about 0-10) on their own scales.
"""

from __future__ import annotations

from collections.abc import Sequence

from .coco import coco_caption_scores
from .inputs import check_corpus
from .java import java_executable, needs_java
from .mteval import corpus_bleu_13a, corpus_nist

E2E_METRICS = ("bleu", "nist", "meteor", "rouge_l", "cider")


@needs_java
def e2e_metrics(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """``{"bleu", "nist", "meteor", "rouge_l", "cider"}`` of one system output on the E2E data.

    ``hypotheses[i]`` is the output for input (meaning representation) ``i`` and
    ``references[i]`` all human references of that input (any number >= 1). Texts are
    whitespace-normalised (measure_scores.py reads one stripped text per line). Needs ``java``
    (METEOR jar, PTB tokenizer); raises :class:`~.inputs.MetricInputError` (a ``ValueError``)
    for an empty or misaligned corpus. Scales: see the module docstring.
    """
    hyps, refs = check_corpus(hypotheses, references)
    java_executable()  # fail before any work when the Java metrics cannot run
    scores = {
        # Segments keep exactly their own references (None padding is dropped by sacrebleu).
        "bleu": corpus_bleu_13a(hyps, refs, lowercase=True, pad=None),
        "nist": corpus_nist(hyps, refs, lowercase=True),
        **coco_caption_scores(hyps, refs),
    }
    return {name: float(scores[name]) for name in E2E_METRICS}


#: the scores returned, known without running Java (checked against task.primary_metric)
e2e_metrics.metric_names = E2E_METRICS
