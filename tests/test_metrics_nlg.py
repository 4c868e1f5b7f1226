"""NLG metrics pinned to the numbers the official scripts print on their own sample inputs.

Reference values (SOURCE.md of ../shared/data/metric-samples):
- e2e-metrics ``measure_scores.py -p devel-conc.txt baseline-output.txt``:
  BLEU 0.7203, METEOR 0.4801, ROUGE_L 0.7910, CIDEr 2.3039 (printed to 4 decimals);
- GenerationEval ``eval.py -nr 4 -m bleu,meteor,ter`` on its English sample:
  BLEU 51.32, METEOR 0.3233, TER 0.4952.
NIST has no printed reference here; its pin comes from an independent re-derivation of
e2e-metrics' pymteval ``NISTScore`` (``PymtevalNist`` below), see ``test_nist_pin``.
"""

from __future__ import annotations

import math
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest

from autolora_exp.errors import UserError
from autolora_exp.metrics.nlg import (
    E2E_METRICS,
    WEBNLG_METRICS,
    MetricInputError,
    e2e_metrics,
    generationeval_scores,
    lora_postprocess,
    webnlg_metrics,
)
from autolora_exp.metrics.nlg import generationeval as generationeval_module
from autolora_exp.metrics.nlg.mteval import corpus_bleu_13a, corpus_nist
from autolora_exp.metrics.nlg.ptb_tokenizer import ptb_tokenize
from autolora_exp.metrics.nlg.punkt_data import MODEL_FILES, word_tokenize, write_punkt_tab
from autolora_exp.metrics.nlg.ter import sentence_ter
from autolora_exp.metrics.nlg.webnlg import lora_reference_slots

SAMPLES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "metric-samples"
needs_java = pytest.mark.skipif(
    shutil.which("java") is None,
    reason="java not on PATH: the METEOR 1.5 and Stanford PTB jars (pycocoevalcap) cannot run",
)
# The official scripts print 4 decimals: agreement to half a unit in the last place.
PRINTED = 5e-5


# --------------------------------------------------------------------------- sample readers


def _samples() -> Path:
    if not SAMPLES.is_dir():
        pytest.skip(f"metric samples not found at {SAMPLES}")
    return SAMPLES


@pytest.fixture(scope="module")
def e2e_example():
    """The e2e-metrics example read as measure_scores.py reads it: stripped lines, references
    grouped by blank lines, one hypothesis per line."""
    root = _samples() / "e2e-metrics-example"
    groups: list[list[str]] = [[]]
    for line in (root / "devel-conc.txt").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            groups[-1].append(line)
        else:
            groups.append([])
    if not groups[-1]:
        groups.pop()
    hyps = [line.strip() for line in (root / "baseline-output.txt").read_text(encoding="utf-8").splitlines()]
    assert len(hyps) == len(groups) == 10
    return hyps, groups


@pytest.fixture(scope="module")
def generationeval_sample():
    """GenerationEval's English sample read as eval.py reads it (``f.read().split('\\n')``):
    reference slot k of input i is line i of reference<k>; a blank line is an empty slot."""
    root = _samples() / "generationeval-en"
    hyps = (root / "hypothesis").read_text(encoding="utf-8").split("\n")
    files = [(root / f"reference{k}").read_text(encoding="utf-8").split("\n") for k in range(4)]
    refs = [list(slots) for slots in zip(*files)]
    assert len(hyps) == len(refs) == 1862
    return hyps, refs


# --------------------------------------------------------------------------- pymteval NIST oracle


