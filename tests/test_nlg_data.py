"""E2E and WebNLG loaders: counts from the official files, grouping by input, the hub layouts
(read from local folders in the hub's format) giving the same rows, the release route (served
from 127.0.0.1) when the Hub route fails, and the errors a user can hit."""

from __future__ import annotations

import csv
import functools
import hashlib
import http.server
import logging
import random
import re
import threading
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import datasets
import pytest

from autolora_exp.data import hub_datasets, nlg, release
from autolora_exp.data.hub_datasets import PARQUET_EXPORT_REVISION
from autolora_exp.data.source import source_of
from autolora_exp.data.nlg import (linearize_mr, linearize_triples, load_e2e,
                                   load_webnlg)
from autolora_exp.errors import AssetMissingError, UserError
from autolora_exp.pipeline import split_for_search, split_record


@pytest.fixture(scope="module")
def e2e_dir(shared_data) -> Path:
    path = shared_data / "e2e"
    if not (path / "trainset.csv").is_file():
        pytest.skip(f"E2E files not found in {path}")
    return path


@pytest.fixture(scope="module")
def webnlg_dir(shared_data) -> Path:
    path = shared_data / "webnlg" / "webnlg_challenge_2017"
    if not path.is_dir():
        pytest.skip(f"WebNLG files not found in {path}")
    return path


@pytest.fixture(scope="module")
def e2e(e2e_dir):
    return load_e2e(data_dir=e2e_dir)


@pytest.fixture(scope="module")
def webnlg(webnlg_dir):
    return load_webnlg(data_dir=webnlg_dir.parent)


@pytest.fixture
def hf_cache(tmp_path, monkeypatch):
    """Keep load_dataset's Arrow cache out of the user's ~/.cache."""
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf_cache"))


def check_groups(ds: datasets.Dataset) -> None:
    """``group`` is a function of ``source`` and back; ids count up from 0 in order of appearance."""
    by_group: dict[int, str] = {}
    for source, group in zip(ds["source"], ds["group"]):
        assert by_group.setdefault(group, source) == source
    assert len(set(by_group.values())) == len(by_group)
    assert list(dict.fromkeys(ds["group"])) == list(range(len(by_group)))
    assert ds["idx"] == list(range(len(ds)))


def test_e2e_counts_from_source_md(e2e):
    # SOURCE.md: rows / distinct MRs
    expected = {"train": (42_061, 4_862), "validation": (4_672, 547), "test": (4_693, 630)}
    assert {s: (len(d), len(set(d["group"]))) for s, d in e2e.items()} == expected
    for ds in e2e.values():
        check_groups(ds)
    assert e2e["train"].column_names == ["source", "target", "idx", "group"]


