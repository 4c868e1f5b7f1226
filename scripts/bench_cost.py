"""End-to-end cost of AutoLoRA (search + retrain) against AdaLoRA, LoRA r=4 and the LoRA rank grid.

    python scripts/bench_cost.py                          # MiniLM on GLUE RTE, settings below
    python scripts/bench_cost.py --train-samples 256 --epochs 2
    python scripts/bench_cost.py --quick --out /tmp/bench # tiny-roberta smoke run (seconds of compute)

Every method runs through the real pipeline (``python run.py``, one folder per run under
<out>/runs/cost/<settings>/...; finished runs are reused) on the same task, data subsample,
epochs, batch size and max length:

    adalora    one training on the whole training set (rank allocator, orthogonality penalty)
    lora       LoRA r = 4, one training on the whole training set
    lora_grid  LoRA at every rank of --grid trained on D_tr and scored on D_val (AutoLoRA's own
               1:1 split), the best rank retrained on the whole set      cost = grid + retrain
    autolora   the bilevel search on D_tr / D_val for --search-epochs, then the retrain with the
               found ranks on the whole set                              cost = search + retrain
    autolora_converge  the same, the search stopping once its thresholded ranks are stable
               (method.search.patience = --patience, alpha logged every --patience-every
               iterations; at most --search-epochs)                     cost = search + retrain
    autolora_fast  method=autolora_fast as configured (its own search budget: first order, a share
               of D_tr, one epoch, stop on stable ranks; --search-epochs does not apply)
                                                                         cost = search + retrain

Cost = ``phases.search.wall_s + phases.train.wall_s`` of result.json (what ``make tables`` puts
in Table 5; the train phase includes the per-epoch dev evaluation, the grid's search its D_val
evaluations). The process wall and CPU seconds of each run (imports, data and model loading
included) are reported too. Peak memory: CUDA max allocated on GPU, else the run process's peak
resident set. Ratios are per seed, median over seeds: to AdaLoRA (= 1 as in the paper's cost table,
Table 5), to the 5-rank grid and to one LoRA run, each in phase wall seconds and in whole-process
CPU seconds. Targets (issues 9 and 19), judged for every AutoLoRA row: <= 0.35x the grid,
<= 1.5x AdaLoRA, <= 1.2x one LoRA run.

Writes <out>/<name>.json and <out>/<name>.md (name: ``cost``; ``cost_quick`` with --quick).
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from pathlib import Path
from typing import Any

from autolora_exp.bench import (BenchRun, RunRecord, add_committed_argument, add_run_arguments, committed_store, fmt_stat, glue_task, machine_line, md_table,
                                parse_list, parse_with_quick, portable_data_dir, process_wall_text, run_benchmark, stats)
from autolora_exp.errors import UserError

REPO = Path(__file__).resolve().parents[1]
METHODS = ("adalora", "autolora", "autolora_converge", "autolora_fast", "lora", "lora_grid")
#: the AutoLoRA rows the targets are judged on
AUTOLORA_ROWS = ("autolora", "autolora_converge", "autolora_fast")
#: cost targets (issue 9: grid, AdaLoRA; issue 19: one LoRA run): AutoLoRA's cost over the reference's
TARGETS = {"lora_grid": 0.35, "adalora": 1.5, "lora": 1.2}
#: the references every row's cost is divided by (summary keys ratio_to_<ref>, cpu_ratio_to_<ref>)
REFERENCES = ("adalora", "lora_grid", "lora")

#: --quick: tiny-roberta on a few rows of RTE, four optimiser steps per training and per search
#: (AdaLoRA needs >= 3: with 2 its final-mask phase starts before any sensitivity exists)
QUICK = dict(model="tiny-roberta", task="rte", train_samples=32, eval_samples=16, max_length=32, epochs=1,
             search_epochs=1, batch_size=8, grid="1,2", seeds="0", override=["train.max_steps=4"], patience_every=1,
             committed=None)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--task", default="rte", help="GLUE task (default rte)")
    p.add_argument("--grid", default="1,2,4,8,16", help="ranks of the LoRA grid (default 1,2,4,8,16)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"subset of {','.join(METHODS)}")
    p.add_argument("--autolora-override", action="append", default=[],
                   help="extra Hydra override for AutoLoRA only, e.g. method.search.reuse_lookahead_grad=true")
    p.add_argument("--patience", type=int, default=3, help="autolora_converge: method.search.patience (default 3)")
    p.add_argument("--patience-every", type=int, default=4,
                   help="autolora_converge: method.search.log_every, iterations between alpha logs (default 4)")
    add_run_arguments(p, REPO, epochs=3, stem="cost")
    add_committed_argument(p, REPO)
    return parse_with_quick(p, argv, QUICK, "cost")


def plan(args: argparse.Namespace) -> tuple[list[BenchRun], dict[str, Any]]:
    """The runs of the benchmark, seed-major (each seed runs every method back to back)."""
    task = glue_task(args.task)
    methods = parse_list(args.methods, "--methods")
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UserError(f"--methods {bad} unknown; accepted: {', '.join(METHODS)}")
    grid = parse_list(args.grid, "--grid", int)
    seeds = parse_list(args.seeds, "--seeds", int)
    if not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a folder; point it at the official GLUE files "
                        "(../shared/data/glue beside the repository)")
    from autolora_exp.device import resolve_device

    device = str(resolve_device(args.device))  # auto resolved here: the runs' configs name the device
    search_epochs = args.search_epochs or args.epochs
    common = [f"task={task}", f"model={args.model}", f"task.data_dir={portable_data_dir(args.data_dir, REPO)}",
              f"task.max_length={args.max_length}", f"train.epochs={args.epochs}",
              f"train.batch_size={args.batch_size}", f"device={device}", "logger.mode=disabled",
              "train.progress=false"]
    common += [f"task.max_train_samples={args.train_samples or 'null'}",
               f"task.max_eval_samples={args.eval_samples or 'null'}", *args.override]
    per_method = {
        "adalora": ["method=adalora"],
        "autolora": ["method=autolora", f"method.search.epochs={search_epochs}", *args.autolora_override],
        "autolora_converge": ["method=autolora", f"method.search.epochs={search_epochs}", *args.autolora_override,
                              f"method.search.patience={args.patience}",
                              f"method.search.log_every={args.patience_every}"],
        "autolora_fast": ["method=autolora_fast", *args.autolora_override],
        "lora": ["method=lora", "method.r=4"],
        "lora_grid": ["method=lora_grid", f"method.ranks=[{','.join(map(str, grid))}]"],
    }
    extra = args.override + args.autolora_override
    tag = (f"{device}_n{args.train_samples or 'all'}_v{args.eval_samples or 'all'}_L{args.max_length}"
           f"_e{args.epochs}_s{search_epochs}_b{args.batch_size}")
    if extra:  # different extra overrides never share (and overwrite) a folder
        tag += "_x" + hashlib.sha1("\n".join(extra).encode()).hexdigest()[:8]
    root = args.out / "runs" / "cost" / tag
    runs = [BenchRun({"method": m, "seed": s}, common + per_method[m] + [f"seed={s}"],
                     root / task / args.model / m / f"seed{s}")
            for s in seeds for m in methods]
    settings = {"task": task, "model": args.model, "data_dir": portable_data_dir(args.data_dir, REPO),
                "train_samples": args.train_samples, "eval_samples": args.eval_samples,
                "max_length": args.max_length, "epochs": args.epochs, "search_epochs": search_epochs,
                "batch_size": args.batch_size, "grid": grid, "seeds": seeds, "methods": methods, "device": device,
                "overrides": args.override, "autolora_overrides": args.autolora_override, "runs_dir": str(root),
                "patience": args.patience, "patience_every": args.patience_every,
                "quick": args.quick}
    return runs, settings


def run_cost(result: dict[str, Any]) -> dict[str, Any]:
    """Seconds of the training phases and the peak memory of one run (from its result.json)."""
    phases = result["phases"]
    search_s = phases.get("search", {}).get("wall_s", 0.0)
    train_s = phases["train"]["wall_s"]
    mem_key = "peak_mem_mb" if any("peak_mem_mb" in p for p in phases.values()) else "peak_rss_mb"
    peaks = [p[mem_key] for p in phases.values() if mem_key in p]
    baseline = phases.get("data", {}).get(mem_key) if mem_key == "peak_rss_mb" else 0.0
    peak = max(peaks) if peaks else None
    search = result.get("search") or {}
    return {"search_s": search_s, "train_s": train_s, "cost_s": round(search_s + train_s, 3),
            "search_steps": search.get("steps", 0), "train_steps": phases["train"].get("steps"),
            "passes_per_iteration": search.get("passes_per_iteration"),
            "peak_mb": peak, "memory": "cuda_max_allocated" if mem_key == "peak_mem_mb" else "cpu_peak_rss",
            # CPU: the resident-set high-water mark is process-wide; minus its value after loading
            # the data it is what models and training added
            "peak_extra_mb": round(peak - baseline, 1) if peak is not None and baseline is not None else None}


def run_entry(rec: RunRecord) -> dict[str, Any]:
    entry = rec.entry()
    if rec.result is None:
        return entry
    r = rec.result
    primary = r["metrics"]["primary"]
    first = next(iter(r["metrics"]["best"]))
    search = r.get("search") or {}
    entry |= {"cost": run_cost(r), "params": r["params"], "data": {k: v["n"] for k, v in r["data"].items()},
              "metric": {"name": primary, "split": first, "best": r["metrics"]["best"][first][primary],
                         "final": r["metrics"]["final"][first][primary]},
              "ranks_mean": (sum(r["ranks"].values()) / len(r["ranks"])) if r.get("ranks") else None}
    if search:
        entry["search"] = {"steps": search.get("steps"), "passes_per_iteration": search.get("passes_per_iteration"),
                           "mean_rank": search.get("mean_rank"), "split": search.get("split"),
                           "converged_at": search.get("converged_at"), "stop_reason": search.get("stop_reason"),
                           "ranks": search.get("ranks")}
    if rec.key["method"] == "lora_grid":
        grid = _read_search_json(rec.folder)
        entry["grid"] = {"best_rank": grid.get("best_rank"), "per_rank": grid.get("per_rank")}
    return entry


def _read_search_json(folder: Path) -> dict[str, Any]:
    import json

    try:
        return json.loads((folder / "search.json").read_text())
    except (OSError, ValueError):
        return {}


def summarise(entries: list[dict[str, Any]], methods: list[str], batch_size: int) -> dict[str, Any]:
    done = [e for e in entries if e["status"] == "completed"]
    by = {(e["method"], e["seed"]): e for e in done}
    seeds = sorted({e["seed"] for e in done})

    def per_seed(method: str, fn) -> list[float]:
        return [fn(by[(method, s)], s) for s in seeds if (method, s) in by]

    def ratio(method: str, ref: str, what: str = "cost_s", part: str = "cost") -> list[float]:
        return [by[(method, s)][part][what] / by[(ref, s)][part][what] for s in seeds
                if (method, s) in by and (ref, s) in by and by[(method, s)][part].get(what) is not None
                and by[(ref, s)][part].get(what)]

    summary: dict[str, Any] = {}
    for m in methods:
        summary[m] = {k: stats(per_seed(m, lambda e, s, k=k: e["cost"][k]))
                      for k in ("cost_s", "search_s", "train_s", "peak_mb", "peak_extra_mb")}
        summary[m]["process_wall_s"] = stats(per_seed(m, lambda e, s: e["process"].get("wall_s")))
        summary[m]["process_cpu_s"] = stats(per_seed(m, lambda e, s: e["process"].get("cpu_s")))
        for ref in REFERENCES:
            summary[m][f"ratio_to_{ref}"] = stats(ratio(m, ref))
            # whole-process CPU seconds: a second view, less sensitive to other jobs on shared cores
            summary[m][f"cpu_ratio_to_{ref}"] = stats(ratio(m, ref, "cpu_s", "process"))
        summary[m]["memory_ratio_to_adalora"] = stats(ratio(m, "adalora", "peak_mb"))
        summary[m]["metric_best"] = stats(per_seed(m, lambda e, s: e["metric"]["best"]))

    targets = {}
    for row in (r for r in AUTOLORA_ROWS if r in methods):
        for ref, target in TARGETS.items():
            r = stats(ratio(row, ref))
            targets[f"{row}_vs_{ref}"] = {"ratio_median": r["median"] if r else None, "ratio": r, "target": target,
                                          "met": (r["median"] <= target) if r else None,
                                          "process_cpu_ratio": stats(ratio(row, ref, "cpu_s", "process"))}
    return {"summary": summary, "targets": targets, "diagnosis": diagnose(by, seeds, batch_size),
            "converge": _converge(by, seeds)}


def _converge(by: dict[tuple[str, int], dict[str, Any]], seeds: list[int]) -> list[dict[str, Any]]:
    """Per seed and cheaper AutoLoRA row: where its search stopped, and how far its ranks are from
    the full search's (mean |rank difference| per layer, layers with the same rank)."""
    from autolora_exp.methods.autolora.search import rank_distance

    out = []
    for row in ("autolora_converge", "autolora_fast"):
        for s in seeds:
            a, c = by.get(("autolora", s)), by.get((row, s))
            if not a or not c or not a.get("search") or not c.get("search"):
                continue
            full, early = a["search"]["ranks"] or {}, c["search"]["ranks"] or {}
            out.append({"row": row, "seed": s, "converged_at": c["search"]["converged_at"],
                        "stop_reason": c["search"].get("stop_reason"), "steps": c["search"]["steps"],
                        "full_steps": a["search"]["steps"], "mean_rank": c["search"]["mean_rank"],
                        "full_mean_rank": a["search"]["mean_rank"],
                        "rank_distance": rank_distance(full, early) if full.keys() == early.keys() else None,
                        "layers_same_rank": sum(early.get(k) == v for k, v in full.items()), "layers": len(full)})
    return out