class PymtevalNist:
    """e2e-metrics' ``metrics/pymteval.py`` NISTScore re-derived as an independent oracle:
    accumulate per segment (own v13a regexes, lower-casing per token, n-gram lists per
    segment), score at the end. Shares no code with ``autolora_exp.metrics.nlg.mteval``."""

    MAX_N = 5

    @staticmethod
    def tokenize(text: str) -> list[str]:
        text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
        text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
        text = f" {text} "
        text = re.sub(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", r" \1 ", text)
        text = re.sub(r"([^0-9])([\.,])", r"\1 \2 ", text)
        text = re.sub(r"([\.,])([^0-9])", r" \1 \2", text)
        text = re.sub(r"([0-9])(-)", r"\1 \2 ", text)
        return re.sub(r"\s+", " ", text).strip().split(" ")

    def __init__(self) -> None:
        self.ref_ngrams = [defaultdict(int) for _ in range(self.MAX_N + 1)]
        self.hits: list[list[dict]] = [[] for _ in range(self.MAX_N)]
        self.cand_lens: list[list[int]] = [[] for _ in range(self.MAX_N)]
        self.avg_ref_len = 0.0

    def _grams(self, n: int, sent: list[str]) -> list[tuple[str, ...]]:
        low = [tok.lower() for tok in sent]
        return list(zip(*[low[i:] for i in range(n)]))

    def append(self, hyp: str, refs: list[str]) -> None:
        hyp_t, refs_t = self.tokenize(hyp), [self.tokenize(r) for r in refs]
        for n in range(self.MAX_N):
            self.cand_lens[n].append(len(hyp_t) - n)
            merged: dict = {}
            for ref in refs_t:
                counts: dict = defaultdict(int)
                for g in self._grams(n + 1, ref):
                    counts[g] += 1
                for g, c in counts.items():
                    merged[g] = max(merged.get(g, 0), c)
            hyp_counts: dict = defaultdict(int)
            for g in self._grams(n + 1, hyp_t):
                hyp_counts[g] += 1
            self.hits[n].append({g: min(c, merged.get(g, 0)) for g, c in hyp_counts.items() if merged.get(g, 0)})
            for ref in refs_t:
                for g in self._grams(n + 1, ref):
                    self.ref_ngrams[n + 1][g] += 1
        total = sum(len(r) for r in refs_t)
        self.ref_ngrams[0][()] += total
        self.avg_ref_len += total / len(refs_t)

    def score(self) -> float:
        def info(g):
            return math.log(self.ref_ngrams[len(g) - 1][g[:-1]] / self.ref_ngrams[len(g)][g], 2)

        total = 0.0
        for n in range(self.MAX_N):
            hit_info = sum(info(g) * k for seg in self.hits[n] for g, k in seg.items())
            total += hit_info / sum(self.cand_lens[n])
        ratio = sum(self.cand_lens[0]) / self.avg_ref_len
        beta = -math.log(0.5) / math.log(1.5) ** 2
        penalty = 1.0 if ratio >= 1 else math.exp(-beta * math.log(ratio) ** 2)
        return total * penalty


def pymteval_nist(hyps, refs) -> float:
    oracle = PymtevalNist()
    for hyp, ref_list in zip(hyps, refs):
        oracle.append(hyp, ref_list)
    return oracle.score()


# --------------------------------------------------------------------------- offline word_tokenize


def test_punkt_tab_files_load_back_as_the_packaged_parameters(tmp_path, monkeypatch):
    import nltk
    from nltk.tokenize.punkt import load_punkt_params
    from punkt.data import english

    # NLTK only opens data under a root on nltk.data.path.
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path), *nltk.data.path])
    model_dir = write_punkt_tab(tmp_path)
    assert sorted(p.name for p in model_dir.iterdir()) == sorted(MODEL_FILES)
    params = load_punkt_params(nltk.data.FileSystemPathPointer(str(model_dir)))
    assert params.abbrev_types == set(english.ABBREV_TYPES)
    assert params.sent_starters == set(english.SENT_STARTERS)
    assert params.collocations == set(english.COLLOCATIONS)
    assert dict(params.ortho_context) == dict(english.ORTHO_CONTEXT)
    # A complete model is left alone (no rewrite, no temporary directories left behind).
    stamp = (model_dir / "ortho_context.tab").stat().st_mtime_ns
    assert write_punkt_tab(tmp_path) == model_dir
    assert (model_dir / "ortho_context.tab").stat().st_mtime_ns == stamp
    assert [p.name for p in model_dir.parent.iterdir()] == ["english"]


def test_word_tokenize_works_offline_with_the_english_model():
    # "Mr." stays one token only because "mr" is a Punkt abbreviation type of the model.
    assert word_tokenize("Mr. Smith's runway, 18L/36R, isn't closed.") == [
        "Mr.", "Smith", "'s", "runway", ",", "18L/36R", ",", "is", "n't", "closed", ".",
    ]


