"""The MS-COCO caption tokenisation: Stanford PTBTokenizer, lower-cased, punctuation dropped.

As ``pycocoevalcap.tokenizer.ptbtokenizer.PTBTokenizer`` (which e2e-metrics runs before
METEOR, ROUGE-L and CIDEr): all texts go one per line through
``edu.stanford.nlp.process.PTBTokenizer -preserveLines -lowerCase`` in a single Java call,
then the tokens in :data:`PUNCTUATIONS` are removed. The PTB tokenizer also applies PTB
escapes (``(`` -> ``-lrb-``, ``"`` -> ````/''``, ``£`` -> ``#``), which the COCO metrics
see too.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path

from .inputs import normalize_whitespace
from .java import ptb_tokenizer_jar, run_java

# The token list pycocoevalcap removes after tokenising.
PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)


def ptb_tokenize(texts: Sequence[str]) -> list[str]:
    """Tokenise ``texts`` (one Java call) and return them as space-joined token strings.

    Each text is whitespace-normalised first: the tokenizer keeps line structure
    (``-preserveLines``), so a line break inside a text would shift every later text.
    """
    lines = [normalize_whitespace(t) for t in texts]
    if not lines:
        return []
    jar = ptb_tokenizer_jar()
    with tempfile.TemporaryDirectory(prefix="ptb-") as tmp:
        path = Path(tmp) / "texts.txt"
        # Newline-terminated so that the output has one newline-terminated line per text,
        # the last one included even when it is empty.
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        out, _ = run_java(
            [
                "-cp",
                str(jar),
                "edu.stanford.nlp.process.PTBTokenizer",
                "-preserveLines",
                "-lowerCase",
                "-encoding",
                "utf-8",
                str(path),
            ],
            cwd=Path(tmp),
            what="Stanford PTBTokenizer",
        )
    out_lines = out.split("\n")
    if out_lines and out_lines[-1] == "":
        out_lines.pop()
    if len(out_lines) != len(lines):
        raise RuntimeError(
            f"PTBTokenizer returned {len(out_lines)} lines for {len(lines)} texts; cannot align captions"
        )
    # Same filter as pycocoevalcap. -lowerCase also lower-cases the bracket escapes (-lrb-), so
    # its upper-case entries never match and brackets stay in as tokens: kept for equal scores.
    return [" ".join(tok for tok in line.rstrip().split(" ") if tok not in PUNCTUATIONS) for line in out_lines]
