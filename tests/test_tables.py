"""make tables: result files -> the paper's tables and figures. Synthetic but schema-valid result
files (a small factory, checked with results.validate_result) pin the aggregation, the
layouts, missing cells and failed runs; one end-to-end test runs a real tiny sweep first."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from autolora_exp import results
from autolora_exp.tables import make_tables
from autolora_exp.tables.load import load_folder
from autolora_exp.tables.make import BUILDERS, build
from autolora_exp.tables.render import to_latex
from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import make_tables as make_tables_cli  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"
RANKS = {f"roberta.encoder.layer.{i}.attention.self.{m}": 2 + (i + len(m)) % 5 for i in range(12)
         for m in ("query", "value")}


def make_result(experiment: str, task: str, method: str, seed: int, score: float, *, model: str = "roberta-base",
                primary: str = "accuracy", eval_split: str = "validation", final: float | None = None,
                test: dict | None = None, extra: dict | None = None, trainable: int = 894_000,
                phases: dict | None = None, ranks: dict | None = None, r: int = 4) -> dict:
    """One result.json as pipeline.run writes it, reduced to plausible values."""
    method_cfg = {"name": method, "lr": 5e-4}
    if method == "lora":
        method_cfg.update(r=r, rank_pattern={})
    best = {eval_split: {primary: score, **(extra or {}), "n": 100}}
    last = {eval_split: {primary: score if final is None else final, "n": 100}}
    result = {
        "schema_version": results.SCHEMA_VERSION, "status": "completed", "name": experiment,
        "task": task, "model": model, "method": method, "seed": seed,
        "config": {"name": experiment, "seed": seed, "task": {"name": task, "eval_splits": [eval_split]},
                   "model": {"name": model}, "method": method_cfg},
        "metrics": {"primary": primary, "final": last, "best": best, "best_epoch": 1,
                    "per_epoch": [{"epoch": 1, "step": 10, "train_loss": 0.5, "eval": last}], "test": test},
        "params": {"trainable": trainable, "total": 125_000_000},
        "ranks": ranks,
        "search": {"ranks": ranks, "mean_rank": None} if ranks else None,
        "phases": phases or {"data": {"wall_s": 5.0}, "train": {"wall_s": 100.0}, "test": {"wall_s": 3.0}},
        "data": {"train": {"n": 1000, "ids_sha256": "0" * 64}},
        "env": {"python": "3.11", "device": "cpu"},
        "created": f"2026-01-01T00:00:{seed:02d}+00:00",
    }
    results.validate_result(result)
    return result


def write_run(root: Path, result: dict, sub: str = "") -> Path:
    folder = root / result["name"] / result["task"] / result["model"] / (result["method"] + sub) / f"seed{result['seed']}"
    return results.atomic_write_json(folder / results.RESULT_FILE, result)


def write_failure(root: Path, experiment: str, task: str, method: str, seed: int, *, model: str = "roberta-base",
                  phase: str = "train", error: str = "RuntimeError: CUDA out of memory",
                  config: dict | None = None) -> Path:
    method_cfg = {"name": method, **({"r": 4, "rank_pattern": {}} if method == "lora" else {})}
    config = config or {"name": experiment, "seed": seed, "task": {"name": task}, "model": {"name": model},
                        "method": method_cfg}
    record = {"schema_version": 1, "status": "failed", "phase": phase, "error": error, "traceback": "...",
              "task": task, "model": model, "method": method, "seed": seed, "name": experiment,
              "config": config, "created": "2026-01-01T00:00:00+00:00"}
    folder = root / experiment / task / model / method / f"seed{seed}"
    return results.atomic_write_json(folder / results.FAILED_FILE, record)


def md_of(out: Path, experiment: str) -> str:
    return (out / experiment / "tables.md").read_text()


def row(md: str, label: str) -> list[str]:
    """The cells of the first Markdown table row whose label is ``label``."""
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{md}")


def column(md: str, header: str) -> int:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and header in cells:
            return cells.index(header)
    raise AssertionError(f"no column {header!r}")


# ---- aggregation ------------------------------------------------------------------------------


def test_cell_median_spread_and_n(tmp_path):
    scores = [0.80, 0.84, 0.82, 0.90, 0.81]
    for seed, s in enumerate(scores):
        write_run(tmp_path, make_result("table1_glue", "glue/rte", "autolora", seed, s))
    col = load_folder(tmp_path)
    stat = col.stat(("table1_glue", "glue/rte", "roberta-base", "autolora", ""))
    assert stat.n == 5 and stat.median == pytest.approx(0.82)
    assert (stat.lo, stat.hi) == (0.80, 0.90)
    assert stat.iqr == pytest.approx((0.81, 0.84))
    make_tables(tmp_path, tmp_path / "out")
    md = md_of(tmp_path / "out", "table1_glue")
    cell = row(md, "AutoLoRA")[column(md, "RTE")]
    assert cell == "82.0 [80.0–90.0] n=5"


def test_even_number_of_seeds_takes_the_middle_mean(tmp_path):
    for seed, s in enumerate([0.5, 0.7]):
        write_run(tmp_path, make_result("table1_glue", "glue/rte", "lora", seed, s))
    stat = load_folder(tmp_path).stat(("table1_glue", "glue/rte", "roberta-base", "lora", "r=4"))
    assert stat.median == pytest.approx(0.6) and stat.n == 2


def test_best_epoch_by_default_last_epoch_on_request(tmp_path):
    write_run(tmp_path, make_result("table1_glue", "glue/rte", "lora", 0, 0.8, final=0.7))
    key = ("table1_glue", "glue/rte", "roberta-base", "lora", "r=4")
    assert load_folder(tmp_path).stat(key).median == 0.8
    assert load_folder(tmp_path, select="final").stat(key).median == 0.7


def test_test_split_is_reported_where_the_task_has_one(tmp_path):
    write_run(tmp_path, make_result("table3_bionlp", "bionlp", "lora", 0, 0.70, primary="f1",
                                    test={"f1": 0.75, "precision": 0.7, "n": 3856}))
    run = load_folder(tmp_path).runs[0]
    assert run.split == "test" and run.scores["f1"] == 0.75


def test_mnli_reports_the_first_dev_split_matched(tmp_path):
    result = make_result("table1_glue", "glue/mnli", "lora", 0, 0.87, eval_split="validation_matched")
    result["config"]["task"]["eval_splits"] = ["validation_matched", "validation_mismatched"]
    for part in ("final", "best"):
        result["metrics"][part]["validation_mismatched"] = {"accuracy": 0.5}
    write_run(tmp_path, result)
    run = load_folder(tmp_path).runs[0]
    assert run.split == "validation_matched" and run.scores["accuracy"] == 0.87


# ---- layouts, missing and failed cells -------------------------------------------------------


def glue_folder(root: Path, experiment: str = "table1_glue", skip=("glue/mnli",)) -> None:
    for t, task in enumerate(("glue/cola", "glue/sst2", "glue/mrpc", "glue/qqp", "glue/stsb", "glue/mnli",
                              "glue/qnli", "glue/rte")):
        if task in skip:
            continue
        primary = {"glue/cola": "matthews_correlation", "glue/stsb": "spearmanr"}.get(task, "accuracy")
        for m, method in enumerate(("full_ft", "adapter", "lora", "adalora", "autolora")):
            for seed in range(3):
                write_run(root, make_result(experiment, task, method, seed, 0.6 + 0.01 * t + 0.02 * m + 0.001 * seed,
                                            primary=primary, trainable=125_000_000 if method == "full_ft" else 300_000))


def test_table1_layout_missing_cell_and_average(tmp_path):
    glue_folder(tmp_path)
    make_tables(tmp_path, tmp_path / "out")
    md = md_of(tmp_path / "out", "table1_glue")
    header = row(md, "Method")
    assert header == ["Method", "Params", "CoLA", "SST-2", "MRPC", "QQP", "STS-B", "MNLI", "QNLI", "RTE", "Avg."]
    autolora = row(md, "AutoLoRA")
    assert autolora[header.index("MNLI")] == "–"          # missing, shown as missing
    assert autolora[-1].endswith("†")                      # the average says it is partial
    medians = [0.6 + 0.01 * t + 0.08 + 0.001 for t in (0, 1, 2, 3, 4, 6, 7)]
    assert autolora[-1] == f"{100 * statistics.fmean(medians):.1f}†"
    assert row(md, "Full FT")[1] == "125M" and row(md, "LoRA (r=4)")[1] == "0.3M"
    assert "default | AutoLoRA" not in md and "roberta-base | AutoLoRA: MNLI" in md  # listed as missing
    assert "AutoLoRA (paper, reported)" in md and row(md, "AutoLoRA (paper, reported)")[-1] == "85.5"


def test_sora_is_a_table1_row_with_its_label_and_parameters(tmp_path):
    """A method registered beside its code (SoRA, methods/sora; issue 18) gets its row, its
    label and its trainable parameters, in Table 1's layout (the proposed method last)."""
    for seed, score in ((0, 0.6), (1, 0.7)):
        write_run(tmp_path, make_result("table1_glue", "glue/rte", "lora", seed, 0.65, trainable=300_000))
        write_run(tmp_path, make_result("table1_glue", "glue/rte", "sora", seed, score, trainable=1_330_000))
    make_tables(tmp_path, tmp_path / "out")
    md = md_of(tmp_path / "out", "table1_glue")
    header = row(md, "Method")
    labels = [line.split("|")[1].strip() for line in md.splitlines() if line.startswith("| ")][1:]
    assert labels[:7] == ["Full FT", "Adapter", "LoRA (r=4)", "AdaLoRA", "SoRA", "DyLoRA", "AutoLoRA"]
    assert "roberta-base | DyLoRA: CoLA, SST-2" in md  # a layout row without runs: its cells are listed missing
    assert row(md, "SoRA")[1] == "1.33M" and row(md, "SoRA")[header.index("RTE")] == "65.0 [60.0–70.0] n=2"


