"""Quality of AutoLoRA and its baselines on real GLUE data with the packaged MiniLM.

    python scripts/bench_quality.py --settings docs/bench/curves_glue.json --seeds 0,1,2,3,4   # make bench-quality
    python scripts/bench_quality.py --tasks rte,mrpc --seeds 0 --train-samples 256 --epochs 2
    python scripts/bench_quality.py --quick --out /tmp/bench          # tiny-roberta smoke run

Every (seed, task, method) runs through the real pipeline (``python run.py``) in its own folder
under <out>/runs/quality/<settings>/<task>/<model>/<method>/seed<N>-<config digest>; a run whose folder holds a
result.json of the same config is reused, and every finished run's small result files are copied
to the committed store (docs/bench/runs), so the benchmark can be stopped and resumed across
sittings and machines (runs go seed by seed: after one sitting the first seed is complete
everywhere). Two sittings on disjoint ``--tasks`` (each with its own ``--name``) can share a
machine's cores; a final run over all tasks reuses them and writes the whole summary.

Methods (``VARIANTS``): ``full_ft``; ``lora_r2``, ``lora_r4``, ``lora_r8`` (LoRA at r = 2, 4, 8,
with the learning rate the curves chose under --settings); ``adalora``; ``autolora`` (the paper
preset), ``autolora_authors`` (the authors' search, issue 11) and ``autolora_eta0`` (its eta = 0
ablation), each searching on the 1:1 split of the training set and retraining on all of it with
its preset's search length (GLUE: 20 epochs) unless --search-epochs. Every method has the same
epochs, batch size and max length. With --settings, the tasks, training rows, max length, epochs
and head pooling per task are those the learning curves chose (scripts/bench_curves.py). Data:
the official GLUE files in ../shared/data/glue; the training set is subsampled (seeded) only with
--train-samples (or --settings), the dev set (the reported split: GLUE test labels are not public)
only with --eval-samples.

Score per run: the task's official metric (RTE/MRPC accuracy, STS-B Spearman, CoLA Matthews;
MRPC F1 and STS-B Pearson are kept too) on the dev set at the best epoch, as the LoRA paper
reports; the final epoch's is kept too. Per task and method: median and spread (min-max, std)
over seeds; the GLUE average is the mean over tasks of the medians, over the tasks every method
finished. Targets: AutoLoRA's average >= LoRA r=4's and >= AdaLoRA's.
Paired differences (issue 15): per task, each AutoLoRA row minus LoRA r=4 and minus AdaLoRA over
the seeds both finished, with a 95% bootstrap CI of the mean difference (paired_bootstrap.py).

Writes <out>/<name>.json and <out>/<name>.md (name: ``quality``; ``quality_quick`` with --quick).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
from pathlib import Path
from typing import Any

from autolora_exp.bench import (BenchRun, RunRecord, add_committed_argument, add_run_arguments, committed_store,
                                fmt_stat, glue_task, machine_line, md_table, parse_list, parse_with_quick,
                                portable_data_dir, process_wall_text, run_benchmark, stats)
from autolora_exp.errors import UserError
from autolora_exp.paired_bootstrap import PairedDifference, describe, paired_difference

REPO = Path(__file__).resolve().parents[1]
VARIANTS = {
    "full_ft": ["method=full_ft"],
    "lora_r2": ["method=lora", "method.r=2"],
    "lora_r4": ["method=lora", "method.r=4"],
    "lora_r8": ["method=lora", "method.r=8"],
    "adalora": ["method=adalora"],
    "autolora": ["method=autolora"],
    "autolora_authors": ["method=autolora_authors"],
    "autolora_eta0": ["method=autolora_eta0"],
}
LABELS = {"full_ft": "Full FT", "lora_r2": "LoRA r=2", "lora_r4": "LoRA r=4", "lora_r8": "LoRA r=8",
          "adalora": "AdaLoRA", "autolora": "AutoLoRA", "autolora_authors": "AutoLoRA (authors' search)",
          "autolora_eta0": "AutoLoRA η = 0"}
#: the methods that run a search (their search length follows --search-epochs when given)
SEARCHING = ("autolora", "autolora_authors", "autolora_eta0")
#: the LoRA rows take the learning rate the learning curves chose (--settings)
LORA_ROWS = ("lora_r2", "lora_r4", "lora_r8")
#: the rows whose per-seed differences are compared, against these references (issue 15)
PAIRED = (("autolora", "autolora_authors", "autolora_eta0"), ("lora_r4", "adalora"))
DEFAULT_TASKS = ("rte", "mrpc", "stsb", "cola")
#: the runs' experiment name with --settings: `make tables RESULTS=<out>/runs/quality` gives them the
#: GLUE table with the paired differences (tables/make.py BUILDERS)
EXPERIMENT = "glue_evidence"
#: issue 9: AutoLoRA's GLUE average at least these methods'
TARGET_REFERENCES = ("lora_r4", "adalora")

#: --quick: tiny-roberta on a few rows of RTE, four optimiser steps per training and per search
QUICK = dict(model="tiny-roberta", tasks="rte", train_samples=32, eval_samples=16, max_length=32, epochs=1,
             batch_size=8, seeds="0", override=["train.max_steps=4"], committed=None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--tasks", default=None,
                   help=f"GLUE tasks (default: the tasks of --settings, else {','.join(DEFAULT_TASKS)})")
    p.add_argument("--methods", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    p.add_argument("--settings", type=Path, default=None,
                   help="per-task settings chosen by the learning curves (docs/bench/curves.json: train rows, "
                        "max length, epochs, pooling, LoRA lr); they replace --train-samples, --max-length, "
                        "--epochs and the tasks default to the file's chosen tasks")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    add_run_arguments(p, REPO, epochs=10, stem="quality")
    p.add_argument("--no-compute", action="store_true",
                   help="start no run: report what is finished here or in the committed store, and the cost "
                        "of the rest")
    add_committed_argument(p, REPO)
    return parse_with_quick(p, argv, QUICK, "quality")


def chosen_settings(path: Path, tasks: list[str] | None) -> dict[str, dict[str, Any]]:
    """task -> the setting the learning curves chose for it (``per_task[task]["chosen"]`` of
    docs/bench/curves.json): train rows, max length, epochs, pooling, LoRA's lr. A task without
    a chosen setting (it did not learn, or has no curve) is an error naming the ones that have."""
    import json

    try:
        per_task = json.loads(path.read_text(encoding="utf-8"))["per_task"]
    except (OSError, ValueError, KeyError) as err:
        raise UserError(f"--settings {path}: not a learning-curve summary ({err}); make it with make bench-curves")
    chosen = {t: c["chosen"] for t, c in per_task.items() if c.get("chosen")}
    wanted = tasks or sorted(chosen)
    missing = [t for t in wanted if t not in chosen]
    if missing or not wanted:
        raise UserError(f"--settings {path} has no chosen setting for {missing or 'any task'}; "
                        f"it has: {', '.join(sorted(chosen)) or 'none'}")
    return {t: chosen[t] for t in wanted}


def plan(args: argparse.Namespace) -> tuple[list[BenchRun], dict[str, Any]]:
    """The runs, seed-major: a partial benchmark holds whole seeds."""
    from autolora_exp.device import resolve_device

    tasks = [glue_task(t) for t in parse_list(args.tasks, "--tasks")] if args.tasks else None
    per_task = chosen_settings(args.settings, tasks) if args.settings else None
    tasks = list(per_task) if per_task else tasks or [glue_task(t) for t in DEFAULT_TASKS]
    methods = parse_list(args.methods, "--methods")
    bad = [m for m in methods if m not in VARIANTS]
    if bad:
        raise UserError(f"--methods {bad} unknown; accepted: {', '.join(VARIANTS)}")
    seeds = parse_list(args.seeds, "--seeds", int)
    if not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a folder; point it at the official GLUE files "
                        "(../shared/data/glue beside the repository)")
    device = str(resolve_device(args.device))  # auto resolved here: the runs' configs name the device

    def task_setting(t: str) -> dict[str, Any]:
        c = (per_task or {}).get(t, {})
        return {"train_samples": c.get("train_samples", args.train_samples),
                "max_length": c.get("max_length", args.max_length), "epochs": c.get("epochs", args.epochs),
                "pooling": c.get("pooling"), "lora_lr": c.get("lr")}

    def overrides(t: str, m: str) -> list[str]:
        st = task_setting(t)
        extra = [f"model.pooling={st['pooling']}"] if st["pooling"] else []
        if m in LORA_ROWS and st["lora_lr"] is not None:
            extra.append(f"method.lr={st['lora_lr']}")
        if m in SEARCHING and args.search_epochs:
            extra.append(f"method.search.epochs={args.search_epochs}")
        name = [f"name={EXPERIMENT}"] if per_task else []
        return [*name, f"model={args.model}", f"task.data_dir={portable_data_dir(args.data_dir, REPO)}",
                f"task.max_length={st['max_length']}", f"train.epochs={st['epochs']}",
                f"train.batch_size={args.batch_size}", f"device={device}", "logger.mode=disabled",
                "train.progress=false", f"task.max_train_samples={st['train_samples'] or 'null'}",
                f"task.max_eval_samples={args.eval_samples or 'null'}", *extra, *args.override]

    if per_task:
        tag = f"{device}_chosen_v{args.eval_samples or 'all'}_s{args.search_epochs or 'preset'}_b{args.batch_size}"
    else:
        tag = (f"{device}_n{args.train_samples or 'all'}_v{args.eval_samples or 'all'}_L{args.max_length}"
               f"_e{args.epochs}_s{args.search_epochs or 'preset'}_b{args.batch_size}")
    if args.override:
        tag += "_x" + hashlib.sha1("\n".join(args.override).encode()).hexdigest()[:8]
    root = args.out / "runs" / "quality" / tag
    runs = [BenchRun({"task": t, "method": m, "seed": s},
                     [f"task={t}", *overrides(t, m), *VARIANTS[m], f"seed={s}"],
                     root / t / args.model / m / f"seed{s}")
            for s in seeds for t in tasks for m in methods]
    settings = {"tasks": tasks, "methods": methods, "seeds": seeds, "model": args.model,
                "data_dir": portable_data_dir(args.data_dir, REPO), "per_task": {t: task_setting(t) for t in tasks},
                "settings_file": str(args.settings) if args.settings else None,
                "eval_samples": args.eval_samples, "search_epochs": args.search_epochs,
                "batch_size": args.batch_size, "device": device,
                "overrides": args.override, "runs_dir": str(root), "quick": args.quick}
    return runs, settings


def run_entry(rec: RunRecord) -> dict[str, Any]:
    entry = rec.entry()
    if rec.result is None:
        return entry
    r = rec.result
    m = r["metrics"]
    split = next(iter(m["best"]))
    phases = r["phases"]
    entry |= {"metric": m["primary"], "split": split, "best": m["best"][split], "final": m["final"][split],
              "best_epoch": m["best_epoch"], "data": {k: v["n"] for k, v in r["data"].items()},
              "params": r["params"],
              "mean_rank": (sum(r["ranks"].values()) / len(r["ranks"])) if r.get("ranks") else None,
              "cost_s": round(sum(phases[p]["wall_s"] for p in ("search", "train") if p in phases), 3),
              # every phase, every attempt (a preempted run's phases carry the earlier attempts' seconds)
              "cpu_s": round(sum(p.get("cpu_s") or 0.0 for p in phases.values()), 3)}
    return entry


def summarise(entries: list[dict[str, Any]], tasks: list[str], methods: list[str]) -> dict[str, Any]:
    done = [e for e in entries if e["status"] == "completed"]
    per_task: dict[str, dict[str, Any]] = {}
    sizes: dict[str, dict[str, int]] = {}
    for t in tasks:
        per_task[t] = {}
        for m in methods:
            cell = [e for e in done if e["task"] == t and e["method"] == m]
            if not cell:
                per_task[t][m] = None
                continue
            metric = cell[0]["metric"]
            names = sorted({k for e in cell for k in e["best"]})
            per_task[t][m] = {
                "metric": metric, "seeds": sorted(e["seed"] for e in cell),
                "best": stats(e["best"][metric] for e in cell), "final": stats(e["final"][metric] for e in cell),
                "best_all_metrics": {k: stats(e["best"].get(k) for e in cell) for k in names},
                "trainable_params": statistics.median(e["params"]["trainable"] for e in cell),
                "mean_rank": stats(e["mean_rank"] for e in cell),
                "cost_s": stats(e["cost_s"] for e in cell)}
            sizes.setdefault(t, cell[0]["data"])
    complete = [t for t in tasks if all(per_task[t].get(m) for m in methods)]
    average = {}
    for m in methods:
        for select in ("best", "final"):
            vals = [per_task[t][m][select]["median"] for t in complete]
            average.setdefault(m, {})[select] = statistics.fmean(vals) if vals else None
        average[m]["tasks"] = complete
    targets = {}
    unfinished = sum(e["status"] != "completed" for e in entries)
    if "autolora" in methods:
        for ref in TARGET_REFERENCES:
            if ref in methods:
                a, b = average["autolora"]["best"], average[ref]["best"]
                # judged on the finished benchmark only: a partial average is over whichever tasks and
                # seeds happen to be done (the median of one seed of one task can decide it)
                judged = a is not None and b is not None and not unfinished
                targets[f"autolora_ge_{ref}"] = {"autolora": a, ref: b, "met": a >= b if judged else None,
                                                 "unfinished_runs": unfinished}
    paired = {f"{a} - {b}": {t: _as_dict(paired_difference(*_seed_scores(done, t, a, b))) for t in tasks}
              for b in PAIRED[1] if b in methods for a in PAIRED[0] if a in methods}
    return {"per_task": per_task, "average": average, "targets": targets, "data_sizes": sizes, "paired": paired,
            "cost": cost_summary(entries, tasks, methods)}


def cost_summary(entries: list[dict[str, Any]], tasks: list[str], methods: list[str]) -> dict[str, Any]:
    """What the benchmark costs in CPU hours (issue 15 item 4): the finished runs' pipeline CPU
    seconds (the phases of result.json, summed over attempts: a resumed run counts the time it
    spent before its preemption, which the resuming process's own CPU time would miss), and the
    rest estimated as, per unfinished run, the median of its (task, method) cell's finished runs;
    a cell with none is counted, not guessed."""
    done = [e for e in entries if e["status"] == "completed" and e.get("cpu_s") is not None]
    cell_cpu = {(t, m): [e["cpu_s"] for e in done if e["task"] == t and e["method"] == m]
                for t in tasks for m in methods}
    median_cpu = {k: statistics.median(v) for k, v in cell_cpu.items() if v}
    left = [e for e in entries if e["status"] != "completed"]
    estimable = [e for e in left if (e["task"], e["method"]) in median_cpu]
    finished_h = sum(e["cpu_s"] for e in done) / 3600
    rest_h = sum(median_cpu[(e["task"], e["method"])] for e in estimable) / 3600
    return {"planned_runs": len(entries), "finished_runs": len(done), "finished_cpu_h": finished_h,
            "left_runs": len(left), "left_estimated_cpu_h": rest_h, "left_without_estimate": len(left) - len(estimable),
            "median_cpu_s": {f"{t} {m}": v for (t, m), v in median_cpu.items()}}


def markdown(report: dict[str, Any]) -> str:
    st = report["settings"]
    tasks, methods = st["tasks"], st["methods"]
    per_task, average = report["per_task"], report["average"]
    header = ["method"] + [f"{t.removeprefix('glue/').upper()} ({_metric(per_task[t])})" for t in tasks] + ["avg"]
    rows = []
    for m in methods:
        avg = average[m]["best"]
        rows.append([LABELS[m]] + [fmt_stat(per_task[t][m]["best"] if per_task[t][m] else None, 100, 1)
                                   for t in tasks] + ["-" if avg is None else f"{avg * 100:.1f}"])
    sizes = "; ".join(f"{t.removeprefix('glue/').upper()} " + ", ".join(f"{k} {v}" for k, v in n.items())
                      for t, n in report["data_sizes"].items())
    per = "; ".join(f"{t.removeprefix('glue/').upper()} {c['train_samples'] or 'all'} rows, length "
                    f"{c['max_length']}, {c['epochs']} epochs" + (f", {c['pooling']} pooling" if c["pooling"] else "")
                    + (f", LoRA lr {c['lora_lr']}" if c["lora_lr"] is not None else "")
                    for t, c in st["per_task"].items())
    lines = [f"# GLUE quality: {st['model']}", "",
             f"Settings: {per}" + (f" (chosen by the learning curves: {st['settings_file']})" if st["settings_file"] else "")
             + f"; dev rows {st['eval_samples'] or 'all'}, batch {st['batch_size']}, AutoLoRA search "
             f"{st['search_epochs'] or 'of its preset (GLUE: 20)'} epoch(s), seeds {st['seeds']}, "
             f"device {st['device']}." + (f" Extra overrides: {st['overrides']}." if st["overrides"] else ""),
             f"Rows used: {sizes}.", "",
             md_table(header, rows), "",
             "Dev score x100 at the best epoch (the LoRA paper's convention); median [min–max] (n = seeds) "
             "when n > 1. avg = mean over the tasks every method finished "
             f"({', '.join(t.removeprefix('glue/') for t in average[methods[0]]['tasks']) or 'none'}).", ""]
    final_rows = [[LABELS[m]] + [fmt_stat(per_task[t][m]["final"] if per_task[t][m] else None, 100, 1) for t in tasks]
                  + ["-" if average[m]["final"] is None else f"{average[m]['final'] * 100:.1f}"] for m in methods]
    lines += ["Final epoch:", "", md_table(header, final_rows), ""]
    secondary = _secondary(per_task, tasks, methods)
    if secondary:
        lines += ["Other official metrics (best epoch, x100, median over seeds):", "",
                  md_table(["method"] + [c for c, _ in secondary],
                           [[LABELS[m]] + [fmt(m) for _, fmt in secondary] for m in methods]), ""]
    lines += target_lines(report["targets"])
    paired_rows = [[LABELS[a], LABELS[b]] + [describe(_from_dict(report["paired"][f"{a} - {b}"][t])) for t in tasks]
                   for b in PAIRED[1] if b in methods for a in PAIRED[0] if a in methods]
    if paired_rows:
        lines += ["", "Paired per-seed differences (method - reference, dev x100 at the best epoch): mean over the "
                  "shared seeds [95% percentile bootstrap interval, 10,000 resamples; from 5 shared seeds on] (n, seeds up):", "",
                  md_table(["method", "against"] + [t.removeprefix("glue/").upper() for t in tasks], paired_rows)]
    lines += ["", *cost_lines(report["cost"], tasks, methods)]
    failed = [e for e in report["runs"] if e["status"] == "failed"]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {e['task']} {e['method']} seed {e['seed']}: {e.get('error')}"
                                         for e in failed]
    lines += ["", f"Machine: {machine_line(report['machine'])}; at the end {report['loadavg_end']}. "
              f"Benchmark wall time {report['bench_wall_s']:.0f} s ({report['runs_computed']} run(s) computed, "
              f"{report['runs_reused']} reused); {process_wall_text(report)}.",
              "", f"Reproduce: `{report['command'].replace(' --no-compute', '')}`"
              + (" (this report: built with --no-compute from the finished runs)"
                 if "--no-compute" in report["command"] else ""), ""]
    return "\n".join(lines)


def target_lines(targets: dict[str, Any]) -> list[str]:
    """One line per target: both averages x100 to two decimals (one decimal would print a near tie
    such as 52.76 against 52.77 as "52.8 vs 52.8 (MISSED)") and the verdict."""
    lines = []
    for key, t in targets.items():
        verdict = ("met" if t["met"] else "MISSED") if t["met"] is not None else (
            f"not judged: {t['unfinished_runs']} run(s) unfinished" if t.get("unfinished_runs") else "no data")
        ref = key.removeprefix("autolora_ge_")
        a, b = t["autolora"], t[ref]
        value = "-" if a is None or b is None else f"{a * 100:.2f} vs {b * 100:.2f}"
        lines.append(f"- Target AutoLoRA average >= {LABELS[ref]}: {value} ({verdict})")
    return lines


def cost_lines(cost: dict[str, Any], tasks: list[str], methods: list[str]) -> list[str]:
    rows = [[LABELS[m]] + [f"{cost['median_cpu_s'][f'{t} {m}']:.0f}" if f"{t} {m}" in cost["median_cpu_s"] else "-"
                           for t in tasks] for m in methods]
    whole = cost["finished_cpu_h"] + cost["left_estimated_cpu_h"]
    unknown = (f", and {cost['left_without_estimate']} run(s) of cells with no finished run yet"
               if cost["left_without_estimate"] else "")
    return ["Cost: CPU seconds per run (user + system of the pipeline's phases, every attempt; median over the "
            "finished seeds; process start-up, a few seconds, is not in it):", "",
            md_table(["method"] + [t.removeprefix("glue/").upper() for t in tasks], rows), "",
            f"- Finished: {cost['finished_runs']} of {cost['planned_runs']} runs, {cost['finished_cpu_h']:.2f} CPU h.",
            f"- Left: {cost['left_runs']} runs, about {cost['left_estimated_cpu_h']:.2f} CPU h (each at its cell's "
            f"median){unknown}. The whole benchmark: about {whole:.2f} CPU h"
            + (" plus those." if unknown else ".")]


#: bookkeeping entries of a metrics dict, not scores
NOT_METRICS = ("n", "loss")


def _secondary(per_task: dict[str, Any], tasks: list[str], methods: list[str]) -> list[tuple[str, Any]]:
    """Columns for the official metrics besides the primary one (MRPC F1, STS-B Pearson, ...)."""
    columns = []
    for t in tasks:
        cells = [c for c in per_task[t].values() if c]
        names = sorted({k for c in cells for k in c["best_all_metrics"]} - {_metric(per_task[t]), *NOT_METRICS})
        for name in names:
            def fmt(m: str, t: str = t, name: str = name) -> str:
                cell = per_task[t][m]
                return fmt_stat(cell["best_all_metrics"].get(name) if cell else None, 100, 1)
            columns.append((f"{t.removeprefix('glue/').upper()} {name}", fmt))
    return columns


def _seed_scores(done: list[dict[str, Any]], task: str, a: str, b: str) -> tuple[dict[int, float], dict[int, float]]:
    """seed -> primary dev score (best epoch) of methods ``a`` and ``b`` on ``task`` (completed runs)."""
    def scores(m: str) -> dict[int, float]:
        return {e["seed"]: e["best"][e["metric"]] for e in done if e["task"] == task and e["method"] == m}
    return scores(a), scores(b)


def _from_dict(record: dict[str, Any] | None) -> PairedDifference | None:
    """The summary's JSON form of a paired difference, back as one (for the Markdown)."""
    if record is None:
        return None
    return PairedDifference(tuple(record["seeds"]), tuple(record["differences"]), record["mean"],
                            None if record["ci"] is None else tuple(record["ci"]), record["level"])


def _as_dict(diff: Any) -> dict[str, Any] | None:
    return None if diff is None else {"seeds": list(diff.seeds), "differences": list(diff.differences),
                                      "mean": diff.mean, "ci": diff.ci, "level": diff.level, "wins": diff.wins,
                                      "separated": diff.separated}


def _metric(cells: dict[str, Any]) -> str:
    return next((c["metric"] for c in cells.values() if c), "?")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    return run_benchmark("quality", "scripts/bench_quality.py", argv, args, REPO, plan, run_entry,
                         lambda entries, st: summarise(entries, st["tasks"], st["methods"]), markdown,
                         committed=committed_store(args), compute=not args.no_compute)


if __name__ == "__main__":
    sys.exit(main())
