"""METEOR, ROUGE-L and CIDEr-D as the MS-COCO caption code computes them (e2e-metrics' choice).

Hypotheses and references are first PTB-tokenised (:mod:`.ptb_tokenizer`); then

- METEOR 1.5 through the jar's ``-stdio`` protocol (:func:`.meteor.meteor_stdio`);
- ROUGE-L: ``pycocoevalcap.rouge.Rouge``, per segment the LCS-based F-measure against the
  references, averaged over segments:
      P = max_ref LCS(hyp, ref) / |hyp|,  R = max_ref LCS(hyp, ref) / |ref|,
      ROUGE-L = (1 + beta^2) P R / (R + beta^2 P),  beta = 1.2
  (``rouge-score``'s rougeL is a different definition);
- CIDEr: ``pycocoevalcap.cider.Cider``, which is the CIDEr-D variant (what e2e-metrics reports
  as "CIDEr"): TF-IDF vectors of 1..4-grams with document frequencies over the corpus
  references, per n the cosine with each reference where hypothesis counts are clipped at
  the reference counts, times a Gaussian length penalty exp(-(l_hyp - l_ref)^2 / (2 sigma^2)),
  sigma = 6; averaged over n and references, times 10; averaged over segments.

ROUGE-L and CIDEr are the pycocoevalcap classes themselves: those files are the reference
implementation, so they are called rather than re-written.
"""

from __future__ import annotations

from collections.abc import Sequence

from pycocoevalcap.cider.cider import Cider
from pycocoevalcap.rouge.rouge import Rouge

from .meteor import meteor_stdio
from .ptb_tokenizer import ptb_tokenize


def coco_caption_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """``{"meteor", "rouge_l", "cider"}`` for raw texts (tokenised here, in one PTB call)."""
    flat = [*hypotheses, *(r for refs in references for r in refs)]
    tokens = ptb_tokenize(flat)
    hyp_tok = tokens[: len(hypotheses)]
    ref_tok: list[list[str]] = []
    start = len(hypotheses)
    for refs in references:
        ref_tok.append(tokens[start : start + len(refs)])
        start += len(refs)

    # The COCO scorers take {segment id: [texts]} dictionaries.
    res = {i: [h] for i, h in enumerate(hyp_tok)}
    gts = {i: refs for i, refs in enumerate(ref_tok)}
    rouge_l, _ = Rouge().compute_score(gts, res)
    cider, _ = Cider().compute_score(gts, res)
    return {
        "meteor": meteor_stdio(hyp_tok, ref_tok),
        "rouge_l": float(rouge_l),
        "cider": float(cider),
    }