def test_mini_table_has_no_paper_reference_row(tmp_path):
    glue_folder(tmp_path, "mini/table1_glue", skip=("glue/mnli", "glue/qqp"))
    make_tables(tmp_path, tmp_path / "out")
    md = md_of(tmp_path / "out", "mini/table1_glue")
    assert "paper, reported" not in md and "A mini experiment" in md


def test_failed_runs_are_listed_and_cells_say_failed(tmp_path):
    write_run(tmp_path, make_result("table1_glue", "glue/rte", "lora", 0, 0.7))
    write_failure(tmp_path, "table1_glue", "glue/rte", "lora", 1)                          # beside a completed seed
    write_failure(tmp_path, "table1_glue", "glue/cola", "adalora", 0, phase="data",
                  error="UserError: task 'glue/cola': split(s) ['validation'] are missing")  # the only run of a cell
    make_tables(tmp_path, tmp_path / "out")
    md = md_of(tmp_path / "out", "table1_glue")
    header = row(md, "Method")
    assert row(md, "AdaLoRA")[header.index("CoLA")] == "failed (1)"
    assert row(md, "LoRA (r=4)")[header.index("RTE")] == "70.0 [70.0–70.0] n=1 of 2, 1 failed"
    failed = md.split("## Failed runs")[1].split("##")[0]
    assert "glue/cola | roberta-base | adalora | seed 0: data: UserError: task 'glue/cola'" in failed
    assert "glue/rte | roberta-base | lora r=4 | seed 1: train: RuntimeError: CUDA out of memory" in failed
    index = (tmp_path / "out" / "README.md").read_text()
    assert "| table1_glue | 1 | 2 |" in index


