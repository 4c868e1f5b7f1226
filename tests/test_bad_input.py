"""Bad input, as a hostile or careless user gives it: nonsense config values, configs that do not
fit the data, broken data files. Each is one clear error (key or file and line named, what is
accepted) raised before the first training step, or, for what cannot be refused, a warning.

The broken files are built from the real ones in ../shared/data (temporary copies)."""

from __future__ import annotations

import json
import os
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from autolora_exp.errors import UserError
from autolora_exp.pipeline import load_task_data, run
from conftest import REPO, SHARED_DATA, compose

TINY = ["debug=default", "model=tiny-roberta", "method=lora"]


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "run.py", *args], cwd=REPO, capture_output=True, text=True, timeout=300)


def failed_phase(out: Path) -> str:
    return json.loads((out / "failed.json").read_text())["phase"]


# ---- config values: refused before anything loads ----------------------------------------------
# (that every shipped option of every config group passes the rules: tests/test_config.py)

BAD_VALUES = [
    # (overrides, the message's start, what it accepts)
    (["method.lr=-1e-4"], "method.lr=-0.0001 is not accepted", "a number > 0"),
    (["method.lr=nan"], "method.lr=nan", "a number > 0"),
    (["method.lr=0"], "method.lr=0.0", "a number > 0"),
    (["train.weight_decay=-0.1"], "train.weight_decay=-0.1", "a number >= 0"),
    (["train.warmup_ratio=-1"], "train.warmup_ratio=-1.0", "a number in [0, 1]"),
    (["train.warmup_ratio=1.5"], "train.warmup_ratio=1.5", "a number in [0, 1]"),
    (["train.max_grad_norm=-1"], "train.max_grad_norm=-1.0", "a number >= 0"),
    (["method.lora_dropout=2"], "method.lora_dropout=2.0", "a number in [0, 1)"),
    (["method.lora_alpha=0"], "method.lora_alpha=0.0", "a number > 0"),
    (["method.r=0"], "method.r=0", "an integer >= 1"),
    (["train.batch_size=0"], "train.batch_size=0", "an integer >= 1"),
    (["train.eval_batch_size=0"], "train.eval_batch_size=0", "an integer >= 1"),
    (["train.epochs=0"], "train.epochs=0", "an integer >= 1"),
    (["train.max_steps=0"], "train.max_steps=0", "null or an integer >= 1"),
    (["train.num_workers=-1"], "train.num_workers=-1", "an integer >= 0"),
    (["train.checkpoint_every=-5"], "train.checkpoint_every=-5", "an integer >= 0"),
    (["train.precision=fp8"], "train.precision='fp8'", "one of fp32, bf16, fp16"),
    (["train.log_every=0"], "train.log_every=0", "an integer >= 1"),
    (["task.max_length=1"], "task.max_length=1", "an integer >= 2"),
    (["task.stride=-1"], "task.stride=-1", "an integer >= 0"),
    (["task.max_train_samples=0"], "task.max_train_samples=0", "null or an integer >= 1"),
    (["task.max_eval_samples=-3"], "task.max_eval_samples=-3", "null or an integer >= 1"),
    (["task.eval_splits=[]"], "task.eval_splits=[]", "a non-empty list"),
    (["task.kind=ranking"], "task.kind='ranking'", "one of classification, regression"),
    (["task.num_labels=0"], "task.num_labels=0", "an integer >= 1"),
    (["task.num_labels=1"], "task.num_labels=1 is not accepted with task.kind=classification", "kind=regression"),
    (["task=glue/stsb", "task.num_labels=2"], "task.num_labels=2 is not accepted with task.kind=regression", "use 1"),
    (["seed=-5"], "seed=-5", "an integer in [0, 4294967295]"),
    (["task.eval_splits=[train]"], "task.eval_splits=['train'], task.test_split='test'", "cannot be evaluated"),
    (["task.eval_splits=[validation,test]"], "task.test_split='test' is also in task.eval_splits",
     "selected on the test set"),
    (["logger.mode=loud"], "logger.mode='loud'", "one of online, offline, disabled"),
    (["method=lora_grid", "method.ranks=[]"], "method.ranks=[]",
     "a non-empty list of distinct values, each item an integer >= 1"),
    (["model.target_modules=[]"], "model.target_modules=[]", "a non-empty list"),
    (["task.text_fields=[a,b,c]"], "task.text_fields=['a', 'b', 'c']", "a list of 1 to 2 items"),
    (["method=lora_grid", "method.ranks=[4,4]"], "method.ranks=[4, 4]", "distinct"),
    (["method=lora_grid", "method.ranks=[0,2]"], "method.ranks=[0, 2]", "each item an integer >= 1"),
    (["method=adalora", "method.beta1=1"], "method.beta1=1.0", "a number in (0, 1)"),
    (["method=adalora", "method.tinit=-0.1"], "method.tinit=-0.1", "a number >= 0"),
    (["method=adalora", "method.total_step=0"], "method.total_step=0", "null or an integer >= 1"),
    (["method=adapter", "method.bottleneck=0"], "method.bottleneck=0", "an integer >= 1"),
    (["method=adapter", "method.nonlinearity=swish"], "method.nonlinearity='swish'", "one of gelu, relu, tanh, silu"),
    (["method=autolora", "method.scaling=linear"], "method.scaling='linear'", "one of per_layer, fixed"),
    (["method=autolora", "method.search.k=0"], "method.search.k=0", "an integer >= 1"),
    (["method=autolora", "method.search.gate=sofmax"], "method.search.gate='sofmax'", "one of softmax, none, sigmoid"),
    (["method=autolora", "method.search.lr_selection=-1"], "method.search.lr_selection=-1.0", "a number > 0"),
    (["method=autolora", "method.search.eta=-1"], "method.search.eta=-1.0", "null or a number >= 0"),
    (["method=autolora", "method.search.selection_betas=[0.9]"], "method.search.selection_betas=[0.9]",
     "a 2-item list, each item a number in [0, 1)"),
    (["method=autolora", "method.search.log_every=0"], "method.search.log_every=0", "an integer >= 1"),
    (["method=autolora", "method.search.epochs=0", "train.max_steps=null"], "method.search.epochs=0",
     "0 only with method.search.max_steps"),
    (["method=autolora", "method.search.lookahead=betty", "method.search.hypergrad=exact"],
     "method.search.lookahead='betty' works with hypergrad='darts' only", "darts"),
    (["task.generation.num_beams=0"], "task.generation.num_beams=0", "an integer >= 1"),
    (["task.generation.max_eval_inputs=0"], "task.generation.max_eval_inputs=0", "null or an integer >= 1"),
    # an append forces an unknown key past Hydra; the run would ignore it while recording it
    (["+foo=1"], "foo=1 is not a key of the config", "the keys at the top level are: task, model, method"),
    (["+train.epoch=3"], "train.epoch=3 is not a key of the config", "the keys at train are: epochs,"),
    (["method=autolora", "+method.search.epoch=3"], "method.search.epoch=3 is not a key of the config",
     "the keys at method.search are: k, gate,"),
]


