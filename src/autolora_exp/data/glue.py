"""GLUE (Wang et al., 2019): the eight tasks of the paper's NLU table, from the hub or from local files.

Two sources, one schema. ``load_glue(task)`` reads ``nyu-mll/glue`` through ``datasets``;
``load_glue(task, data_dir=...)`` parses the official GLUE files (the layout of the GLUE
zips, e.g. ``<data_dir>/RTE/train.tsv``) the way the hub's loading script did when it built
the hub data. Either way the result is a ``DatasetDict`` with ``train`` and the task's dev
splits (the GLUE test labels are hidden, so the test split is never returned) and exactly
these columns:

- the task's text columns (hub names, e.g. ``sentence1``, ``sentence2``), ``string``;
- ``label``: a ``ClassLabel`` (int64 class id, names in the hub's id order, :data:`GLUE_TASKS`),
  ``float32`` for STS-B; the names tell the pipeline how many classes the data has;
- ``idx``: ``int64``, unique within a split and stable across runs (see :func:`load_glue`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets

from autolora_exp.data.files import named_decode_errors
from autolora_exp.errors import AssetMissingError, UserError


@dataclass(frozen=True)
class GlueTask:
    """What one GLUE task looks like on the hub and in the official files.

    ``file_columns`` maps each output column (text columns, then ``label``) to its column in
    the official file: a header name, or a 0-based position for the header-less CoLA files.
    ``files`` maps each split to its file inside ``folder``.
    """

    name: str
    text_columns: tuple[str, ...]
    label_names: tuple[str, ...] | None  # None: regression (STS-B similarity score, 0..5)
    eval_splits: tuple[str, ...]
    folder: str
    files: dict[str, str]
    file_columns: dict[str, str | int] = field(default_factory=dict)
    has_header: bool = True

    @property
    def is_regression(self) -> bool:
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def splits(self) -> tuple[str, ...]:
        return ("train", *self.eval_splits)

    def features(self) -> datasets.Features:
        """The schema both sources are cast to."""
        cols = {c: datasets.Value("string") for c in self.text_columns}
        cols["label"] = (datasets.Value("float32") if self.is_regression
                         else datasets.ClassLabel(names=list(self.label_names)))
        cols["idx"] = datasets.Value("int64")
        return datasets.Features(cols)


_DEV = {"validation": "dev.tsv"}

#: The eight tasks, in the order of :data:`autolora_exp.glue_tasks.GLUE_TASK_NAMES` (a test checks it).
#: Label names are listed in the hub's id order (``label`` = position).
GLUE_TASKS: dict[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask("cola", ("sentence",), ("unacceptable", "acceptable"), ("validation",), "CoLA",
                 {"train": "train.tsv", **_DEV},
                 # header-less: source, label, original mark, sentence
                 {"sentence": 3, "label": 1}, has_header=False),
        GlueTask("sst2", ("sentence",), ("negative", "positive"), ("validation",), "SST-2",
                 {"train": "train.tsv", **_DEV}, {"sentence": "sentence", "label": "label"}),
        # MRPC's two splits both come out of msr_paraphrase_train.txt (see _read_mrpc)
        GlueTask("mrpc", ("sentence1", "sentence2"), ("not_equivalent", "equivalent"), ("validation",), "MRPC",
                 {"train": "msr_paraphrase_train.txt", "validation": "msr_paraphrase_train.txt"},
                 {"sentence1": "#1 String", "sentence2": "#2 String", "label": "Quality"}),
        GlueTask("qqp", ("question1", "question2"), ("not_duplicate", "duplicate"), ("validation",), "QQP",
                 {"train": "train.tsv", **_DEV},
                 {"question1": "question1", "question2": "question2", "label": "is_duplicate"}),
        GlueTask("stsb", ("sentence1", "sentence2"), None, ("validation",), "STS-B",
                 {"train": "train.tsv", **_DEV},
                 {"sentence1": "sentence1", "sentence2": "sentence2", "label": "score"}),
        GlueTask("mnli", ("premise", "hypothesis"), ("entailment", "neutral", "contradiction"),
                 ("validation_matched", "validation_mismatched"), "MNLI",
                 {"train": "train.tsv", "validation_matched": "dev_matched.tsv",
                  "validation_mismatched": "dev_mismatched.tsv"},
                 {"premise": "sentence1", "hypothesis": "sentence2", "label": "gold_label"}),
        GlueTask("qnli", ("question", "sentence"), ("entailment", "not_entailment"), ("validation",), "QNLI",
                 {"train": "train.tsv", **_DEV},
                 {"question": "question", "sentence": "sentence", "label": "label"}),
        GlueTask("rte", ("sentence1", "sentence2"), ("entailment", "not_entailment"), ("validation",), "RTE",
                 {"train": "train.tsv", **_DEV},
                 {"sentence1": "sentence1", "sentence2": "sentence2", "label": "label"}),
    )
}

_MRPC_DEV_IDS = "dev_ids.tsv"
#: fields per row of the header-less files (CoLA: source, label, original mark, sentence)
HEADERLESS_WIDTH = {"cola": 4}


def glue_task(task: str) -> GlueTask:
    """The :class:`GlueTask` named ``task``; UserError naming the accepted names otherwise."""
    if task not in GLUE_TASKS:
        raise UserError(f"unknown GLUE task {task!r}; accepted: {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[task]


def load_glue(task: str, data_dir: str | os.PathLike | None = None,
              hub_id: str = "nyu-mll/glue") -> datasets.DatasetDict:
    """Load one GLUE task: ``train`` plus its dev split(s), never the unlabelled test split.

    ``data_dir=None`` reads ``datasets.load_dataset(hub_id, task)`` (``hub_id`` may also be a
    local folder in the hub repository's layout). Otherwise ``data_dir`` is the folder that
    holds the official GLUE task folders (``CoLA``, ``SST-2``, ``MRPC``, ``QQP``, ``STS-B``,
    ``MNLI``, ``QNLI``, ``RTE``); a dev file that is absent there is simply left out of the
    result, while a missing folder or train file is an error.

    ``idx`` is the hub's ``idx``: the 0-based data-row number in the official file (for MRPC,
    in ``msr_paraphrase_train.txt``, so its train and validation ids interleave). Local files
    that carry GLUE's own ``index`` column (RTE, QNLI, STS-B, MNLI) use that column instead; it
    equals the row number in the complete files, and in a sample of a file (a k-shot
    ``train.tsv``) it still names the row of the complete file.
    """
    spec = glue_task(task)
    if data_dir is None:
        return _load_hub(spec, hub_id)
    return _load_local(spec, Path(data_dir))


# ---------------------------------------------------------------------------------------------
# hub
def _load_hub(spec: GlueTask, hub_id: str) -> datasets.DatasetDict:
    try:
        raw = datasets.load_dataset(hub_id, spec.name)
    except OSError as err:
        # Offline and not cached: datasets raises ConnectionError ("Couldn't reach ... on the
        # Hub"), with or without HF_DATASETS_OFFLINE; a missing local folder or repo raises
        # FileNotFoundError (DatasetNotFoundError). Both are OSError. With HF_HUB_OFFLINE=1 this
        # is immediate; without it huggingface_hub first retries the request (about 20 s).
        raise AssetMissingError(
            f"GLUE {spec.name!r} from {hub_id!r} is not in the local datasets cache and cannot be "
            f"downloaded ({type(err).__name__}); set task.data_dir=<folder with the official GLUE files> "
            f"or run the offline default `python run.py`"
        ) from err
    if "train" not in raw:
        raise UserError(f"{hub_id!r} config {spec.name!r} has no train split (splits: {list(raw)})")
    return datasets.DatasetDict({s: _conform(raw[s], spec, f"{hub_id}:{spec.name}/{s}")
                                 for s in spec.splits if s in raw})


def _conform(ds: datasets.Dataset, spec: GlueTask, where: str) -> datasets.Dataset:
    """Keep the text columns, ``label`` and ``idx`` and cast them to the shared schema."""
    needed = [*spec.text_columns, "label"]
    missing = [c for c in needed if c not in ds.column_names]
    if missing:
        raise UserError(f"{where} lacks columns {missing}; expected {needed + ['idx']}")
    if "idx" not in ds.column_names:  # a mirror without idx: the row number stands in for it
        ds = ds.add_column("idx", list(range(len(ds))))
    ds = ds.select_columns([*needed, "idx"])
    # int32 idx -> int64 and the hub's ClassLabel -> ours (same ids): the storage is unchanged,
    # the schema matches the local path's exactly.
    return ds.cast(spec.features())


# ---------------------------------------------------------------------------------------------
# local official files
def _layout(spec: GlueTask) -> str:
    files = sorted(set(spec.files.values()) | ({_MRPC_DEV_IDS} if spec.name == "mrpc" else set()))
    return f"expected the official GLUE layout <data_dir>/{spec.folder}/{{{','.join(files)}}}"


def _load_local(spec: GlueTask, root: Path) -> datasets.DatasetDict:
    if not root.is_dir():
        raise UserError(f"task.data_dir={str(root)!r} is not a directory; {_layout(spec)}")
    folder = root / spec.folder
    if not folder.is_dir():
        raise UserError(f"GLUE folder {str(folder)!r} does not exist; {_layout(spec)}")
    train_file = folder / spec.files["train"]
    if not train_file.is_file():
        raise UserError(f"GLUE train file {str(train_file)!r} does not exist; {_layout(spec)}")

    if spec.name == "mrpc":
        columns = _read_mrpc(spec, folder)
    else:
        columns = {s: _read_split(spec, folder / spec.files[s])
                   for s in spec.splits if (folder / spec.files[s]).is_file()}
    features = spec.features()
    return datasets.DatasetDict({s: datasets.Dataset.from_dict(c, features=features) for s, c in columns.items()})


def _rows(path: Path) -> Iterator[tuple[int, list[str]]]:
    """(line number, fields) of each row of an official GLUE file: tab-separated, no quoting,
    optional UTF-8 BOM. Empty lines hold nothing and are passed over."""
    with named_decode_errors(path), path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        for row in reader:
            if row:
                yield reader.line_num, row


def _check_width(path: Path, line: int, row: list[str], width: int) -> None:
    """Every row of an official file has exactly the header's fields: a newline or tab inside a
    text, or a file cut short, shows as a row with fewer or more. Such a row is an error, never
    skipped: skipping lost 249 of RTE's 2,490 training rows without a word when a line break
    sat inside 10% of them."""
    if len(row) != width:
        raise UserError(f"{path}:{line}: {len(row)} tab-separated fields where the file has {width}; "
                        "a line break or tab inside a text, or a file cut short? Repair the row")


def _new_columns(spec: GlueTask) -> dict[str, list]:
    return {c: [] for c in (*spec.text_columns, "label", "idx")}


def _read_split(spec: GlueTask, path: Path) -> dict[str, list]:
    rows = _rows(path)
    if spec.has_header:
        header = next(rows, (0, []))[1]
        position = {name: i for i, name in enumerate(header)}
        wanted = [c for c in spec.file_columns.values() if c not in position]
        if wanted:
            raise UserError(f"{path} lacks columns {wanted}; its header is {header}")
        cols = {out: position[src] for out, src in spec.file_columns.items()}
        index_col = position.get("index")
        width = len(header)
    else:
        cols = dict(spec.file_columns)  # positions
        index_col = None
        width = HEADERLESS_WIDTH[spec.name]
    out = _new_columns(spec)
    for n, (line, row) in enumerate(rows):
        _check_width(path, line, row, width)
        for c in spec.text_columns:
            out[c].append(row[cols[c]])
        out["label"].append(_parse_label(spec, row[cols["label"]], path, line))
        out["idx"].append(int(row[index_col]) if index_col is not None else n)
    return out


def _parse_label(spec: GlueTask, value: str, path: Path, line: int) -> int | float:
    """A class name (RTE, QNLI, MNLI) or class id (the others) -> id; a score for STS-B."""
    try:
        if spec.label_names is None:
            return float(value)
        if value in spec.label_names:
            return spec.label_names.index(value)
        label = int(value)
        if 0 <= label < len(spec.label_names):
            return label
    except ValueError:
        pass
    accepted = "a number" if spec.label_names is None else f"{list(spec.label_names)} or 0..{spec.num_labels - 1}"
    raise UserError(f"{path}:{line}: label {value!r} is not one of {accepted}")


def _read_mrpc(spec: GlueTask, folder: Path) -> dict[str, dict[str, list]]:
    """MRPC as GLUE and the hub build it: dev = the rows of msr_paraphrase_train.txt whose
    (#1 ID, #2 ID) pair is listed in dev_ids.tsv (408), train = all other rows (3,668)."""
    ids_file = folder / _MRPC_DEV_IDS
    if not ids_file.is_file():
        # Without the dev ids the train split would silently contain the dev set.
        raise UserError(f"MRPC dev id file {str(ids_file)!r} does not exist; {_layout(spec)}")
    dev_ids = set()
    for line, r in _rows(ids_file):
        _check_width(ids_file, line, r, 2)
        dev_ids.add((r[0], r[1]))
    path = folder / spec.files["train"]
    rows = _rows(path)
    header = next(rows, (0, []))[1]
    position = {name: i for i, name in enumerate(header)}
    need = ["#1 ID", "#2 ID", *spec.file_columns.values()]
    if any(c not in position for c in need):
        raise UserError(f"{path} lacks columns {[c for c in need if c not in position]}; its header is {header}")
    out = {"train": _new_columns(spec), "validation": _new_columns(spec)}
    for n, (line, row) in enumerate(rows):
        _check_width(path, line, row, len(header))
        split = "validation" if (row[position["#1 ID"]], row[position["#2 ID"]]) in dev_ids else "train"
        cols = out[split]
        for c in spec.text_columns:
            cols[c].append(row[position[spec.file_columns[c]]])
        cols["label"].append(_parse_label(spec, row[position["Quality"]], path, line))
        cols["idx"].append(n)
    return out