def test_e2e_rows_follow_the_files(e2e, e2e_dir):
    with (e2e_dir / "testset_w_refs.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    test = e2e["test"]
    for n in (0, 1, 2000, len(rows) - 1):
        assert test[n]["target"] == " ".join(rows[n]["ref"].split())
        assert test[n]["source"] == linearize_mr(rows[n]["mr"])
    assert linearize_mr("name[Blue Spice], eatType[coffee shop], area[city centre]") == \
        "name : Blue Spice | eatType : coffee shop | area : city centre"


def _webnlg_lex_counts(files: list[Path]) -> tuple[int, int]:
    """(all lexicalisations, 'good' ones) by a plain scan of the XML text."""
    text = "".join(f.read_text(encoding="utf-8") for f in files)
    return len(re.findall(r"<lex\b", text)), len(re.findall(r'<lex comment="good"', text))


def test_webnlg_counts_and_good_filter(webnlg, webnlg_dir):
    files = {"train": sorted(webnlg_dir.glob("train/*/*.xml")), "validation": sorted(webnlg_dir.glob("dev/*/*.xml")),
             "test": [webnlg_dir / "test" / "testdata_with_lex.xml"]}
    lex = {s: _webnlg_lex_counts(f) for s, f in files.items()}
    # SOURCE.md: lex 18,102 / 2,268 / 4,928; the 77 + 10 'toFix' texts are left out (microsoft/LoRA)
    assert {s: total for s, (total, _) in lex.items()} == {"train": 18_102, "validation": 2_268, "test": 4_928}
    assert {s: len(d) for s, d in webnlg.items()} == {s: good for s, (_, good) in lex.items()} \
        == {"train": 18_025, "validation": 2_258, "test": 4_928}
    for ds in webnlg.values():
        check_groups(ds)
    # test: 1,862 entries, all distinct inputs; train/dev entries with identical triples share a group
    assert len(set(webnlg["test"]["group"])) == 1_862
    assert len(set(webnlg["train"]["group"])) < 6_940 - 5


def test_webnlg_linearisation_is_the_lora_recipes(webnlg):
    first = webnlg["test"][0]
    assert first["source"] == "Abilene_Regional_Airport : cityServed : Abilene,_Texas"
    assert first["target"] == "Abilene, Texas is served by the Abilene regional airport."
    assert linearize_triples(['Aarhus | leaderName | Jacob_Bundsgaard', 'A | b | "c, d"']) == \
        'Aarhus : leaderName : Jacob_Bundsgaard | A : b : "c, d"'
    assert all("\n" not in t for t in webnlg["train"]["target"])  # line breaks inside texts are normalised


def test_search_split_keeps_every_input_on_one_side(e2e):
    train = e2e["train"].select(range(3000))
    d_tr, d_val = split_for_search(train, seed=0)
    assert not set(d_tr["group"]) & set(d_val["group"])
    assert len(d_tr) + len(d_val) == len(train)
    assert abs(len(d_tr) - len(d_val)) <= max(train.to_pandas().groupby("group").size())


# ---- hub layouts, read from local folders ------------------------------------------------------
def test_e2e_hub_parquet_export_equals_local_files(e2e_dir, tmp_path, hf_cache):
    local, hub = tmp_path / "local", tmp_path / "hub"
    local.mkdir()
    for split, name in nlg.E2E_FILES.items():
        with (e2e_dir / name).open(encoding="utf-8", newline="") as f:
            rows = list(csv.DictReader(f))[:300]
        with (local / name).open("w", encoding="utf-8", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=["mr", "ref"])
            writer.writeheader()
            writer.writerows(rows)
        folder = hub / "default" / split  # refs/convert/parquet: <config>/<split>/0000.parquet
        folder.mkdir(parents=True)
        datasets.Dataset.from_dict({"meaning_representation": [r["mr"] for r in rows],
                                    "human_reference": [r["ref"] for r in rows]}).to_parquet(str(folder / "0000.parquet"))
    from_hub, from_files = load_e2e(hub_id=str(hub)), load_e2e(data_dir=local)
    for split in nlg.SPLITS:
        assert from_hub[split].to_dict() == from_files[split].to_dict()
        assert len(from_hub[split]) == 300
    assert source_of(from_hub, "train") == {"route": "hub", "id": str(hub)}
    assert split_record(from_files)["test"]["source"] == {"route": "data_dir", "path": str(local / "testset_w_refs.csv")}


# The hub's web_nlg schema (dataset_infos: Sequence of structs), as datasets >= 4 reads it: a
# dict of lists per struct column.
_STRINGS = datasets.List(datasets.Value("string"))
HUB_FEATURES = datasets.Features({
    "category": datasets.Value("string"), "size": datasets.Value("int32"), "eid": datasets.Value("string"),
    "modified_triple_sets": {"mtriple_set": datasets.List(_STRINGS)},
    "lex": {"comment": _STRINGS, "lid": _STRINGS, "text": _STRINGS, "lang": _STRINGS},
    "test_category": datasets.Value("string"),
})


def _hub_rows(path: Path, test_category: str = "") -> list[dict]:
    """Entries of one XML file in the hub's web_nlg schema (written independently of the loader)."""
    rows = []
    for entry in ET.parse(path).getroot().iter("entry"):
        lexs = entry.findall("lex")
        rows.append({
            "category": entry.get("category"), "size": int(entry.get("size")), "eid": entry.get("eid"),
            "modified_triple_sets": {"mtriple_set": [[t.text for t in entry.find("modifiedtripleset")]]},
            "lex": {"comment": [x.get("comment") for x in lexs], "lid": [x.get("lid") for x in lexs],
                    "text": [x.text for x in lexs], "lang": ["" for _ in lexs]},
            "test_category": test_category,
        })
    return rows


def test_webnlg_hub_layout_equals_local_files(webnlg, webnlg_dir, tmp_path, hf_cache):
    hub = tmp_path / "hub"
    rng = random.Random(0)
    splits = {
        "train": [r for f in sorted(webnlg_dir.glob("train/*/*.xml")) for r in _hub_rows(f)],
        "dev": [r for f in sorted(webnlg_dir.glob("dev/*/*.xml")) for r in _hub_rows(f)],
        # the hub's test split holds three files; only testdata_with_lex is the challenge test set
        "test": [r for name in ("testdata_with_lex", "testdata_unseen_with_lex", "testdata_no_lex")
                 for r in _hub_rows(webnlg_dir / "test" / f"{name}.xml", name)],
    }
    assert len(splits["test"]) == 4_615  # the hub's documented test size
    for split, rows in splits.items():
        rng.shuffle(rows)  # the hub's row order is not the files': the loader orders canonically
        folder = hub / nlg.WEBNLG_FOLDER / split
        folder.mkdir(parents=True)
        datasets.Dataset.from_list(rows, features=HUB_FEATURES).to_parquet(str(folder / "0000.parquet"))
    from_hub = load_webnlg(hub_id=str(hub))
    for split in nlg.SPLITS:
        assert from_hub[split].to_dict() == webnlg[split].to_dict()


def test_hub_repo_with_loading_script_is_read_from_its_parquet_export(monkeypatch):
    calls = []
    fake = datasets.DatasetDict({s: datasets.Dataset.from_dict({"meaning_representation": ["name[X]"],
                                                                "human_reference": ["X."]}) for s in nlg.SPLITS})

    def fake_load_dataset(path, name=None, revision=None, **kwargs):
        calls.append((path, name, revision, kwargs))
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found e2e_nlg.py")
        return fake

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    out = load_e2e()
    assert out["test"][0]["source"] == "name : X"
    assert calls == [("tuetschek/e2e_nlg", None, None, {}), ("tuetschek/e2e_nlg", None, PARQUET_EXPORT_REVISION, {})]
    calls.clear()
    with pytest.raises(UserError):  # the fake has no web_nlg columns; the call pattern is what matters
        load_webnlg()
    assert calls[-1] == ("webnlg-challenge/web_nlg", None, PARQUET_EXPORT_REVISION, {"data_dir": "webnlg_challenge_2017"})


def test_hub_struct_columns_as_lists_of_dicts_are_read_too():
    row = {"category": "Airport", "size": 2, "eid": "Id7",
           "modified_triple_sets": [{"mtriple_set": ["A | p | B", "A | q | C"]}],
           "lex": [{"comment": "good", "text": "A p B, q C."}, {"comment": "toFix", "text": "x"}]}
    entry = nlg._hub_entry(row, "hub")
    assert entry.triples == ("A | p | B", "A | q | C") and entry.eid_number == 7
    assert entry.lexicalisations == (("good", "A p B, q C."), ("toFix", "x"))


# ---- release route: the files the hub's loading scripts download, served from 127.0.0.1 -------
@pytest.fixture
def serve(tmp_path):
    """``serve(folder)`` -> the base URL of a local HTTP server for ``folder``; the server is shut
    down at the end of the test, and stops by itself after 120 s whatever happens."""
    servers = []

    def _serve(folder: Path) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *args: None  # type: ignore[attr-defined]
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        threading.Timer(120, server.shutdown).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}/"

    yield _serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def release_env(monkeypatch, hf_cache):
    """The Hub out of reach (HF_HUB_OFFLINE), plain downloads allowed (HF_DATASETS_OFFLINE unset)."""
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def e2e_release(e2e_dir, tmp_path):
    """The three release CSV files, cut to 200 rows each, and their digests."""
    folder = tmp_path / "e2e-release"
    folder.mkdir()
    for name in nlg.E2E_FILES.values():
        lines = (e2e_dir / name).read_text(encoding="utf-8").splitlines(keepends=True)
        rows = list(csv.reader(lines))[:201]
        with (folder / name).open("w", encoding="utf-8", newline="") as f:
            csv.writer(f).writerows(rows)
    return folder, {name: _sha256(folder / name) for name in nlg.E2E_FILES.values()}


