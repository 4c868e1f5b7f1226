"""GLUE loaders: the local official files in ../shared/data/glue, the hub path (exercised on a local
folder in the hub repository's parquet layout), and the errors a user can hit."""

from __future__ import annotations

import csv
import time
from pathlib import Path

import datasets
import huggingface_hub.constants
import pytest

from autolora_exp.data.glue import GLUE_TASKS, load_glue
from autolora_exp.errors import AssetMissingError, UserError

GLUE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"
needs_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"official GLUE files not found at {GLUE_DIR}")

# Rows per split of the files in ../shared/data/glue (SOURCE.md there). QNLI, MNLI and QQP train
# files are k-shot samples; MNLI and QQP dev files are absent, so those splits are not returned.
EXPECTED_ROWS = {
    "cola": {"train": 8551, "validation": 1043},
    "sst2": {"train": 67349, "validation": 872},
    "mrpc": {"train": 3668, "validation": 408},
    "stsb": {"train": 5749, "validation": 1500},
    "rte": {"train": 2490, "validation": 277},
    "qnli": {"train": 32, "validation": 5463},
    "mnli": {"train": 48},
    "qqp": {"train": 32},
}


@pytest.fixture(scope="module")
def local() -> dict[str, datasets.DatasetDict]:
    """Every task read once from the official files (SST-2 train alone is 67k rows)."""
    if not GLUE_DIR.is_dir():
        pytest.skip(f"official GLUE files not found at {GLUE_DIR}")
    return {task: load_glue(task, data_dir=str(GLUE_DIR)) for task in GLUE_TASKS}


@pytest.fixture
def offline(monkeypatch, tmp_path):
    """Hub offline and a private datasets cache. The constants are read at import time, so they
    are patched as well as the environment."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-datasets-cache")


def _read_tsv(path: Path, header: bool = True) -> list[list[str]]:
    with path.open(encoding="utf-8-sig", newline="") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return rows[1:] if header else rows


# ---------------------------------------------------------------------------------------------
# local official files
@needs_glue
@pytest.mark.parametrize("task", sorted(EXPECTED_ROWS))
def test_local_splits_rows_labels_schema(local, task):
    spec = GLUE_TASKS[task]
    ds = local[task]
    assert list(ds) == list(EXPECTED_ROWS[task])  # train first, never a test split
    assert {s: len(d) for s, d in ds.items()} == EXPECTED_ROWS[task]
    for split, d in ds.items():
        assert d.features == spec.features()
        assert d.column_names == [*spec.text_columns, "label", "idx"]
        assert len(set(d["idx"])) == len(d), f"{task}/{split}: idx not unique"
        labels = d["label"]
        if spec.is_regression:
            assert 0.0 <= min(labels) and max(labels) <= 5.0
            assert any(x != round(x) for x in labels)  # real similarity scores, not class ids
        else:
            assert set(labels) == set(range(spec.num_labels)), f"{task}/{split}: labels {set(labels)}"
        for col in spec.text_columns:
            assert all(isinstance(t, str) and t for t in d[col][:200])


@needs_glue
def test_every_train_and_dev_file_present_is_read(local):
    """Each data file of a task folder is read into a split, or is an unlabelled test file, or is
    MRPC's GLUE-format dev.tsv (redundant with msr_paraphrase_train.txt + dev_ids.tsv; compared
    row by row in test_mrpc_split_is_msr_train_minus_dev_ids)."""
    for task, spec in GLUE_TASKS.items():
        folder = GLUE_DIR / spec.folder
        present = {p.name for p in folder.iterdir() if p.suffix == ".tsv" or p.name.startswith("msr_paraphrase")}
        read = {spec.files[s] for s in local[task]} | ({"dev_ids.tsv"} if task == "mrpc" else set())
        not_read = {"test.tsv", "msr_paraphrase_test.txt"} | ({"dev.tsv"} if task == "mrpc" else set())
        assert read <= present
        assert present - read <= not_read, f"{task}: files not read: {present - read - not_read}"


@needs_glue
def test_rows_match_the_files(local):
    """Spot checks against the raw files: text, label mapping, label ids in the hub's order."""
    rte = local["rte"]["train"][0]
    assert rte["sentence1"] == "No Weapons of Mass Destruction Found in Iraq Yet."
    assert rte["label"] == 1  # not_entailment = 1
    assert local["rte"]["validation"][1]["label"] == 0  # entailment = 0
    cola = local["cola"]["train"][0]
    assert cola["sentence"] == "Our friends won't buy this analysis, let alone the next one we propose."
    assert cola["label"] == 1 and cola["idx"] == 0
    sst = local["sst2"]["train"][0]
    assert sst == {"sentence": "hide new secretions from the parental units ", "label": 0, "idx": 0}
    mnli = local["mnli"]["train"][0]
    assert (mnli["premise"], mnli["hypothesis"], mnli["label"]) == ("That's all right.", "That's fine.", 0)
    assert mnli["idx"] == 155219  # GLUE's own index column: the row of the complete train file
    stsb = local["stsb"]["train"][:2]
    assert stsb["label"] == [5.0, pytest.approx(3.8)]
    qqp = local["qqp"]["train"][0]
    assert qqp["question1"] == "Why do some people think that having a baby is a blessing?" and qqp["label"] == 1

    # Every file's label column, mapped through the hub's label names, gives the loaded ids.
    for task, split, name in [("rte", "train", "train.tsv"), ("qnli", "validation", "dev.tsv"),
                              ("mnli", "train", "train.tsv")]:
        spec = GLUE_TASKS[task]
        rows = _read_tsv(GLUE_DIR / spec.folder / name)
        assert local[task][split]["label"] == [spec.label_names.index(r[-1]) for r in rows]