def test_failure_followed_by_success_counts_as_completed(tmp_path):
    result = make_result("table1_glue", "glue/rte", "autolora", 0, 0.7)
    write_failure(tmp_path, "table1_glue", "glue/rte", "autolora", 0, config=result["config"])  # same config
    write_run(tmp_path, result)
    col = load_folder(tmp_path)
    assert len(col.runs) == 1 and col.failures == []


def test_unreadable_files_are_listed_not_dropped(tmp_path):
    write_run(tmp_path, make_result("table1_glue", "glue/rte", "lora", 0, 0.7))
    bad = tmp_path / "table1_glue" / "glue" / "rte" / "x" / "result.json"
    bad.parent.mkdir(parents=True)
    bad.write_text('{"schema_version": 1, "status": "completed"}')
    make_tables(tmp_path, tmp_path / "out")
    index = (tmp_path / "out" / "README.md").read_text()
    assert "Unreadable files" in index and str(bad) in index and "missing 'task'" in index


def test_unknown_experiment_still_gets_a_table(tmp_path):
    write_run(tmp_path, make_result("my_sweep", "glue/rte", "lora", 0, 0.7))
    written = make_tables(tmp_path, tmp_path / "out")
    assert "my_sweep" in written and "0.7000" in md_of(tmp_path / "out", "my_sweep")