def test_e2e_release_route_when_the_hub_route_fails(e2e_release, serve, release_env, monkeypatch, caplog):
    folder, digests = e2e_release
    url = serve(folder)
    with caplog.at_level(logging.INFO, logger="autolora_exp"):
        data = load_e2e(hub_id="autolora-exp-tests/no-such-e2e", release_url=url, release_sha256=digests)
    expected = load_e2e(data_dir=folder)
    for split in nlg.SPLITS:
        assert data[split].to_dict() == expected[split].to_dict()
        assert len(data[split]) == 200
    assert split_record(data)["validation"]["source"] == {"route": "release", "url": url + "devset.csv",
                                                          "sha256": digests["devset.csv"]}
    route_lines = [r.getMessage() for r in caplog.records if "route" in r.getMessage()]
    assert route_lines == [f"E2E data: release route, 3 files under {url}; SHA-256 checked; the Hub route "
                           "failed (AssetMissingError)"]
    cached = sorted(p.name for p in release.cache_root().glob("*/*"))
    assert cached == sorted(digests)
    # cached: a second load needs no network (downloads forbidden, server gone)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    again = load_e2e(hub_id="autolora-exp-tests/no-such-e2e", release_url="http://127.0.0.1:9/", release_sha256=digests)
    assert again["train"].to_dict() == data["train"].to_dict()


def test_release_route_after_a_reachable_hub_without_parquet_export(e2e_release, serve, release_env, monkeypatch):
    """The case of the issue: the Hub answers, the repository has a loading script and no parquet export."""
    folder, digests = e2e_release
    calls = []

    def fake_load_dataset(path, name=None, revision=None, **kwargs):
        calls.append(revision)
        if revision is None:
            raise RuntimeError("Dataset scripts are no longer supported, but found e2e_nlg.py")
        raise FileNotFoundError(f"Revision '{revision}' does not exist for dataset {path}")

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_datasets, "hub_reachable", lambda: True)
    data = load_e2e(release_url=serve(folder), release_sha256=digests)
    assert calls == [None, PARQUET_EXPORT_REVISION]
    assert source_of(data, "test")["route"] == "release" and len(data["test"]) == 200