@needs_glue
def test_idx_is_the_row_of_the_official_file(local):
    # complete files: GLUE's index column equals the row number, as the hub's idx
    for task, split in [("rte", "train"), ("rte", "validation"), ("stsb", "train"), ("stsb", "validation"),
                        ("qnli", "validation"), ("cola", "validation"), ("sst2", "validation")]:
        assert local[task][split]["idx"] == list(range(len(local[task][split]))), (task, split)
    # QNLI's k-shot train sample keeps the row numbers of the complete file
    rows = _read_tsv(GLUE_DIR / "QNLI" / "train.tsv")
    assert local["qnli"]["train"]["idx"] == [int(r[0]) for r in rows]


@needs_glue
def test_mrpc_split_is_msr_train_minus_dev_ids(local):
    mrpc = local["mrpc"]
    tr, dev = set(mrpc["train"]["idx"]), set(mrpc["validation"]["idx"])
    assert not tr & dev and tr | dev == set(range(4076))  # rows of msr_paraphrase_train.txt
    assert mrpc["validation"]["idx"][:3] == [9, 18, 25]  # ids interleave, as on the hub
    # The GLUE-format dev.tsv (same BOM, same columns) holds exactly the validation rows, in order.
    glue_dev = _read_tsv(GLUE_DIR / "MRPC" / "dev.tsv")
    v = mrpc["validation"]
    assert [(r[3], r[4], int(r[0])) for r in glue_dev] == list(zip(v["sentence1"], v["sentence2"], v["label"]))
    # the BOM must not leak into the first text or label
    assert not mrpc["train"][0]["sentence1"].startswith("\ufeff")