def test_table2_nlg_columns_on_the_papers_scales(tmp_path):
    e2e = {"bleu": 0.704, "nist": 8.85, "meteor": 0.468, "rouge_l": 0.718, "cider": 2.53, "n": 630}
    web = {"bleu": 0.553, "meteor": 0.44, "ter": 0.39, "n": 1862}
    for seed in range(2):
        write_run(tmp_path, make_result("table2_nlg", "e2e", "autolora", seed, 0.7, model="gpt2-medium",
                                        primary="bleu", test=e2e))
        write_run(tmp_path, make_result("table2_nlg", "webnlg", "autolora", seed, 0.5, model="gpt2-medium",
                                        primary="bleu", test=web))
    make_tables(tmp_path, tmp_path / "out")
    md = md_of(tmp_path / "out", "table2_nlg")
    header, cells = row(md, "Method"), row(md, "AutoLoRA")
    expect = {"E2E BLEU": "70.4", "E2E NIST": "8.85", "E2E METEOR": "46.8", "E2E ROUGE-L": "71.8",
              "E2E CIDEr": "2.53", "WebNLG BLEU": "55.3", "WebNLG METEOR": "0.44", "WebNLG TER ↓": "0.39"}
    for col, value in expect.items():
        assert cells[header.index(col)].startswith(value + " [")
    assert row(md, "LoRA")[header.index("E2E BLEU")] == "–"


def test_table5_normalises_to_adalora(tmp_path):
    exp, task = "table5_cost", "glue/sst2"

    def cost(search: float, train: float) -> dict:
        return {"data": {"wall_s": 50.0}, "search": {"wall_s": search}, "train": {"wall_s": train},
                "test": {"wall_s": 9.0}}

    grid_ranks = {name: 4 for name in RANKS}
    for seed, ada in enumerate([100.0, 110.0, 90.0]):
        write_run(tmp_path, make_result(exp, task, "adalora", seed, 0.9, phases=cost(0.0, ada)))
        write_run(tmp_path, make_result(exp, task, "autolora", seed, 0.9, phases=cost(120.0, 80.0), ranks=RANKS))
        if seed < 2:  # seed 2 of the grid failed
            grid = make_result(exp, task, "lora_grid", seed, 0.9, phases=cost(700.0 + 20 * seed, 90.0),
                               ranks=grid_ranks)
            grid["config"]["method"]["ranks"] = [1, 2, 4, 8, 16]
            write_run(tmp_path, grid)
    write_failure(tmp_path, exp, task, "lora_grid", 2, phase="search")
    make_tables(tmp_path, tmp_path / "out")
    md = md_of(tmp_path / "out", exp)
    normalised = md.split("normalised to AdaLoRA = 1")[1]
    assert row(normalised, "AdaLoRA")[1] == "1.00 [0.90–1.10] n=3"
    assert row(normalised, "AutoLoRA")[1] == "2.00 [2.00–2.00] n=3"           # (120 + 80) / 100
    assert row(normalised, "LoRA + grid search")[1] == "8.00 [7.90–8.10] n=2 of 3, 1 failed"  # (700|720 + 90) / 100
    assert row(normalised, "AdaLoRA")[2] == "–"                                # MNLI: no runs
    assert "Grid: r ∈ {1, 2, 4, 8, 16}" in md
    seconds = md.split("seconds (roberta-base)")[1]
    assert row(seconds, "AdaLoRA")[1] == "100 [90–110] n=3"
    chosen = md.split("the ranks the searches chose")[1]
    assert row(chosen, "LoRA + grid search")[1] == "4.00 [4.00–4.00] n=2 of 3, 1 failed"
    assert row(chosen, "AutoLoRA")[1].startswith(f"{statistics.fmean(RANKS.values()):.2f} [")
    assert "glue/sst2 | roberta-base | lora_grid | seed 2: search" in md