def test_webnlg_release_zip_route(webnlg, webnlg_dir, tmp_path, serve, release_env):
    """A zip in the layout of web_nlg.py's archive (one top folder holding webnlg_challenge_2017/)."""
    site = tmp_path / "site"
    site.mkdir()
    archive = site / "webnlg-dataset-test.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted(webnlg_dir.rglob("*.xml")):
            zf.write(path, f"webnlg-dataset-test/webnlg_challenge_2017/{path.relative_to(webnlg_dir)}")
    url = serve(site) + archive.name
    data = load_webnlg(hub_id="autolora-exp-tests/no-such-webnlg", release_url=url, release_sha256=_sha256(archive))
    for split in nlg.SPLITS:
        assert data[split].to_dict() == webnlg[split].to_dict()
        assert source_of(data, split) == {"route": "release", "url": url, "sha256": _sha256(archive)}


def test_wrong_checksum_is_one_line_and_caches_nothing(e2e_release, serve, release_env):
    folder, digests = e2e_release
    url = serve(folder)
    wrong = dict(digests, **{"trainset.csv": "0" * 64})
    with pytest.raises(release.ChecksumMismatchError) as err:
        load_e2e(hub_id="autolora-exp-tests/no-such-e2e", release_url=url, release_sha256=wrong)
    message = str(err.value)
    assert "\n" not in message
    assert f"{url}trainset.csv" in message and "0" * 64 in message and digests["trainset.csv"] in message
    assert not (release.cache_root() / ("0" * 64)).exists()
    assert not list(release.cache_root().rglob("trainset.csv*"))


def test_full_disk_during_a_download_names_the_file_not_the_url_and_caches_nothing(e2e_release, serve,
                                                                                  release_env, monkeypatch):
    import errno

    from autolora_exp import atomic

    folder, digests = e2e_release
    url = serve(folder)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "fsync", full)
    with pytest.raises(atomic.WriteError) as err:
        release.fetch(release.ReleaseFile(f"{url}trainset.csv", digests["trainset.csv"]), "E2E")
    assert "trainset.csv (No space left on device)" in str(err.value) and "could not write" in str(err.value)
    assert not release.cache_root().exists() or not list(release.cache_root().iterdir())


def test_failed_download_names_the_url_and_the_hub_failure(tmp_path, serve, release_env):
    url = serve(tmp_path)  # an empty folder: every file is a 404
    with pytest.raises(AssetMissingError) as err:
        load_e2e(hub_id="autolora-exp-tests/no-such-e2e", release_url=url)
    message = str(err.value)
    assert "\n" not in message
    assert f"could not download {url}trainset.csv (HTTPError: File not found)" in message
    assert "before that the Hub route failed" in message and "task.data_dir" in message
    assert not release.cache_root().exists() or not list(release.cache_root().iterdir())


def test_release_route_offline_and_uncached_names_both_routes(release_env, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(AssetMissingError) as err:
        load_webnlg(hub_id="autolora-exp-tests/no-such-webnlg")
    message = str(err.value)
    assert "\n" not in message
    assert nlg.WEBNLG_RELEASE_URL in message and "HF_DATASETS_OFFLINE" in message
    assert "Hub" in message and "task.data_dir" in message


# ---- errors ------------------------------------------------------------------------------------
def test_uncached_hub_dataset_fails_fast_with_one_line():
    with pytest.raises(AssetMissingError, match="task.data_dir"):
        load_e2e(hub_id="autolora-exp-tests/no-such-e2e")
    with pytest.raises(AssetMissingError, match="task.data_dir"):
        load_webnlg(hub_id="autolora-exp-tests/no-such-webnlg")


def test_bad_local_folders_and_inputs(tmp_path):
    with pytest.raises(UserError, match="trainset.csv"):
        load_e2e(data_dir=tmp_path)
    with pytest.raises(UserError, match="has no files for"):
        load_webnlg(data_dir=tmp_path)
    with pytest.raises(UserError, match="attribute\\[value\\]"):
        linearize_mr("name: The Eagle")
    with pytest.raises(UserError, match="subject \\| property \\| object"):
        linearize_triples(["a | b"])
    (tmp_path / "e2e").mkdir()
    for name in nlg.E2E_FILES.values():
        (tmp_path / "e2e" / name).write_text('mr,ref\n"name[A]",""\n', encoding="utf-8")
    with pytest.raises(UserError, match="blank reference"):
        load_e2e(data_dir=tmp_path / "e2e")