# --------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("metric", [e2e_metrics, webnlg_metrics])
@pytest.mark.parametrize(
    "hyps, refs, message",
    [
        ([], [], "hypotheses is empty"),
        (["a b"], [["a b"], ["c"]], "1 hypotheses but 2 reference lists"),
        (["a b", "c"], [["a b"]], "2 hypotheses but 1 reference lists"),
        (["a b"], [[]], r"references\[0\] is empty"),
        (["a b"], [["a b", "  \n"]], r"references\[0\]\[1\] is blank"),
        ([None], [["a"]], r"hypotheses\[0\] is NoneType"),
        ("a b", [["a b"]], "bare str"),
        (["a b"], ["a b"], r"references\[0\] is str"),
    ],
)
def test_bad_corpus_is_a_value_error(metric, hyps, refs, message):
    with pytest.raises(ValueError, match=message) as err:
        metric(hyps, refs)
    assert isinstance(err.value, MetricInputError) and isinstance(err.value, UserError)


@pytest.mark.parametrize("metric, needs", [(e2e_metrics, "ROUGE-L and CIDEr"), (webnlg_metrics, "METEOR")])
def test_missing_java_is_a_user_error_naming_it(metric, needs, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty directory: no java on PATH
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(UserError, match="java not found on PATH") as err:
        metric(["the cat sat on the mat"], [["the cat sat on the mat"]])
    assert needs in str(err.value)


def test_webnlg_num_refs_must_be_positive():
    with pytest.raises(UserError, match="num_refs=0"):
        webnlg_metrics(["a"], [["a"]], num_refs=0)


# --------------------------------------------------------------------------- BLEU and NIST


def test_nist_by_hand_two_word_match():
    # Refs: "a b" -> count(a) = count(b) = 1, 2 words, count(a b) = 1.
    # Info(a) = Info(b) = log2(2/1) = 1; Info(a b) = log2(count(a)/count(a b)) = 0.
    # NIST = (1 + 1) / 2 unigrams + 0 / 1 bigram + 0 (no 3..5-grams); ratio 1 -> no penalty.
    assert corpus_nist(["a b"], [["a b"]]) == 1.0


def test_nist_by_hand_short_output_is_penalised():
    # Info(a) = log2(3 ref words / 1) ; one matched unigram of one -> log2(3).
    # Length ratio 1/3: penalty exp(-beta log(1/3)^2), beta = -log(0.5) / log(1.5)^2.
    beta = -math.log(0.5) / math.log(1.5) ** 2
    expected = math.log2(3) * math.exp(-beta * math.log(1 / 3) ** 2)
    assert corpus_nist(["A"], [["a b c"]]) == pytest.approx(expected, rel=1e-12)


def test_nist_agrees_with_pymteval_on_variable_references():
    hyps = [
        "The Eagle is a cheap coffee shop near Burger King.",
        "Zizzi serves Italian food, price range £20-25.",
        "Blue Spice is in the city centre.",
    ]
    refs = [
        ["The Eagle is a cheap coffee shop near Burger King.", "Near Burger King is The Eagle, a cheap coffee shop."],
        ["ZIZZI is an Italian place; it costs £20-25.", "Zizzi serves Italian food for 20-25 pounds.", "Italian food at Zizzi."],
        ["In the city centre there is Blue Spice."],
    ]
    assert corpus_nist(hyps, refs) == pytest.approx(pymteval_nist(hyps, refs), rel=1e-12)


def test_nist_pin(e2e_example):
    """NIST on the e2e-metrics example: 7.788887609555578.

    Where the number comes from: measure_scores.py prints no NIST for this example in
    SOURCE.md, so the pin is the value of ``PymtevalNist`` (above), an independent
    re-derivation of e2e-metrics' pymteval NISTScore (what ``measure_scores.py -p`` runs).
    ``nltk.translate.nist_score.corpus_nist`` is not the v13a formula: it gives 6.2219 here.
    """
    hyps, refs = e2e_example
    oracle = pymteval_nist(hyps, refs)
    assert oracle == pytest.approx(7.788887609555578, rel=1e-12)
    assert corpus_nist(hyps, refs) == pytest.approx(oracle, rel=1e-12)


def test_e2e_bleu_pin(e2e_example):
    hyps, refs = e2e_example
    assert corpus_bleu_13a(hyps, refs, lowercase=True) == pytest.approx(0.7203, abs=PRINTED)


def test_bleu_is_case_insensitive_only_when_asked():
    hyps, refs = ["The Cat Sat On The Mat ."], [["the cat sat on the mat ."]]
    assert corpus_bleu_13a(hyps, refs, lowercase=True) == pytest.approx(1.0)
    assert corpus_bleu_13a(hyps, refs, lowercase=False) < 0.5


def test_generationeval_bleu_pin_full_sample(generationeval_sample):
    # multi-bleu-detok.perl on the raw files (blank lines are empty references): 51.32.
    hyps, refs = generationeval_sample
    assert corpus_bleu_13a(hyps, refs, lowercase=False, pad="") == pytest.approx(0.5132, abs=PRINTED)


def test_repeated_references_are_neutral_but_empty_slots_are_not(generationeval_sample):
    hyps, refs = generationeval_sample
    real = [[r for r in slots if r.strip()] for slots in refs]
    only_real = corpus_bleu_13a(hyps, real, lowercase=False, pad=None)
    # LoRA's padding (first reference repeated) scores exactly like the real references alone.
    assert corpus_bleu_13a(hyps, lora_reference_slots(real, 4), lowercase=False) == pytest.approx(only_real, rel=1e-12)
    # Empty slots are zero-length references: closest for short hypotheses, so BP rises to 1.
    with_empty_slots = corpus_bleu_13a(hyps, refs, lowercase=False, pad="")
    assert with_empty_slots == pytest.approx(0.5132, abs=PRINTED)
    assert only_real < 0.40


# --------------------------------------------------------------------------- TER and the LoRA decode step


def test_sentence_ter_follows_generationeval():
    # pyter's own example: 4 edits (1 shift + 3 edits) over 13 reference words.
    ref = "SAUDI ARABIA denied THIS WEEK information published in the AMERICAN new york times"
    hyp = "THIS WEEK THE SAUDIS denied information published in the new york times"
    assert sentence_ter(hyp, [ref]) == pytest.approx(4 / 13)
    assert sentence_ter("a b c", ["x y z", "a b c"]) == 0.0  # minimum over references
    # An empty slot scores 1, so it caps a sentence whose real TER is higher (4 edits / 1 word).
    assert sentence_ter("a b c d", ["x"]) == 4.0
    assert sentence_ter("a b c d", ["x", ""]) == 1.0


def test_lora_postprocess_lowercases_and_splits_non_word_characters():
    text = "Adolfo Suárez Madrid–Barajas Airport's runway is \"18L/36R\".\n"
    assert lora_postprocess(text) == "adolfo suárez madrid – barajas airport ' s runway is \" 18l / 36r \" ."


def test_lora_reference_slots_repeat_the_first_and_keep_six():
    assert lora_reference_slots([["a", "b"]], 4) == [["a", "b", "a", "a"]]
    assert lora_reference_slots([[str(k) for k in range(8)]]) == [["0", "1", "2", "3", "4", "5"]]


def test_webnlg_metrics_scores_the_lora_files_with_generationeval(monkeypatch):
    """The wiring without the 10 s jar: what reaches METEOR, and BLEU/TER on the LoRA texts.
    (The METEOR jar itself is pinned by the GenerationEval tests below.)"""
    seen = {}

    def fake_meteor(hyps, slots):
        seen["hyps"], seen["slots"] = hyps, slots
        return 0.5

    monkeypatch.setattr(generationeval_module, "meteor_files", fake_meteor)
    monkeypatch.setattr(generationeval_module, "java_executable", lambda: "java")
    hyps = ["The Runway of Abilene Airport is 18L/36R.", "Alan Bean was born in Wheeler, Texas."]
    refs = [["the runway of abilene airport is 18l / 36r ."], ["Alan Bean was born in\nWheeler , Texas.", "Alan Bean is from Texas."]]
    scores = webnlg_metrics(hyps, refs, num_refs=3)
    # Identical after lower-casing and LoRA tokenisation: perfect BLEU and TER.
    assert scores == {"bleu": pytest.approx(1.0), "meteor": 0.5, "ter": 0.0}
    assert seen["hyps"] == ["the runway of abilene airport is 18l / 36r .", "alan bean was born in wheeler , texas ."]
    assert seen["slots"][1] == [
        "alan bean was born in wheeler , texas .", "alan bean is from texas .", "alan bean was born in wheeler , texas .",
    ]


# --------------------------------------------------------------------------- Java-backed: PTB, METEOR, full pins


@needs_java
def test_ptb_tokenizer_keeps_one_line_per_text():
    texts = ["Hello, World!", "line\nbreak\r\nhere\u2028too", "", "...", "Costs £20 (cheap).", 'He said "yes" -- ok; a|||b']
    assert ptb_tokenize(texts) == [
        "hello world",
        "line break here too",
        "",
        "",
        "costs # 20 -lrb- cheap -rrb-",  # PTB escapes; pycocoevalcap's filter keeps the brackets
        "he said yes ok a | | | b",
    ]


@needs_java
def test_e2e_metrics_pins(e2e_example):
    hyps, refs = e2e_example
    scores = e2e_metrics(hyps, refs)
    assert tuple(scores) == E2E_METRICS
    expected = {"bleu": 0.7203, "meteor": 0.4801, "rouge_l": 0.7910, "cider": 2.3039}
    for name, value in expected.items():
        assert scores[name] == pytest.approx(value, abs=PRINTED), name
    assert scores["nist"] == pytest.approx(7.788887609555578, rel=1e-12)


@needs_java
def test_generationeval_pin_first_200_inputs(generationeval_sample):
    """Fast stand-in for the slow full-sample pin below: the first 200 inputs, values computed
    by this same code path (generationeval_scores), which the full pin validates."""
    hyps, refs = generationeval_sample
    scores = generationeval_scores(hyps[:200], refs[:200])
    assert scores == {
        "bleu": pytest.approx(0.7309273605810543, rel=1e-9),
        "meteor": pytest.approx(0.5152070140481633, rel=1e-9),
        "ter": pytest.approx(0.20291018992729348, rel=1e-9),
    }


@needs_java
@pytest.mark.slow
def test_generationeval_pin_full_sample(generationeval_sample):
    # eval.py -nr 4 -m bleu,meteor,ter: BLEU 51.32, METEOR 0.3233, TER 0.4952 (about 1-2 min: pyter).
    hyps, refs = generationeval_sample
    scores = generationeval_scores(hyps, refs)
    assert scores == {
        "bleu": pytest.approx(0.5132, abs=PRINTED),
        "meteor": pytest.approx(0.3233, abs=PRINTED),
        "ter": pytest.approx(0.4952, abs=PRINTED),
    }


@needs_java
@pytest.mark.slow
def test_webnlg_metrics_end_to_end_perfect_match():
    hyps = ["The Runway of Abilene Airport is 18L/36R.", "Alan Bean was born in Wheeler, Texas."]
    refs = [["the runway of abilene airport is 18l / 36r ."], ["Alan Bean was born in\nWheeler , Texas.", "Alan Bean is from Texas."]]
    scores = webnlg_metrics(hyps, refs)
    assert tuple(scores) == WEBNLG_METRICS
    assert scores == {"bleu": pytest.approx(1.0), "meteor": pytest.approx(1.0), "ter": 0.0}


@needs_java
def test_empty_last_hypothesis_keeps_its_line():
    # an untrained model may answer with an empty sentence; the jar must still see one line per text
    from autolora_exp.metrics.nlg import generationeval_scores

    scores = generationeval_scores(["the baths were built in 1904 .", ""],
                                   [["the asser levy public baths was built in 1904 ."] * 2,
                                    ["the asser levy public baths was built in 1904 ."] * 2])
    assert 0.0 < scores["meteor"] < 1.0
