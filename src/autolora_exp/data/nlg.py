"""Data-to-text generation data: E2E NLG (meaning representations) and WebNLG 2017 (DBpedia triples).

Both loaders return a ``datasets.DatasetDict`` with ``train``, ``validation`` and ``test`` and
exactly these columns, one row per (input, human reference) pair:

- ``source``  the linearised input (see below)
- ``target``  one human reference, whitespace-normalised (some WebNLG texts hold line breaks)
- ``idx``     ``int64``, the row's position in its split (stable: see "Row order")
- ``group``   ``int64``, the id of the input: every row with the same ``source`` has the same
              ``group`` (numbered in order of first appearance). Scoring collects a group's
              references for multi-reference metrics, and AutoLoRA's 1:1 split keeps a group
              on one side, so D_val never holds an input D_tr trains on.

Linearisation (the input side of the microsoft/LoRA GPT-2 recipe, :func:`linearize_mr`,
:func:`linearize_triples`):

- E2E: ``name[The Eagle], eatType[coffee shop], ...`` -> ``name : The Eagle | eatType : coffee shop | ...``.
  microsoft/LoRA trains on the Prefix-Tuning copy of E2E, which also renames two keys
  (``eatType`` -> ``Type``, ``priceRange`` -> ``price``) and PTB-tokenises values and
  references (``£30`` -> ``£ 30``). Here the official attribute names and untokenised texts
  are kept: the official E2E scripts tokenise for themselves.
- WebNLG: each modified triple ``s | p | o`` -> ``s : p : o``, triples joined by `` | ``
  (``format_converting_webnlg.py``: underscores and quotes of the DBpedia names are kept),
  e.g. ``Aarhus_Airport : cityServed : "Aarhus, Denmark"``. As there, only lexicalisations
  whose ``comment`` is ``good`` are used (train drops 77 ``toFix`` texts and so 5 inputs, dev
  10 and 1; every test text is ``good``).

Sources (routes), tried in this order when ``data_dir`` is not given:

1. ``hub``: the hub datasets (``tuetschek/e2e_nlg``; ``webnlg-challenge/web_nlg`` config
   ``webnlg_challenge_2017``, whose test split is filtered to ``testdata_with_lex``, the full
   challenge test set). Both hub repositories still ship a loading script, which ``datasets`` >= 4
   no longer runs; they are then read from the Hub's parquet export (``refs/convert/parquet``),
   which holds the same rows, where the Hub has one.
2. ``release``: when the Hub route fails, the official release files that those loading scripts
   download (huggingface/datasets ``datasets/e2e_nlg/e2e_nlg.py`` ``_URL``/``_URLS``: three CSV
   files of ``tuetschek/e2e-dataset``; ``datasets/web_nlg/web_nlg.py`` ``_URL``: the GitLab zip of
   ``shimorina/webnlg-dataset`` at commit 587fa69), checked against the SHA-256 digests in those
   scripts' ``dataset_infos.json`` (``download_checksums``) and cached
   (:mod:`autolora_exp.data.release`). The E2E digests are also those of the files in
   ``../shared/data/e2e/SHA256SUMS`` (the v1.0.0 release, byte-identical by git blob id).
3. ``data_dir`` (given explicitly): the official files (E2E: ``trainset.csv``, ``devset.csv``,
   ``testset_w_refs.csv``; WebNLG: the challenge's ``train/``, ``dev/`` XML trees and
   ``test/testdata_with_lex.xml``).

The route used is logged in one line and recorded per split in result.json
(:mod:`autolora_exp.data.source`).

Row order: E2E keeps the files' row order (the hub loader reads the same CSV files in order).
WebNLG entries are ordered by entry id where ids are unique in the split (the test file), else
by (triple count, category, entry id) -- the order of the official train/dev file trees -- so
``idx`` and ``group`` are the same whichever source the rows came from.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets

from autolora_exp.data import release
from autolora_exp.data.files import named_decode_errors
from autolora_exp.data.hub_datasets import HubLoadError, load_hub_dataset
from autolora_exp.data.source import with_source
from autolora_exp.errors import AssetMissingError, UserError

log = logging.getLogger(__name__)

SPLITS = ("train", "validation", "test")
#: the Hub's automatic parquet export of a repository (see the module docstring)

FEATURES = datasets.Features({
    "source": datasets.Value("string"),
    "target": datasets.Value("string"),
    "idx": datasets.Value("int64"),
    "group": datasets.Value("int64"),
})


def normalize_text(text: str) -> str:
    """Collapse runs of whitespace (line breaks included) to one space and strip the ends."""
    return " ".join(text.split())


def build_split(pairs: Iterable[tuple[str, str]], where: str) -> datasets.Dataset:
    """(source, target) rows in order -> the shared schema; ``group`` numbers distinct sources.

    A row whose target is blank is an error: an official reference file cannot hold one, and
    the metrics would reject it at the end of training.
    """
    columns: dict[str, list] = {"source": [], "target": [], "idx": [], "group": []}
    groups: dict[str, int] = {}
    for n, (source, target) in enumerate(pairs):
        source, target = normalize_text(source), normalize_text(target)
        if not source or not target:
            raise UserError(f"{where} row {n}: blank {'input' if not source else 'reference'}")
        columns["source"].append(source)
        columns["target"].append(target)
        columns["idx"].append(n)
        columns["group"].append(groups.setdefault(source, len(groups)))
    return datasets.Dataset.from_dict(columns, features=FEATURES)


# ---------------------------------------------------------------------------------------------
# E2E
E2E_FILES = {"train": "trainset.csv", "validation": "devset.csv", "test": "testset_w_refs.csv"}
E2E_HUB_COLUMNS = ("meaning_representation", "human_reference")
#: the release route (module docstring): e2e_nlg.py's ``_URL`` and the digests of its
#: dataset_infos.json, which equal ../shared/data/e2e/SHA256SUMS
E2E_RELEASE_URL = "https://raw.githubusercontent.com/tuetschek/e2e-dataset/master/"
E2E_RELEASE_SHA256 = {
    "trainset.csv": "f27d48df45815288ab15619d47a79028c300fbb7f42e373668aba0b98c1d57c6",
    "devset.csv": "fc26b78cdb849c80545f513b223d1e051138b43882eeb79e3eb153e689c864f9",
    "testset_w_refs.csv": "edc8db685e39bb9824d5bd70c18b1c9b0412d14b527aa960e2d1c8251ee15ccd",
}
E2E_HINT = "task.data_dir=<folder with trainset.csv, devset.csv, testset_w_refs.csv>"
_MR_SLOT = re.compile(r"\s*([^,\[\]]+?)\s*\[([^\]]*)\]\s*(?:,|$)")


def linearize_mr(mr: str) -> str:
    """``name[The Eagle], eatType[coffee shop]`` -> ``name : The Eagle | eatType : coffee shop``."""
    slots, pos = [], 0
    for match in _MR_SLOT.finditer(mr):
        if match.start() != pos:
            break
        slots.append(f"{match.group(1)} : {match.group(2).strip()}")
        pos = match.end()
    if not slots or pos != len(mr):
        raise UserError(f"E2E meaning representation {mr!r} is not 'attribute[value], ...'")
    return " | ".join(slots)


def load_e2e(data_dir: str | os.PathLike | None = None, hub_id: str = "tuetschek/e2e_nlg",
             release_url: str = E2E_RELEASE_URL,
             release_sha256: Mapping[str, str] = E2E_RELEASE_SHA256) -> datasets.DatasetDict:
    """E2E NLG (Novikova et al., 2017): train 42,061 rows (4,862 inputs), validation 4,672 (547),
    test 4,693 (630). ``data_dir``: a folder with the official CSV files; else ``hub_id``, and
    when the Hub route fails the release files ``release_url`` + file name, pinned by
    ``release_sha256`` ({file name: SHA-256})."""
    if data_dir is not None:
        root = Path(data_dir)
        missing = [f for f in E2E_FILES.values() if not (root / f).is_file()]
        if missing:
            raise UserError(f"E2E data_dir {str(root)!r} lacks {missing}; expected the official release files "
                            f"{', '.join(E2E_FILES.values())}")
        return _e2e_from_csv({split: root / name for split, name in E2E_FILES.items()},
                             {split: {"route": "data_dir", "path": str(root / name)} for split, name in E2E_FILES.items()})
    try:
        raw = load_hub_dataset(hub_id, None, "E2E", E2E_HINT)
    except (AssetMissingError, HubLoadError) as hub_error:
        files = {split: release.ReleaseFile(release_url.rstrip("/") + "/" + name, release_sha256[name])
                 for split, name in E2E_FILES.items()}
        paths = _fetch_release(files, "E2E", hub_error)
        return _e2e_from_csv(paths, {split: {"route": "release", "url": f.url, "sha256": f.sha256}
                                     for split, f in files.items()}, _hub_failed_note(hub_error))
    out = {}
    for split in SPLITS:
        ds = _hub_split(raw, split, hub_id)
        missing = [c for c in E2E_HUB_COLUMNS if c not in ds.column_names]
        if missing:
            raise UserError(f"{hub_id} {split} lacks columns {missing}; expected {list(E2E_HUB_COLUMNS)}")
        mrs, refs = ds[E2E_HUB_COLUMNS[0]], ds[E2E_HUB_COLUMNS[1]]
        out[split] = build_split(((linearize_mr(m), r) for m, r in zip(mrs, refs)), f"{hub_id}/{split}")
    return with_source(datasets.DatasetDict(out), "E2E", {split: {"route": "hub", "id": hub_id} for split in SPLITS})


def _e2e_from_csv(paths: Mapping[str, Path], sources: Mapping[str, Mapping[str, Any]],
                  note: str = "") -> datasets.DatasetDict:
    data = datasets.DatasetDict({split: build_split(_read_e2e_csv(path), str(path)) for split, path in paths.items()})
    return with_source(data, "E2E", sources, note)


def _read_e2e_csv(path: Path) -> list[tuple[str, str]]:
    """(linearised MR, reference) per row; a row without exactly the header's fields, or a file
    that ends inside a quoted text (cut short), is an error naming the file and line."""
    with named_decode_errors(path), path.open(encoding="utf-8-sig", newline="") as f:  # -sig: a BOM is dropped
        reader = csv.DictReader(f, strict=True)
        if reader.fieldnames is None or not {"mr", "ref"} <= set(reader.fieldnames):
            raise UserError(f"{path} has columns {reader.fieldnames}; expected 'mr' and 'ref'")
        pairs = []
        try:
            for row in reader:
                if None in row or None in row.values():  # more fields than the header / fewer
                    raise UserError(f"{path}:{reader.line_num}: the row does not have the header's "
                                    f"{len(reader.fieldnames)} fields {reader.fieldnames}; repair it (a text holding "
                                    "commas must be quoted)")
                try:
                    pairs.append((linearize_mr(row["mr"]), row["ref"]))
                except UserError as err:
                    raise UserError(f"{path}:{reader.line_num}: {err}") from None
        except csv.Error as err:
            raise UserError(f"{path}:{reader.line_num}: {err} (a file cut short, or an unclosed quote?)") from None
        return pairs


# ---------------------------------------------------------------------------------------------
# WebNLG
WEBNLG_FOLDER = "webnlg_challenge_2017"
WEBNLG_TEST_FILE = "test/testdata_with_lex.xml"
#: the hub test split's ``test_category`` of the full challenge test set (the other two values
#: are its unseen-category subset and the same inputs without references)
WEBNLG_HUB_TEST_CATEGORY = "testdata_with_lex"
#: the release route (module docstring): web_nlg.py's ``_URL`` (webnlg-dataset at commit
#: 587fa69, which holds ``webnlg_challenge_2017/`` under one top folder) and its
#: dataset_infos.json digest (25,499,351 bytes). Not checked against the real file here (no copy
#: of that zip was at hand); ../shared/data/webnlg holds the same 107 challenge files from mirrors.
WEBNLG_RELEASE_URL = ("https://gitlab.com/shimorina/webnlg-dataset/-/archive/587fa698bec705efbefe72a235a6019c2b9b8b6c/"
                      "webnlg-dataset-587fa698bec705efbefe72a235a6019c2b9b8b6c.zip")
WEBNLG_RELEASE_SHA256 = "d6837063d6ef2a2e05418c1511f989c85fd9fffd21f5bd04bc5b34886f24c94e"


@dataclass(frozen=True)
class WebNLGEntry:
    size: int
    category: str
    eid: str
    #: modified triples as written in the XML: ``subject | property | object``
    triples: tuple[str, ...]
    #: (comment, text) of each lexicalisation, in file order
    lexicalisations: tuple[tuple[str, str], ...]

    @property
    def eid_number(self) -> int:
        digits = re.sub(r"\D", "", self.eid)
        return int(digits) if digits else 0


def linearize_triples(triples: Sequence[str]) -> str:
    """``["s | p | o", ...]`` -> ``"s : p : o | ..."`` (microsoft/LoRA's format_converting_webnlg.py)."""
    parts = []
    for triple in triples:
        fields = [x.strip() for x in triple.split(" | ")]
        if len(fields) != 3:
            raise UserError(f"WebNLG triple {triple!r} is not 'subject | property | object'")
        parts.append(" : ".join(fields))
    if not parts:
        raise UserError("WebNLG entry without triples")
    return " | ".join(parts)


def load_webnlg(
    data_dir: str | os.PathLike | None = None,
    hub_id: str = "webnlg-challenge/web_nlg",
    config: str = WEBNLG_FOLDER,
    comments: Sequence[str] = ("good",),
    release_url: str = WEBNLG_RELEASE_URL,
    release_sha256: str = WEBNLG_RELEASE_SHA256,
) -> datasets.DatasetDict:
    """WebNLG 2017 challenge: one row per kept lexicalisation of every entry.

    ``data_dir``: the challenge folder (``train/``, ``dev/``, ``test/``) or a folder holding it
    as ``webnlg_challenge_2017/``; else ``hub_id`` (config ``config``). ``comments``: the
    lexicalisation comments kept (microsoft/LoRA: ``good`` only). When the Hub route fails:
    the release zip ``release_url``, pinned by ``release_sha256``.
    """
    keep = tuple(comments)
    note = ""
    if data_dir is not None:
        entries = _read_webnlg_dir(Path(data_dir))
        sources = {split: {"route": "data_dir", "path": str(data_dir)} for split in SPLITS}
    else:
        hint = "task.data_dir=<folder with the webnlg_challenge_2017 XML>"
        try:
            raw = load_hub_dataset(hub_id, config, "WebNLG", hint)
        except (AssetMissingError, HubLoadError) as hub_error:
            archive = release.ReleaseFile(release_url, release_sha256)
            folder = release.unpacked(_fetch_release({"all": archive}, "WebNLG", hub_error)["all"])
            tops = [p for p in folder.iterdir() if p.is_dir()]
            entries = _read_webnlg_dir(tops[0] if len(tops) == 1 else folder)
            sources = {split: {"route": "release", "url": archive.url, "sha256": archive.sha256} for split in SPLITS}
            note = _hub_failed_note(hub_error)
        else:
            entries = {split: [_hub_entry(row, hub_id) for row in _hub_split(raw, split, hub_id)
                               if split != "test" or row.get("test_category") in (None, WEBNLG_HUB_TEST_CATEGORY)]
                       for split in SPLITS}
            sources = {split: {"route": "hub", "id": hub_id, "config": config} for split in SPLITS}
    out = {}
    for split, split_entries in entries.items():
        ordered = _canonical_order(split_entries)
        pairs = [(linearize_triples(e.triples), text) for e in ordered for comment, text in e.lexicalisations
                 if comment in keep]
        dropped = sum(1 for e in ordered if not any(c in keep for c, _ in e.lexicalisations))
        if dropped:
            log.info("WebNLG %s: %d of %d entries have no %s lexicalisation and are left out",
                     split, dropped, len(ordered), "/".join(keep))
        out[split] = build_split(pairs, f"WebNLG {split}")
    return with_source(datasets.DatasetDict(out), "WebNLG", sources, note)


def _canonical_order(entries: list[WebNLGEntry]) -> list[WebNLGEntry]:
    """By entry id when ids are unique in the split, else by (triple count, category, entry id)."""
    if len({e.eid for e in entries}) == len(entries):
        return sorted(entries, key=lambda e: e.eid_number)
    return sorted(entries, key=lambda e: (e.size, e.category, e.eid_number))


def _read_webnlg_dir(root: Path) -> dict[str, list[WebNLGEntry]]:
    if (root / WEBNLG_FOLDER).is_dir():
        root = root / WEBNLG_FOLDER
    layout = f"expected <data_dir>/[{WEBNLG_FOLDER}/]{{train,dev}}/<n>triples/*.xml and {WEBNLG_TEST_FILE}"
    if not root.is_dir():
        raise UserError(f"WebNLG data_dir {str(root)!r} is not a directory; {layout}")
    files = {"train": sorted((root / "train").glob("*triples/*.xml")),
             "validation": sorted((root / "dev").glob("*triples/*.xml")),
             "test": [root / WEBNLG_TEST_FILE] if (root / WEBNLG_TEST_FILE).is_file() else []}
    empty = [split for split, paths in files.items() if not paths]
    if empty:
        raise UserError(f"WebNLG data_dir {str(root)!r} has no files for {empty}; {layout}")
    return {split: [e for path in paths for e in _parse_webnlg_xml(path)] for split, paths in files.items()}


def _parse_webnlg_xml(path: Path) -> list[WebNLGEntry]:
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise UserError(f"{path} is not valid XML ({err})") from None
    entries = []
    for entry in root.iter("entry"):
        triple_set = entry.find("modifiedtripleset")
        triples = tuple((t.text or "").strip() for t in triple_set.findall("mtriple")) if triple_set is not None else ()
        lexs = tuple((lex.get("comment", ""), "".join(lex.itertext())) for lex in entry.findall("lex"))
        entries.append(WebNLGEntry(int(entry.get("size", len(triples))), entry.get("category", ""),
                                   entry.get("eid", ""), triples, lexs))
    return entries


def _hub_entry(row: Mapping[str, Any], hub_id: str) -> WebNLGEntry:
    """A row of the hub's ``web_nlg`` schema -> an entry (nested sequences come back either as a
    dict of lists, ``datasets``' Sequence-of-struct form, or as a list of dicts)."""
    try:
        triple_sets = _column(row["modified_triple_sets"], "mtriple_set")
        lex = row["lex"]
    except KeyError as err:
        raise UserError(f"{hub_id} rows lack the column {err}; expected the web_nlg schema "
                        "(category, size, eid, modified_triple_sets, lex)") from None
    comments, texts = _column(lex, "comment"), _column(lex, "text")
    triples = tuple(triple_sets[0]) if triple_sets else ()
    return WebNLGEntry(int(row.get("size") or len(triples)), row.get("category") or "", row.get("eid") or "",
                       triples, tuple(zip(comments, texts)))


def _column(value: Any, key: str) -> list:
    if isinstance(value, Mapping):
        return list(value.get(key) or [])
    return [item[key] for item in value or []]


# ---------------------------------------------------------------------------------------------
# hub and release routes
def _fetch_release(files: Mapping[str, release.ReleaseFile], what: str, hub_error: Exception) -> dict[str, Path]:
    """Each release file, checked and cached; a failed download names the Hub route's failure too."""
    try:
        return {key: release.fetch(file, what) for key, file in files.items()}
    except release.ChecksumMismatchError:
        raise
    except AssetMissingError as err:
        raise AssetMissingError(f"{err}; before that the Hub route failed: {hub_error}") from None


def _hub_failed_note(hub_error: Exception) -> str:
    return f"SHA-256 checked; the Hub route failed ({type(hub_error).__name__})"


def _hub_split(raw: datasets.DatasetDict, split: str, hub_id: str) -> datasets.Dataset:
    aliases = {"validation": ("validation", "dev", "valid")}.get(split, (split,))
    for name in aliases:
        if name in raw:
            return raw[name]
    raise UserError(f"{hub_id} has no {split!r} split (splits: {sorted(raw)})")