@pytest.mark.parametrize("overrides,message,accepted", BAD_VALUES, ids=[" ".join(c[0]) for c in BAD_VALUES])
def test_nonsense_value_is_refused_before_anything_loads(overrides, message, accepted, tmp_path, monkeypatch):
    import autolora_exp.pipeline as pipeline

    def must_not_load(*args, **kwargs):
        raise AssertionError("data loaded although the config is invalid")

    monkeypatch.setattr(pipeline, "load_task_data", must_not_load)
    out = tmp_path / "run"
    with pytest.raises(UserError) as err:
        run(compose([*TINY, *overrides], out))
    text = str(err.value)
    assert text.startswith(message) and accepted in text and "\n" not in text, text
    assert failed_phase(out) == "config"


def test_config_error_exits_2_with_one_line(tmp_path):
    proc = run_cli(*TINY, "train.max_steps=0", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [
        "error: train.max_steps=0 is not accepted; use null or an integer >= 1"]


def test_user_error_inside_a_methods_constructor_exits_2_with_one_line(tmp_path):
    """AdaLoRA's own rule (target_r < init_r) is raised inside Hydra's instantiate: still one
    line and exit 2, not Hydra's 'Error in call to target' banner with exit 1."""
    proc = run_cli(*TINY, "method=adalora", "method.target_r=8", f"hydra.run.dir={tmp_path}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: method.target_r=8, method.init_r=6"), lines
    assert "InstantiationException" not in proc.stderr and "Error in call to target" not in proc.stderr


# ---- config against the data: refused before the first training step --------------------------

@pytest.fixture
def rte() -> list[str]:
    if not SHARED_DATA.is_dir():
        pytest.skip("../shared/data not found")
    return [*TINY, "task=glue/rte", f"task.data_dir={SHARED_DATA / 'glue'}"]


@pytest.mark.parametrize("overrides,needle", [
    (["task.num_labels=5"], "task.num_labels=5 but the data has 2 classes ['entailment', 'not_entailment']"),
    (["task.primary_metric=f1"], "task.primary_metric='f1' is not reported for task 'glue/rte'; use one of accuracy"),
    (["task.max_length=4"], "task.max_length=4 leaves no room for text: the tokenizer adds 3 special tokens to a pair"),
    (["task.kind=regression"], "task.num_labels=2 is not accepted with task.kind=regression"),
    (["task.kind=regression", "task.num_labels=1"], "its labels are classes"),
    (["task.text_fields=[sentence1,premise]"], "task.text_fields ['premise'] not in the data columns"),
    (["task.max_length=1000"], "task.max_length=1000 exceeds the 512 positions of the model's tokenizer"),
], ids=["num_labels_too_many", "primary_metric", "max_length", "regression_num_labels", "regression_on_classes",
        "text_field", "max_length_over_positions"])
def test_config_that_does_not_fit_the_data_fails_before_training(rte, overrides, needle, tmp_path, monkeypatch):
    import autolora_exp.pipeline as pipeline

    def must_not_train(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(pipeline, "fit", must_not_train)
    out = tmp_path / "run"
    with pytest.raises(UserError) as err:
        run(compose([*rte, *overrides], out))
    assert needle in str(err.value), str(err.value)
    assert failed_phase(out) in ("config", "data")


def test_unknown_attention_implementation_is_one_line(make_cfg, monkeypatch):
    import autolora_exp.pipeline as pipeline

    monkeypatch.setattr(pipeline, "fit", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(UserError, match=r"model.attn_implementation='fast' is not accepted: .*sdpa") as err:
        run(make_cfg(*TINY, "model.attn_implementation=fast"))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("override,key", [("method._target_=nope.Nope", "method"),
                                          ("task.metric._target_=autolora_exp.metrics.nope", "task.metric")])
def test_target_that_cannot_be_imported_is_one_line(make_cfg, override, key):
    target = override.split("=")[1]
    with pytest.raises(UserError, match=rf"{key}._target_='{target}' cannot be imported"):
        run(make_cfg(*TINY, override))


def test_fewer_declared_labels_than_the_data_has(make_cfg):
    # BBC News has 5 classes: 3 declared is refused by count, whatever labels the subsample holds
    with pytest.raises(UserError, match=r"task.num_labels=3 but the data has 5 classes"):
        run(make_cfg(*TINY, "task.num_labels=3"))


def test_header_only_dev_file_fails_before_training(rte, tmp_path):
    glue = copy_of(tmp_path, "glue/RTE").parent
    dev = glue / "RTE" / "dev.tsv"
    dev.write_text(dev.read_text(encoding="utf-8").splitlines()[0] + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"split\(s\) \['validation'\] have no rows in task.data_dir="):
        run(compose([*rte, f"task.data_dir={glue}"], tmp_path / "run"))


# ---- broken data files: named, with the line ----------------------------------------------------

def copy_of(tmp_path: Path, relative: str) -> Path:
    """A writable copy of ../shared/data/<relative> (a file or a folder) under tmp_path."""
    source = SHARED_DATA / relative
    if not source.exists():
        pytest.skip(f"{source} not found")
    target = tmp_path / relative
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
    for path in [target, *target.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    return target


def test_glue_stray_newlines_in_ten_percent_of_rows_are_an_error_not_lost_rows(tmp_path):
    """The case seen: a line break inside 10% of RTE's rows lost 249 of 2,490 rows silently."""
    from autolora_exp.data.glue import load_glue

    train = copy_of(tmp_path, "glue/RTE/train.tsv")
    copy_of(tmp_path, "glue/RTE/dev.tsv")
    lines = train.read_text(encoding="utf-8").splitlines()
    broken = [line.replace(" ", "\n", 1) if n % 10 == 5 else line for n, line in enumerate(lines)]
    train.write_text("\n".join(broken) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"RTE/train.tsv:6: 2 tab-separated fields where the file has 4"):
        load_glue("rte", data_dir=tmp_path / "glue")


def test_glue_file_cut_mid_row_is_an_error(tmp_path):
    from autolora_exp.data.glue import load_glue

    train = copy_of(tmp_path, "glue/RTE/train.tsv")
    data = train.read_bytes()
    last_row = data.rstrip(b"\n").rfind(b"\n") + 1
    train.write_bytes(data[:last_row + 40])  # index and part of sentence1 of the last row
    line = data[:last_row].count(b"\n") + 1
    with pytest.raises(UserError, match=rf"train.tsv:{line}: 2 tab-separated fields where the file has 4"):
        load_glue("rte", data_dir=tmp_path / "glue")


def test_glue_stray_tab_and_empty_label_are_errors(tmp_path):
    from autolora_exp.data.glue import load_glue

    train = copy_of(tmp_path, "glue/SST-2/train.tsv")
    lines = train.read_text(encoding="utf-8").splitlines()
    train.write_text("\n".join(lines[:3] + [lines[3].replace(" ", "\t", 1)] + lines[4:]) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"SST-2/train.tsv:4: 3 tab-separated fields where the file has 2"):
        load_glue("sst2", data_dir=tmp_path / "glue")
    sentence, _ = lines[3].split("\t")
    train.write_text("\n".join(lines[:3] + [sentence + "\t"] + lines[4:]) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"SST-2/train.tsv:4: label '' is not one of"):
        load_glue("sst2", data_dir=tmp_path / "glue")


def test_headerless_cola_row_with_missing_field_is_an_error(tmp_path):
    from autolora_exp.data.glue import load_glue

    train = copy_of(tmp_path, "glue/CoLA/train.tsv")
    lines = train.read_text(encoding="utf-8").splitlines()
    lines[9] = "\t".join(lines[9].split("\t")[:3])
    train.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"CoLA/train.tsv:10: 3 tab-separated fields where the file has 4"):
        load_glue("cola", data_dir=tmp_path / "glue")


@pytest.mark.parametrize("relative,line", [("glue/RTE/train.tsv", 7), ("jnlpba/mtl/devel.tsv", 7),
                                           ("e2e/devset.csv", 7)])
def test_non_utf8_byte_names_the_file_and_line(tmp_path, relative, line):
    from autolora_exp.data.glue import load_glue
    from autolora_exp.data.ner import read_conll
    from autolora_exp.data.nlg import _read_e2e_csv

    path = copy_of(tmp_path, relative)
    rows = path.read_bytes().split(b"\n")
    rows[line - 1] = rows[line - 1][:3] + b"\xff" + rows[line - 1][3:]
    path.write_bytes(b"\n".join(rows))
    read = {"glue": lambda: load_glue("rte", data_dir=tmp_path / "glue"), "jnlpba": lambda: list(read_conll(path)),
            "e2e": lambda: _read_e2e_csv(path)}[relative.split("/")[0]]
    with pytest.raises(UserError, match=rf"{Path(relative).name}:{line}: byte 0xff is not valid utf-8"):
        read()


def test_e2e_file_cut_inside_a_quoted_text_is_an_error(tmp_path):
    from autolora_exp.data.nlg import _read_e2e_csv

    dev = copy_of(tmp_path, "e2e/devset.csv")
    data = dev.read_bytes()
    dev.write_bytes(data[:data.rfind(b'","') + 20])  # inside the last reference
    with pytest.raises(UserError, match=r"devset.csv:\d+: unexpected end of data"):
        _read_e2e_csv(dev)


def test_e2e_row_with_a_missing_or_extra_field_is_an_error(tmp_path):
    from autolora_exp.data.nlg import _read_e2e_csv

    dev = copy_of(tmp_path, "e2e/devset.csv")
    lines = dev.read_text(encoding="utf-8").splitlines()
    mr = lines[4][:lines[4].index('",') + 1]  # the quoted MR alone, its reference lost
    dev.write_text("\n".join(lines[:4] + [mr] + lines[5:]) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"devset.csv:5: the row does not have the header's 2 fields"):
        _read_e2e_csv(dev)
    dev.write_text("\n".join(lines[:4] + [lines[4] + ',"extra"'] + lines[5:]) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match=r"devset.csv:5: the row does not have the header's 2 fields"):
        _read_e2e_csv(dev)


def test_ner_line_cut_short_is_an_error(tmp_path):
    from autolora_exp.data.ner import read_conll

    dev = copy_of(tmp_path, "jnlpba/mtl/devel.tsv")
    data = dev.read_bytes()
    dev.write_bytes(data[:data.rfind(b"\t")])  # the last line loses its tab and tag
    with pytest.raises(UserError, match=r"devel.tsv:\d+: expected 'token<TAB>tag'"):
        list(read_conll(dev))


def test_webnlg_xml_cut_short_names_the_file(tmp_path):
    from autolora_exp.data.nlg import _parse_webnlg_xml

    test = copy_of(tmp_path, "webnlg/webnlg_challenge_2017/test/testdata_with_lex.xml")
    test.write_bytes(test.read_bytes()[:5000])
    with pytest.raises(UserError, match=r"testdata_with_lex.xml is not valid XML"):
        _parse_webnlg_xml(test)


# ---- generation: subsampling by input, empty outputs -------------------------------------------

def test_nlg_eval_subsample_keeps_whole_inputs_with_all_their_references():
    if not (SHARED_DATA / "e2e").is_dir():
        pytest.skip("../shared/data/e2e not found")
    from collections import Counter

    from autolora_exp.data.split import sample_groups

    full = load_task_data(compose(["task=e2e", f"task.data_dir={SHARED_DATA / 'e2e'}"]).task, 0)
    data = load_task_data(compose(["task=e2e", f"task.data_dir={SHARED_DATA / 'e2e'}",
                                   "task.max_eval_samples=20"]).task, 0)
    for split in ("validation", "test"):
        kept, whole = Counter(data[split]["group"]), Counter(full[split]["group"])
        assert len(kept) == 20 and all(kept[g] == whole[g] for g in kept)
        assert sum(kept.values()) > 20  # E2E inputs have several references each
    assert len(data["train"]) == len(full["train"])  # max_train_samples unset: training rows untouched
    groups = full["validation"]["group"]
    assert list(sample_groups(groups, 20, 0)) == list(sample_groups(groups, 20, 0))  # seeded
    assert list(sample_groups(groups, 20, 1)) != list(sample_groups(groups, 20, 0))
    assert len(sample_groups(groups, 10_000, 0)) == len(groups)


def test_all_empty_generations_warn_and_are_counted(tmp_path, monkeypatch, caplog):
    if not (SHARED_DATA / "e2e").is_dir():
        pytest.skip("../shared/data/e2e not found")
    import autolora_exp.task_types.generation as generation

    monkeypatch.setattr(generation, "generate_texts", lambda model, tokenizer, prompts, *a, **k: [""] * len(prompts))
    overrides = ["debug=default", "task=e2e", f"task.data_dir={SHARED_DATA / 'e2e'}", "model=tiny-gpt2",
                 "task.max_length=64", "task.max_eval_samples=4", "train.max_steps=1", "train.epochs=1",
                 "task.metric._target_=test_nlg_pipeline.quick_bleu"]
    with caplog.at_level(logging.WARNING, logger="autolora_exp.task_types.generation"):
        result = run(compose(overrides, tmp_path / "run"))
    assert any("all 4 generated texts are empty" in r.getMessage() for r in caplog.records)
    assert result["metrics"]["final"]["validation"]["n_empty"] == 4


def test_harmless_variants_still_load_exactly(tmp_path):
    """Not errors: Windows line ends in a GLUE file, a UTF-8 byte-order mark in an E2E file."""
    from autolora_exp.data.glue import load_glue
    from autolora_exp.data.nlg import _read_e2e_csv

    train = copy_of(tmp_path, "glue/RTE/train.tsv")
    train.write_bytes(train.read_bytes().replace(b"\n", b"\r\n"))
    assert load_glue("rte", data_dir=tmp_path / "glue")["train"].to_dict() == \
        load_glue("rte", data_dir=SHARED_DATA / "glue")["train"].to_dict()
    dev = copy_of(tmp_path, "e2e/devset.csv")
    dev.write_bytes(b"\xef\xbb\xbf" + dev.read_bytes())
    assert _read_e2e_csv(dev) == _read_e2e_csv(SHARED_DATA / "e2e" / "devset.csv")


@pytest.mark.parametrize("override, expected", [
    ("train.epochs=three", "error: Error merging override train.epochs=three. Value 'three' of type 'str' could "
                           "not be converted to Integer (full_key: train.epochs)"),
    ("method.rr=4", "error: Could not override 'method.rr'. To append to your config use +method.rr=4. "
                    "Key 'rr' not in 'AutoLoRAConfig' (full_key: method.rr)"),
    ("task=glue/nope", "error: In 'config': Could not find 'task/glue/nope'. Available options in 'task': "
                       "bbc_news, bionlp, e2e, webnlg, wnut16"),
    ("train.epochs=", "error: Error merging override train.epochs=. Value '' of type 'str' could not be "
                      "converted to Integer (full_key: train.epochs)"),
])
def test_a_command_line_that_composes_no_config_is_one_line_and_exit_2(tmp_path, override, expected):
    """Hydra's composition errors (wrong type, misspelt key, unknown option) before anything loads."""
    proc = subprocess.run([sys.executable, "run.py", "model=tiny-roberta", "debug=default", override,
                           f"hydra.run.dir={tmp_path / 'run'}"], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "HYDRA_FULL_ERROR": "0"})  # run.py sets it itself
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines() == [expected]
    assert not (tmp_path / "run").exists()