def diagnose(by: dict[tuple[str, int], dict[str, Any]], seeds: list[int], batch_size: int) -> dict[str, Any]:
    """Where AutoLoRA's cost goes, and how many search epochs would meet each target.

    Linear model per seed: cost(S) = train_s + S * (search seconds per search epoch), the
    search's fixed costs (model load, heatmap) counted as per-epoch work (conservative); then
    S_max = (target * reference cost - train_s) / (search seconds per epoch).
    """
    out: dict[str, list[float]] = {"search_share": [], "search_s_per_iteration": [], "train_s_per_step": [],
                                   "iteration_over_step": [], "search_epochs_measured": []}
    s_max: dict[str, list[float]] = {ref: [] for ref in TARGETS}
    for s in seeds:
        a = by.get(("autolora", s))
        if not a or not a["cost"]["search_steps"]:
            continue
        c = a["cost"]
        d_tr_rows = ((a.get("search") or {}).get("split") or {}).get("d_tr", {}).get("rows")
        per_iter = c["search_s"] / c["search_steps"]
        per_step = c["train_s"] / c["train_steps"] if c["train_steps"] else math.nan
        out["search_share"].append(c["search_s"] / c["cost_s"])
        out["search_s_per_iteration"].append(per_iter)
        out["train_s_per_step"].append(per_step)
        out["iteration_over_step"].append(per_iter / per_step)
        if d_tr_rows:
            iters_per_epoch = math.ceil(d_tr_rows / batch_size)
            out["search_epochs_measured"].append(c["search_steps"] / iters_per_epoch)
            for ref, target in TARGETS.items():
                if (ref, s) in by:
                    budget = target * by[(ref, s)]["cost"]["cost_s"] - c["train_s"]
                    s_max[ref].append(budget / (per_iter * iters_per_epoch))
    passes = sorted({by[("autolora", s)]["cost"]["passes_per_iteration"] for s in seeds if ("autolora", s) in by}
                    - {None})
    return {**{k: stats(v) for k, v in out.items()}, "passes_per_iteration": passes,
            "search_epochs_to_meet": {f"autolora_vs_{ref}": stats(v) for ref, v in s_max.items()}}


