"""Official NLG metrics, computed offline: E2E (tuetschek/e2e-metrics) and WebNLG (GenerationEval).

    e2e_metrics(hypotheses, references)    -> {"bleu", "nist", "meteor", "rouge_l", "cider"}
    webnlg_metrics(hypotheses, references) -> {"bleu", "meteor", "ter"}

``references[i]`` holds all references of input ``i`` (any number >= 1). BLEU, METEOR,
ROUGE-L and TER are fractions in [0, 1] (BLEU 0.7203 is the 72.03 of BLEU x100 tables); NIST
and CIDEr are on their own scales. METEOR, and the PTB tokenisation behind ROUGE-L and
CIDEr, run the jars shipped with ``pycocoevalcap==1.2`` and need ``java`` on PATH.

Modules: ``inputs`` (checks, whitespace), ``java`` (java + jars), ``punkt_data`` (offline
``nltk.word_tokenize``), ``mteval`` (BLEU, NIST), ``ptb_tokenizer``, ``meteor``, ``coco``
(METEOR/ROUGE-L/CIDEr-D), ``ter``, ``generationeval`` (eval.py), ``e2e``, ``webnlg``.
"""

from .e2e import E2E_METRICS, e2e_metrics
from .generationeval import generationeval_scores
from .inputs import MetricInputError
from .webnlg import WEBNLG_METRICS, lora_postprocess, webnlg_metrics

__all__ = [
    "E2E_METRICS",
    "WEBNLG_METRICS",
    "MetricInputError",
    "e2e_metrics",
    "generationeval_scores",
    "lora_postprocess",
    "webnlg_metrics",
]
