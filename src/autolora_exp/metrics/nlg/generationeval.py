"""WebNLG/GenerationEval ``eval.py -m bleu,meteor,ter`` on texts as they stand in its input files.

eval.py reads ``hypothesis`` and ``reference0..reference{n-1}`` (line i of every file belongs
to input i; an empty line is a missing reference) and

- BLEU: ``multi-bleu-detok.perl`` on the files as they are (v13a tokenisation,
  case-sensitive, all reference files; an empty line is an empty reference) -- reproduced by
  :func:`.mteval.corpus_bleu_13a` with empty-string padding;
- METEOR: every text through ``' '.join(nltk.word_tokenize(text))``, then the METEOR 1.5 jar
  ``-l en -norm -r n`` on one hypothesis file and one reference file with n lines per input
  (:func:`.meteor.meteor_files`);
- TER: the same tokenised texts, mean of per-sentence minimum pyter TER (:mod:`.ter`).

Checked on GenerationEval's own English sample (1,862 inputs, 4 reference files): eval.py
prints BLEU 51.32, METEOR 0.3233, TER 0.4952.

Empty reference slots are not neutral: an empty reference (length 0) is the closest
reference length for every hypothesis shorter than half its shortest real reference, which
lifts BLEU's brevity penalty (on the sample, BP 1.0 instead of 0.774: 51.32 instead of 39.70
with the empty slots filled by a repeated reference), and an empty slot caps a sentence's
TER at 1. microsoft/LoRA's decode step never writes empty slots (:mod:`.webnlg`).
"""

from __future__ import annotations

from collections.abc import Sequence

from .inputs import MetricInputError, normalize_whitespace
from .java import java_executable
from .meteor import meteor_files
from .mteval import corpus_bleu_13a
from .punkt_data import word_tokenize
from .ter import generationeval_ter


def reference_slots(references: Sequence[Sequence[str]]) -> list[list[str]]:
    """Every input's references padded with empty slots to the largest count (GenerationEval's
    reference files: a blank line where an input has fewer references)."""
    width = max(len(refs) for refs in references)
    return [list(refs) + [""] * (width - len(refs)) for refs in references]


def generationeval_scores(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> dict[str, float]:
    """``{"bleu", "meteor", "ter"}`` exactly as GenerationEval's eval.py computes them.

    ``references[i]`` are input i's reference lines (blank ones allowed: a blank line is an
    empty reference, as in eval.py's reference files). BLEU is a fraction (eval.py prints it
    x100: 0.5132 here is its 51.32); METEOR and TER are fractions as eval.py prints them.
    Texts are whitespace-normalised first (one text per file line).
    """
    java_executable()  # fail before the slow parts when METEOR cannot run
    hypotheses = [normalize_whitespace(h) for h in hypotheses]
    if not hypotheses or len(hypotheses) != len(references) or any(len(refs) == 0 for refs in references):
        raise MetricInputError(
            "generationeval_scores needs as many non-empty reference lists as hypotheses (at least one)"
        )
    slots = [[normalize_whitespace(r) for r in refs] for refs in reference_slots(references)]

    # BLEU reads the files untokenised; METEOR and TER see nltk.word_tokenize'd texts.
    bleu = corpus_bleu_13a(hypotheses, slots, lowercase=False, pad="")
    hyp_tok = [" ".join(word_tokenize(h)) for h in hypotheses]
    slots_tok = [[" ".join(word_tokenize(r)) for r in refs] for refs in slots]
    return {
        "bleu": bleu,
        "meteor": meteor_files(hyp_tok, slots_tok),
        "ter": generationeval_ter(hyp_tok, slots_tok),
    }
