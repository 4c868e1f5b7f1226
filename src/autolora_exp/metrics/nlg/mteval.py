"""BLEU and NIST as defined by NIST MT-Eval v13a (``mteval-v13a.pl``), for multi-reference corpora.

Tokenisation is v13a's ``NormalizeText`` (split punctuation and symbols, split ``.`` and
``,`` unless between digits, split ``-`` after a digit); ``sacrebleu``'s ``13a`` tokenizer is
a port of it. e2e-metrics' pure-Python port (``pymteval``, ``measure_scores.py -p``) matches
n-grams case-insensitively, so E2E scores pass ``lowercase=True``; GenerationEval's
``multi-bleu-detok.perl`` is case-sensitive (``lowercase=False``).

References come as ``references[i]`` = all references of segment ``i``; segments may have
different numbers of references.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import sacrebleu
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

Ngram = tuple[str, ...]


def reference_streams(references: Sequence[Sequence[str]], pad: str | None) -> list[list[str | None]]:
    """Transpose per-segment reference lists into the fixed streams ``sacrebleu`` takes.

    Segments with fewer references than the longest list are filled with ``pad``. ``None`` is
    dropped by sacrebleu, so the segment keeps exactly its own references (e2e-metrics'
    variable-reference semantics). ``""`` is an empty reference of length 0, which can be the
    closest reference length (GenerationEval's reference files, where a blank line is an
    empty reference that ``multi-bleu-detok.perl`` reads).
    """
    width = max(len(refs) for refs in references)
    return [[refs[k] if k < len(refs) else pad for refs in references] for k in range(width)]


def corpus_bleu_13a(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], *, lowercase: bool, pad: str | None = None
) -> float:
    """Corpus BLEU-4 as a fraction in [0, 1].

    BLEU = BP * exp(1/4 * sum_{n=1..4} log p_n),  p_n = sum_seg clipped n-gram matches / sum_seg
    hypothesis n-grams (a hypothesis n-gram is clipped at its largest count in any one
    reference of the segment); BP = min(1, exp(1 - r / c)) with c the hypothesis words and r
    the sum over segments of the reference length closest to the hypothesis length (the
    shorter one on ties).

    No smoothing: like ``mteval``/``multi-bleu`` a corpus with no matching 4-gram scores 0.
    """
    streams = reference_streams(references, pad)
    bleu = sacrebleu.corpus_bleu(
        list(hypotheses), streams, tokenize="13a", lowercase=lowercase, smooth_method="none",
        # Texts may already be tokenised (the LoRA WebNLG recipe); multi-bleu does not mind either.
        force=True,
    )
    return bleu.score / 100.0


def tokenize_13a(text: str, *, lowercase: bool) -> list[str]:
    """MT-Eval v13a tokens of ``text`` (lower-cased first when ``lowercase``)."""
    return _TOKENIZER(text.lower() if lowercase else text).split()


_TOKENIZER = Tokenizer13a()

# beta of the NIST brevity penalty: the penalty is 0.5 when the output is 2/3 of the reference
# length, i.e. exp(-beta * log(2/3)^2) = 0.5  (mteval's ratio_x = 1.5, score_x = 0.5).
NIST_BETA = -math.log(0.5) / math.log(1.5) ** 2


def _ngrams(tokens: Sequence[str], n: int) -> list[Ngram]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def nist_length_penalty(ratio: float) -> float:
    """exp(-beta * log(ratio)^2) for 0 < ratio < 1; 1 at or above 1 (longer output is not
    penalised); 0 for an empty output."""
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    return math.exp(-NIST_BETA * math.log(ratio) ** 2)


def corpus_nist(
    hypotheses: Sequence[str], references: Sequence[Sequence[str]], *, max_n: int = 5, lowercase: bool = True
) -> float:
    """Corpus NIST (Doddington 2002) with MT-Eval v13a's definitions.

    Information weight of an n-gram w_1..w_n, counted over every reference of every segment:

        Info(w_1..w_n) = log2( count(w_1..w_{n-1}) / count(w_1..w_n) ),  count() of the empty
        prefix = total number of reference words.

    Score:

        NIST = sum_{n=1..max_n} [ sum_seg sum_{matched n-grams g} Info(g) * min(c_hyp(g), max_ref c_ref(g))
                                  / max(1, sum_seg max(0, len_hyp - n + 1)) ]
               * LP( sum_seg len_hyp / sum_seg mean_ref len_ref )

    with LP = :func:`nist_length_penalty`. The length-penalty denominator averages the
    reference lengths within each segment before summing, as pymteval does; with the same
    number of references everywhere this is mteval's total reference words / number of
    reference sets. (pymteval counts ``len_hyp - n + 1`` without the ``max(0, .)``: the two
    differ only for hypotheses shorter than ``max_n - 1`` tokens.)
    """
    hyp_tokens = [tokenize_13a(h, lowercase=lowercase) for h in hypotheses]
    ref_tokens = [[tokenize_13a(r, lowercase=lowercase) for r in refs] for refs in references]

    # Reference n-gram counts over the whole corpus give each n-gram its information weight.
    ref_counts: Counter[Ngram] = Counter()
    total_ref_words = 0
    for refs in ref_tokens:
        for ref in refs:
            total_ref_words += len(ref)
            for n in range(1, max_n + 1):
                ref_counts.update(_ngrams(ref, n))

    def info(ngram: Ngram) -> float:
        prefix_count = ref_counts[ngram[:-1]] if len(ngram) > 1 else total_ref_words
        return math.log2(prefix_count / ref_counts[ngram])

    matched_info = [0.0] * (max_n + 1)
    hyp_ngram_total = [0] * (max_n + 1)
    hyp_words = 0
    mean_ref_words = 0.0
    for hyp, refs in zip(hyp_tokens, ref_tokens):
        hyp_words += len(hyp)
        mean_ref_words += sum(len(ref) for ref in refs) / len(refs)
        for n in range(1, max_n + 1):
            hyp_ngram_total[n] += max(0, len(hyp) - n + 1)
            max_ref = Counter()
            for ref in refs:
                for ngram, count in Counter(_ngrams(ref, n)).items():
                    max_ref[ngram] = max(max_ref[ngram], count)
            for ngram, count in Counter(_ngrams(hyp, n)).items():
                clipped = min(count, max_ref[ngram])
                if clipped:
                    matched_info[n] += info(ngram) * clipped

    score = sum(matched_info[n] / max(1, hyp_ngram_total[n]) for n in range(1, max_n + 1))
    ratio = hyp_words / mean_ref_words if mean_ref_words else 0.0
    return score * nist_length_penalty(ratio)