LABELS = {"adalora": "AdaLoRA", "autolora": "AutoLoRA (search + retrain)",
          "autolora_converge": "AutoLoRA, search stopped on stable ranks",
          "autolora_fast": "AutoLoRA, `method=autolora_fast`", "lora": "LoRA r=4",
          "lora_grid": "LoRA + rank grid (grid on D_tr + retrain)"}


def markdown(report: dict[str, Any]) -> str:
    st, summary = report["settings"], report["summary"]
    rows = []
    for m in st["methods"]:
        s = summary[m]
        rows.append([LABELS[m], fmt_stat(s["cost_s"], digits=1), fmt_stat(s["search_s"], digits=1),
                     fmt_stat(s["train_s"], digits=1),
                     *(f"{fmt_stat(s[f'ratio_to_{ref}'])} ({fmt_stat(s[f'cpu_ratio_to_{ref}'])})"
                       for ref in REFERENCES),
                     fmt_stat(s["process_wall_s"], digits=1), fmt_stat(s["process_cpu_s"], digits=1),
                     fmt_stat(s["peak_mb"], digits=0), fmt_stat(s["peak_extra_mb"], digits=0),
                     fmt_stat(s["memory_ratio_to_adalora"]), fmt_stat(s["metric_best"], 100, 1),
                     _loads(report["runs"], m)])
    header = ["method", "cost s", "search s", "train s", "/ AdaLoRA (CPU)", "/ grid (CPU)", "/ LoRA (CPU)",
              "process wall s", "process CPU s", "peak MB", "peak extra MB", "memory / AdaLoRA", "dev metric x100 (best epoch)",
              "1-min load before → after"]
    lines = [f"# End-to-end cost: {st['task']} | {st['model']}", "",
             f"Settings: train rows {st['train_samples'] or 'all'}, dev rows {st['eval_samples'] or 'all'}, "
             f"max length {st['max_length']}, batch {st['batch_size']}, {st['epochs']} epoch(s) for every training "
             f"(each grid rank too), AutoLoRA search {st['search_epochs']} epoch(s) over D_tr, grid {st['grid']}, "
             f"seeds {st['seeds']}, device {st['device']}."
             + (f" Extra overrides: {st['overrides']}." if st["overrides"] else "")
             + (f" AutoLoRA overrides: {st['autolora_overrides']}." if st["autolora_overrides"] else ""),
             "", md_table(header, rows), "",
             "Cost = search + train phase wall seconds (result.json); the ratios divide it by the reference's, "
             "in brackets the same ratio of whole-process CPU seconds; median [min–max] over seeds when n > 1. "
             f"Peak memory: {_memory_note(report)}.", ""]
    for key, t in report["targets"].items():
        verdict = "no data" if t["met"] is None else ("met" if t["met"] else "MISSED")
        value = "-" if t["ratio_median"] is None else f"{t['ratio_median']:.2f}x"
        cpu = t.get("process_cpu_ratio")
        cpu_note = f"; whole-process CPU seconds: {cpu['median']:.2f}x" if cpu else ""
        lines.append(f"- Target {key.replace('_', ' ')} <= {t['target']}x: {value} ({verdict}{cpu_note})")
    for c in report.get("converge", []):
        distance = "-" if c.get("rank_distance") is None else f"{c['rank_distance']:.2f}"
        lines.append(f"- {LABELS[c.get('row', 'autolora_converge')]}, seed {c['seed']}: the search stopped at "
                     f"iteration {c['steps']} (full search {c['full_steps']}; "
                     f"{c.get('stop_reason') or 'schedule end, never stable'}); "
                     f"mean rank {c['mean_rank']:.2f} vs {c['full_mean_rank']:.2f} for the full search, "
                     f"{c['layers_same_rank']} of {c['layers']} layers with the same rank, mean |rank difference| "
                     f"{distance}")
    d = report["diagnosis"]
    if d.get("search_share"):
        lines += ["", "AutoLoRA breakdown: search "
                  f"{d['search_share']['median'] * 100:.0f}% of its cost; one search iteration "
                  f"{d['search_s_per_iteration']['median']:.3f} s vs one retrain step (eval included) "
                  f"{d['train_s_per_step']['median']:.3f} s = {d['iteration_over_step']['median']:.2f}x "
                  f"({d['passes_per_iteration']} forward+backward passes per iteration)."]
        for key, s in d["search_epochs_to_meet"].items():
            if s:
                lines.append(f"- {key.replace('_', ' ')} target would need search epochs <= "
                             f"{s['median']:.2f} (linear extrapolation from this run; retrain unchanged)")
    failed = [e for e in report["runs"] if e["status"] != "completed"]
    if failed:
        lines += ["", "Failed runs:"] + [f"- {e['method']} seed {e['seed']}: {e.get('error')}" for e in failed]
    m = report["machine"]
    lines += ["", f"Machine: {machine_line(m)}; at the end {report['loadavg_end']}. "
              f"Benchmark wall time {report['bench_wall_s']:.0f} s ({report['runs_computed']} run(s) computed, "
              f"{report['runs_reused']} reused); {process_wall_text(report)}.",
              "", f"Reproduce: `{report['command']}`", ""]
    return "\n".join(lines)


def _loads(runs: list[dict[str, Any]], method: str) -> str:
    """The 1-minute load average before and after each run of ``method`` (timings depend on it)."""
    out = []
    for e in runs:
        p = e.get("process") or {}
        if e["method"] == method and p.get("loadavg_before") and p.get("loadavg_after"):
            out.append(f"{p['loadavg_before'][0]:.1f} → {p['loadavg_after'][0]:.1f}")
    return ", ".join(out) or "-"


def _memory_note(report: dict[str, Any]) -> str:
    kinds = {e["cost"]["memory"] for e in report["runs"] if e.get("cost")}
    if kinds == {"cuda_max_allocated"}:
        return "torch.cuda.max_memory_allocated over the phases"
    return ("the run process's peak resident set (CPU; includes Python, torch and the data); "
            "'extra' = minus its value after data loading")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    return run_benchmark("cost", "scripts/bench_cost.py", argv, args, REPO, plan, run_entry,
                         lambda entries, st: summarise(entries, st["methods"], st["batch_size"]), markdown,
                         committed=committed_store(args))


if __name__ == "__main__":
    sys.exit(main())