# ---- figures ----------------------------------------------------------------------------------


def test_figures_are_written_as_png(tmp_path):
    for seed in range(3):
        for method in ("lora", "autolora"):
            write_run(tmp_path, make_result("figure2_roberta_large", "glue/mrpc", method, seed, 0.88 + seed / 100,
                                            model="roberta-large"))
        shifted = {k: v + (1 if seed == 2 else 0) for k, v in RANKS.items()}
        write_run(tmp_path, make_result("figure3_ranks", "glue/qqp", "autolora", seed, 0.9, ranks=shifted))
    write_failure(tmp_path, "figure2_roberta_large", "glue/sst2", "lora", 0, model="roberta-large")
    written = make_tables(tmp_path, tmp_path / "out")
    bars = tmp_path / "out" / "figure2_roberta_large" / "figure2_roberta-large.png"
    heat = tmp_path / "out" / "figure3_ranks" / "figure3_glue-qqp_roberta-base_autolora.png"
    for png in (bars, heat):
        assert png in written[png.parent.name] and png.read_bytes()[:8] == PNG and png.stat().st_size > 5000
    md = md_of(tmp_path / "out", "figure3_ranks")
    mean_rank = statistics.fmean(RANKS.values())
    assert row(md, "QQP")[3].startswith(f"{mean_rank:.2f} [{mean_rank:.2f}–{mean_rank + 1:.2f}] n=3")
    assert row(md, "MNLI")[3] == "–" and row(md, "E2E")[3] == "–"             # not run: missing
    fig2 = md_of(tmp_path / "out", "figure2_roberta_large")
    assert "![figure2_roberta-large.png](figure2_roberta-large.png)" in fig2
    assert row(fig2, "LoRA (r=4)")[column(fig2, "SST-2")] == "failed (1)"


def test_figure3_heatmap_uses_the_lower_median_rank_per_layer():
    from autolora_exp.tables.load import Run
    from autolora_exp.tables.ranks import median_ranks

    def run(seed: int, r: int) -> Run:
        return Run("figure3_ranks", "glue/qqp", "roberta-base", "autolora", "", seed, "validation", {}, "accuracy",
                   None, None, {"l.0.query": r, "l.0.value": 8}, Path("."))

    assert median_ranks([run(0, 2), run(1, 5)]) == {"l.0.query": 2, "l.0.value": 8}
    assert median_ranks([run(0, 2), run(1, 5), run(2, 3)]) == {"l.0.query": 3, "l.0.value": 8}


# ---- output formats and the CLI ----------------------------------------------------------------


def test_latex_output_escapes_and_keeps_the_numbers(tmp_path):
    for seed in range(2):
        for method in ("autolora", "autolora_eta0"):
            write_run(tmp_path, make_result("table4_ablations", "glue/rte", method, seed, 0.7 + seed / 10))
    sections = build(load_folder(tmp_path))
    tex = to_latex(sections[0].tables[0])
    assert r"$\eta$ = 0" in tex and r"\begin{tabular}" in tex and r"\bottomrule" in tex
    assert r"75.0\,{\scriptsize[70.0--80.0]$_{n=2}$}" in tex
    assert "_" not in tex.replace(r"\_", "").replace("$_{", "")  # every underscore escaped or a subscript


