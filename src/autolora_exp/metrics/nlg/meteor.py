"""METEOR 1.5 (Denkowski & Lavie 2014) through its reference jar, one Java process per corpus.

Both official NLG scripts run ``meteor-1.5.jar -l en -norm`` (English, text normalisation:
lower-casing and punctuation handling inside the jar); they differ in how they feed it:

- :func:`meteor_stdio` -- the MS-COCO caption wrapper (``pycocoevalcap.meteor.Meteor``, used by
  e2e-metrics): ``-stdio`` mode, one ``SCORE ||| ref_1 ||| ... ||| ref_k ||| hyp`` line per
  segment returns its sufficient statistics, then one ``EVAL ||| stats_1 ||| ... ||| stats_N``
  line returns the N segment scores and the corpus score. Segments may have different
  numbers of references.
- :func:`meteor_files` -- GenerationEval's ``eval.py``: a hypothesis file and a reference file
  with exactly ``n_refs`` consecutive lines per hypothesis (``-r n_refs``); the corpus score
  is the "Final score" line.

In both the jar aligns the hypothesis with each reference (exact, stem, synonym, paraphrase
modules), keeps the best-scoring reference per segment and aggregates the statistics of
those alignments over the corpus:

    P = m / |hyp|, R = m / |ref| (module-weighted matches m), F_mean = P R / (alpha P + (1 - alpha) R),
    Pen = gamma (chunks / m)^beta,  METEOR = F_mean (1 - Pen)   (en: alpha .85, beta .2, gamma .6).
"""

from __future__ import annotations

import re
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from .java import JAVA_OPTIONS, java_executable, meteor_jar, run_java

# Heap size both official wrappers give the jar (the paraphrase table is large).
_HEAP = "-Xmx2G"
_FINAL_SCORE = re.compile(r"^Final score:\s*(\S+)\s*$", re.MULTILINE)


def _protocol_safe(text: str) -> str:
    # "|||" separates fields in -stdio mode; pycocoevalcap strips it from the hypothesis (and
    # collapses the double space left behind). References are guarded the same way.
    return text.replace("|||", "").replace("  ", " ")


def meteor_stdio(hypotheses: Sequence[str], references: Sequence[Sequence[str]]) -> float:
    """Corpus METEOR as the MS-COCO wrapper computes it (texts already PTB-tokenised)."""
    jar = meteor_jar()
    cmd = [java_executable(), *JAVA_OPTIONS, _HEAP, "-jar", str(jar), "-", "-", "-stdio", "-l", "en", "-norm"]
    score_lines = [
        " ||| ".join(["SCORE", *(_protocol_safe(r) for r in refs), _protocol_safe(hyp)]) + "\n"
        for hyp, refs in zip(hypotheses, references)
    ]
    with tempfile.TemporaryFile() as stderr:
        proc = subprocess.Popen(
            cmd, cwd=jar.parent, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
            text=True, encoding="utf-8",
        )

        def fail(reason: str) -> RuntimeError:
            proc.kill()
            proc.wait()
            stderr.seek(0)
            tail = stderr.read().decode("utf-8", "replace")[-2000:]
            return RuntimeError(f"METEOR jar {reason}: {tail}")

        def read_line() -> str:
            line = proc.stdout.readline()
            if not line:
                raise fail("stopped before answering")
            return line.strip()

        # A writer thread feeds the SCORE lines while this thread reads the answers, so
        # neither side blocks on a full pipe and no line waits for a round trip.
        def write_scores() -> None:
            try:
                proc.stdin.writelines(score_lines)
                proc.stdin.flush()
            except BrokenPipeError:
                pass  # the jar died; read_line reports it with its stderr

        writer = threading.Thread(target=write_scores, daemon=True)
        writer.start()
        stats = [read_line() for _ in score_lines]
        writer.join()
        proc.stdin.write(" ||| ".join(["EVAL", *stats]) + "\n")
        proc.stdin.close()
        for _ in stats:  # the segment scores come first
            read_line()
        final = read_line()
        proc.stdout.close()
        proc.wait()
    try:
        return float(final)
    except ValueError:
        raise RuntimeError(f"METEOR jar answered {final!r} instead of a corpus score") from None


def meteor_files(hypotheses: Sequence[str], reference_slots: Sequence[Sequence[str]]) -> float:
    """Corpus METEOR as GenerationEval's ``eval.py`` computes it.

    ``reference_slots[i]`` holds the same number ``n_refs`` of references for every
    hypothesis (an empty string is an empty reference line, as in GenerationEval's files).
    Texts must not contain line breaks.
    """
    n_refs = len(reference_slots[0])
    if any(len(slots) != n_refs for slots in reference_slots):
        raise ValueError("meteor_files needs the same number of reference slots for every hypothesis")
    texts = [*hypotheses, *(r for slots in reference_slots for r in slots)]
    if any("\n" in t or "\r" in t for t in texts):
        raise ValueError("meteor_files: texts must be single lines (normalise whitespace first)")
    jar = meteor_jar()
    with tempfile.TemporaryDirectory(prefix="meteor-") as tmp:
        hyp_file, ref_file = Path(tmp) / "hypothesis", Path(tmp) / "reference"
        # one line per text, each ended by a newline: a trailing empty hypothesis keeps its line
        hyp_file.write_text("".join(h + "\n" for h in hypotheses), encoding="utf-8")
        ref_file.write_text("".join(r + "\n" for slots in reference_slots for r in slots), encoding="utf-8")
        out, err = run_java(
            [_HEAP, "-jar", str(jar), str(hyp_file), str(ref_file), "-l", "en", "-norm", "-r", str(n_refs)],
            cwd=jar.parent,
            what="METEOR jar",
        )
    match = _FINAL_SCORE.search(out)
    if match is None:
        raise RuntimeError(f"METEOR jar printed no final score: {err.strip()[-2000:] or out[-2000:]}")
    return float(match.group(1))