# ---------------------------------------------------------------------------------------------
# hub path, on a folder in the hub repository's layout
def _write_hub_layout(root: Path, task: str, local_ds: datasets.DatasetDict) -> None:
    """The nyu-mll/glue repository's layout: <config>/<split>-00000-of-00001.parquet with the hub's
    features (ClassLabel label, int32 idx) and a README.md whose YAML maps configs to files."""
    spec = GLUE_TASKS[task]
    feats = {c: datasets.Value("string") for c in spec.text_columns}
    feats["label"] = (datasets.Value("float32") if spec.is_regression
                      else datasets.ClassLabel(names=list(spec.label_names)))
    feats["idx"] = datasets.Value("int32")
    hub_features = datasets.Features(feats)
    splits = {s: d.to_dict() for s, d in local_ds.items()}
    # the hub also has the unlabelled test split (label -1): the loader must drop it
    splits["test"] = {**{c: ["a test sentence"] * 5 for c in spec.text_columns},
                      "label": [-1] * 5, "idx": list(range(5))}
    (root / task).mkdir(parents=True)
    lines = ["---", "configs:", f"- config_name: {task}", "  data_files:"]
    for split, columns in splits.items():
        datasets.Dataset.from_dict(columns, features=hub_features).to_parquet(
            str(root / task / f"{split}-00000-of-00001.parquet"))
        lines += [f"  - split: {split}", f"    path: {task}/{split}-*"]
    (root / "README.md").write_text("\n".join([*lines, "---", "", "# GLUE (test copy)", ""]))


@needs_glue
@pytest.mark.parametrize("task", ["rte", "stsb", "cola"])
def test_hub_layout_load_equals_local_load(local, offline, tmp_path, task):
    hub_dir = tmp_path / "glue-hub"
    _write_hub_layout(hub_dir, task, local[task])
    hub = load_glue(task, hub_id=str(hub_dir))
    assert list(hub) == list(local[task])  # train + validation, test dropped
    for split in hub:
        assert hub[split].features == local[task][split].features
        assert hub[split].to_dict() == local[task][split].to_dict()


def test_uncached_hub_dataset_fails_fast_with_one_line(offline):
    start = time.monotonic()
    with pytest.raises(AssetMissingError) as err:
        load_glue("rte", hub_id="autolora-exp-tests/no-such-glue")
    assert time.monotonic() - start < 5.0
    message = str(err.value)
    assert "\n" not in message
    assert "autolora-exp-tests/no-such-glue" in message and "task.data_dir=" in message and "python run.py" in message


# ---------------------------------------------------------------------------------------------
# errors
def test_the_loaders_specs_follow_the_one_list_of_the_glue_tasks():
    from autolora_exp.glue_tasks import GLUE_TASK_NAMES

    assert tuple(GLUE_TASKS) == GLUE_TASK_NAMES


def test_unknown_task_names_the_accepted_ones():
    with pytest.raises(UserError, match=r"'wnli'.*cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte"):
        load_glue("wnli", data_dir="/nonexistent")


def test_missing_data_dir(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(UserError) as err:
        load_glue("rte", data_dir=str(missing))
    assert str(missing) in str(err.value) and "RTE/" in str(err.value) and "\n" not in str(err.value)


def test_missing_task_folder_and_train_file(tmp_path):
    with pytest.raises(UserError, match=r"RTE.*does not exist.*official GLUE layout"):
        load_glue("rte", data_dir=str(tmp_path))
    (tmp_path / "RTE").mkdir()
    (tmp_path / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n")
    with pytest.raises(UserError, match=r"train\.tsv.*does not exist"):
        load_glue("rte", data_dir=str(tmp_path))


def test_absent_dev_file_is_left_out_and_bad_label_is_reported(tmp_path):
    (tmp_path / "RTE").mkdir()
    train = tmp_path / "RTE" / "train.tsv"
    train.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tnot_entailment\n1\tc\td\tentailment\n")
    ds = load_glue("rte", data_dir=tmp_path)
    assert list(ds) == ["train"] and ds["train"]["label"] == [1, 0]
    train.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tcontradiction\n")
    with pytest.raises(UserError, match=r"train.tsv:2: label 'contradiction'"):
        load_glue("rte", data_dir=tmp_path)


def test_mrpc_without_dev_ids_is_an_error(tmp_path):
    (tmp_path / "MRPC").mkdir()
    (tmp_path / "MRPC" / "msr_paraphrase_train.txt").write_text(
        "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t1\t2\ta\tb\n", encoding="utf-8")
    with pytest.raises(UserError, match="dev_ids.tsv"):
        load_glue("mrpc", data_dir=tmp_path)