def test_output_depends_only_on_the_files(tmp_path):
    glue_folder(tmp_path)
    make_tables(tmp_path, tmp_path / "a")
    make_tables(tmp_path, tmp_path / "b")
    for name in ("README.md", "table1_glue/tables.md", "table1_glue/tables.tex"):
        assert (tmp_path / "a" / name).read_text().replace(str(tmp_path / "a"), "") == \
            (tmp_path / "b" / name).read_text().replace(str(tmp_path / "b"), "")


def test_every_paper_experiment_has_a_builder():
    assert {p.stem for p in (REPO / "conf" / "experiment").glob("*.yaml")} == set(BUILDERS)


def test_cli(tmp_path, capsys):
    write_run(tmp_path, make_result("table1_glue", "glue/rte", "lora", 0, 0.7))
    assert make_tables_cli.main([str(tmp_path), "--out", str(tmp_path / "out")]) == 0
    assert "table1_glue: tables.md, tables.tex" in capsys.readouterr().out
    assert make_tables_cli.main([str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    assert "does not exist" in capsys.readouterr().err


# ---- end to end: a real tiny sweep, then make tables -------------------------------------------


def tiny_sweep(root: Path, shared_data: Path) -> subprocess.CompletedProcess:
    """Two real runs (tiny RoBERTa, debug sizes) of the mini Table 1 sweep on RTE from ../shared/data."""
    env = {**os.environ, "AUTOLORA_SHARED_DATA": str(shared_data), "WANDB_MODE": "disabled"}
    return subprocess.run(
        [sys.executable, "run.py", "-m", "experiment=mini/table1_glue", "debug=default", "model=tiny-roberta",
         "task=glue/rte", "method=lora", "seed=0,1", f"hydra.sweep.dir={root}/mini/table1_glue"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, shared_data):
    root = tmp_path_factory.mktemp("multirun")
    proc = tiny_sweep(root, shared_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root


def test_tiny_sweep_then_make_tables(swept, tmp_path):
    found = sorted(p.relative_to(swept).as_posix() for p in swept.rglob("result.json"))
    digests = [json.loads((swept / f).read_text())["config_hash"][:8] for f in found]
    assert found == [f"mini/table1_glue/glue/rte/tiny-roberta/lora/seed{s}-{d}/result.json"
                     for s, d in zip((0, 1), digests)]
    scores = sorted(json.loads(p.read_text())["metrics"]["best"]["validation"]["accuracy"] for p in swept.rglob("result.json"))
    written = make_tables(swept, tmp_path / "tables")
    md = md_of(tmp_path / "tables", "mini/table1_glue")
    header = row(md, "Method")
    lo, hi = (f"{100 * x:.1f}" for x in scores)
    assert row(md, "LoRA (r=4)")[header.index("RTE")] == f"{100 * statistics.median(scores):.1f} [{lo}–{hi}] n=2"
    assert row(md, "LoRA (r=4)")[header.index("CoLA")] == "–" and row(md, "AutoLoRA")[header.index("RTE")] == "–"
    assert (tmp_path / "tables" / "mini" / "table1_glue" / "tables.tex") in written["mini/table1_glue"]


def test_relaunched_sweep_skips_finished_runs(swept, shared_data):
    before = {p: p.stat().st_mtime_ns for p in swept.rglob("result.json")}
    proc = tiny_sweep(swept, shared_data)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("already finished (same config)") == 2
    assert {p: p.stat().st_mtime_ns for p in swept.rglob("result.json")} == before


# ---- paired differences (issue 15) --------------------------------------------------------------


def test_table1_has_paired_differences_against_lora_r4_and_adalora(tmp_path):
    glue_folder(tmp_path)  # autolora = lora + 0.04 and adalora + 0.02 on every seed
    make_tables(tmp_path, tmp_path / "out")
    md = md_of(tmp_path / "out", "table1_glue")
    assert "Paired differences against LoRA r=4 and AdaLoRA (roberta-base)" in md
    lines = [line for line in md.splitlines() if line.startswith("| AutoLoRA |")]
    against_lora = next(line for line in lines if "| LoRA (r=4) |" in line)
    against_adalora = next(line for line in lines if "| AdaLoRA |" in line)
    assert "+4.0 (n=3, 3/3 up)" in against_lora  # no interval below 5 seeds (paired_bootstrap.MIN_SEEDS)
    assert "+2.0 (n=3, 3/3 up)" in against_adalora


def test_no_paired_table_with_one_seed(tmp_path):
    for method in ("lora", "adalora", "autolora"):
        write_run(tmp_path, make_result("table1_glue", "glue/rte", method, 0, 0.6))
    make_tables(tmp_path, tmp_path / "out")
    assert "Paired differences" not in md_of(tmp_path / "out", "table1_glue")


def test_bench_quality_runs_get_the_evidence_layout(tmp_path):
    uniform = {k: 4 for k in RANKS}
    for seed in range(2):
        for method, score, ranks in (("lora", 0.70, uniform), ("adalora", 0.69, RANKS),
                                     ("autolora_authors", 0.72, RANKS)):
            write_run(tmp_path, make_result("glue_evidence", "glue/stsb", method, seed, score + 0.01 * seed,
                                            model="minilm", primary="spearmanr", ranks=ranks))
    written = make_tables(tmp_path, tmp_path / "out")
    md = md_of(tmp_path / "out", "glue_evidence")
    assert md.startswith("# glue_evidence: GLUE at the learning-curve settings")
    assert "| AutoLoRA (authors' search) | LoRA (r=4) | +2.0 (n=2, 2/2 up) |" in md
    assert "| Method | Params | STS-B | Avg. |" in md  # the tasks the benchmark ran, not the paper's eight
    assert "MRPC" not in md.split("## Missing cells")[1]
    # the rank heatmaps beside the tables: the rank-allocating rows only (LoRA's uniform ranks say nothing)
    heatmaps = sorted(p.name for p in written["glue_evidence"] if p.suffix == ".png")
    assert heatmaps == ["ranks_glue-stsb_minilm_adalora.png", "ranks_glue-stsb_minilm_autolora_authors.png"]
    assert all((tmp_path / "out" / "glue_evidence" / n).read_bytes()[:8] == PNG for n in heatmaps)
    assert "![ranks_glue-stsb_minilm_adalora.png](ranks_glue-stsb_minilm_adalora.png)" in md
    index = (tmp_path / "out" / "README.md").read_text()
    assert "glue_evidence" not in index.split("Paper experiments with no run")[-1]


def test_a_method_without_epochs_to_select_is_named_under_the_table(tmp_path):
    write_run(tmp_path, make_result("table1_glue", "glue/rte", "lora", 0, 0.6))
    dylora = make_result("table1_glue", "glue/rte", "dylora", 0, 0.62)
    dylora["metrics"]["best_epoch"] = None  # its search trained the final model: best = final
    write_run(tmp_path, dylora)
    make_tables(tmp_path, tmp_path / "out")
    md = md_of(tmp_path / "out", "table1_glue")
    assert "DyLoRA: the final model's score, whatever --select says" in md
    assert "LoRA (r=4): the final" not in md


def test_params_column_shows_the_count_after_pruning_where_a_method_reports_one(tmp_path):
    result = make_result("table1_glue", "glue/rte", "sora", 0, 0.6, trainable=300_000)
    result["params"]["effective"] = 120_000  # SoRA: what is left once its zero gates are pruned
    write_run(tmp_path, result)
    make_tables(tmp_path, tmp_path / "out")
    assert row(md_of(tmp_path / "out", "table1_glue"), "SoRA")[1] == "0.12M"  # not the 0.3M that train
