"""The search budget curve (issue 19): ranks, retrained score and cost of shorter AutoLoRA searches.

    python scripts/bench_search_budget.py                    # MiniLM / STS-B at issue 15's setting, seeds 0,1,2
    python scripts/bench_search_budget.py --retrain-budgets none      # the searches and references only
    python scripts/bench_search_budget.py --quick --out /tmp/bench --committed none   # tiny-roberta smoke run

Runs, in this order (each through run.py in its own folder, finished ones reused or imported
from the committed store docs/bench/runs, and exported to it as they finish):

    1-2. per seed, back to back: the full search (``method=autolora``, --search-epochs over D_tr,
       alpha every --log-every iterations) with its retrain, its ranks at every alpha log kept
       (search_ranks.json, committed); ``method=autolora_fast``; LoRA r=4 (the cost reference)
    3. for each of --retrain-budgets, per seed: the retrain of the ranks the full search had after
       that share of its iterations (``method=lora method.rank_pattern_file=...``, the retrain an
       AutoLoRA run with those ranks does); skipped when they equal the full search's ranks

A retrain's config names its rank file, ``<out>/runs/cost/<settings>/ranks/<digest>.json`` relative
to the repository, so committed retrains are found again with the default --out (outputs/bench)
only; another --out recomputes them (the full searches, autolora_fast and LoRA are found anyway).

A shorter search is the prefix of the full one, so the ranks of every budget come from the full
search's history without rerunning it (see src/autolora_exp/methods/autolora/search_budget.py,
which also defines every figure). Runs 1-2 use scripts/bench_cost.py's folders and overrides:
bench_cost.py at the same settings (its command is in the report) reuses them and adds the grid
and AdaLoRA; a finished grid run there is read back here (never computed here) and the "/ grid"
column divides by it, else by an estimate.

Writes <out>/<name>.json, .md and .png (name: ``search_budget``; ``search_budget_quick`` with --quick).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path
from typing import Any

from autolora_exp.methods.autolora import search_budget as sb
from autolora_exp.bench import (BenchRun, RunRecord, add_committed_argument, add_run_arguments, committed_store,
                                export_committed, fmt_stat, machine_info, machine_line, parse_list, parse_with_quick, process_wall_text,
                                run_one, write_report)
from autolora_exp.errors import UserError
from autolora_exp.methods.autolora.rank_pattern import save_rank_pattern_json

REPO = Path(__file__).resolve().parents[1]
SCRIPT = "scripts/bench_search_budget.py"

#: issue 15's setting where MiniLM learns STS-B (docs/bench/curves.md): 512 rows, length 64, mean
#: pooling, lr 5e-4 (LoRA's default), batch 16, 7 epochs; the authors' 20 search epochs
DEFAULTS = dict(task="stsb", train_samples=512, max_length=64, epochs=7, search_epochs=20, batch_size=16)
QUICK = dict(model="tiny-roberta", task="rte", train_samples=32, eval_samples=16, max_length=32, epochs=1,
             search_epochs=2, batch_size=8, seeds="0", budgets="0.5", retrain_budgets="0.5", log_every=1,
             pooling="none")


def _bench_cost() -> Any:
    spec = importlib.util.spec_from_file_location("bench_cost", REPO / "scripts" / "bench_cost.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--task", help="GLUE task (default stsb)")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--budgets", default="0.0125,0.025,0.05,0.1,0.25,0.5",
                   help="search budgets as shares of the full search, each a multiple of log_every / its "
                        "iterations (default 0.0125,0.025,0.05,0.1,0.25,0.5; the full search is always in)")
    p.add_argument("--retrain-budgets", default="0.05,0.025,0.25,0.1,0.5,0.0125",
                   help="budgets whose ranks are retrained, in this order ('none': none; default "
                        "0.05,0.025,0.25,0.1,0.5,0.0125: every budget)")
    p.add_argument("--log-every", type=int, default=4, help="alpha logged every N search iterations (default 4)")
    p.add_argument("--pooling", default="mean", help="model.pooling (default mean; 'none': the model's default)")
    add_run_arguments(p, REPO, epochs=DEFAULTS["epochs"], stem="search_budget")
    p.add_argument("--no-compute", action="store_true",
                   help="start no run: report what is finished here or in the committed store, list the rest")
    add_committed_argument(p, REPO)
    p.set_defaults(**DEFAULTS)
    return parse_with_quick(p, argv, QUICK, "search_budget")


def plan(args: argparse.Namespace, cost: Any) -> tuple[list[BenchRun], dict[str, Any]]:
    """Runs 1-2 (full search, autolora_fast, LoRA r=4) through bench_cost's plan, seed by seed: a
    stopped benchmark leaves complete paired comparisons of its first seeds."""
    seeds = parse_list(args.seeds, "--seeds", int)
    budgets = parse_list(args.budgets, "--budgets", float)
    retrain = [] if args.retrain_budgets.lower() == "none" else parse_list(args.retrain_budgets,
                                                                          "--retrain-budgets", float)
    if args.log_every < 1:
        raise UserError(f"--log-every {args.log_every} is not accepted; use an integer >= 1")
    missing = [b for b in retrain if b not in budgets]
    if missing:
        raise UserError(f"--retrain-budgets {missing} are not among --budgets {budgets}")
    pooling = [] if args.pooling.lower() == "none" else [f"model.pooling={args.pooling}"]
    ns = argparse.Namespace(**vars(args))
    # lora_grid: only reused (bench_cost.py at the same settings runs it), never computed here
    ns.methods, ns.grid, ns.seeds = "autolora,autolora_fast,lora,lora_grid", "1,2,4,8,16", args.seeds
    ns.override = [*pooling, *args.override]
    ns.autolora_override = [f"method.search.log_every={args.log_every}"]
    ns.patience, ns.patience_every = 3, 4  # bench_cost's defaults (its autolora_converge row, not run here)
    runs, settings = cost.plan(ns)  # seed-major: each seed's full search, autolora_fast and LoRA back to back
    settings |= {"budgets": budgets, "retrain_budgets": retrain, "log_every": args.log_every,
                 "pooling": args.pooling, "seeds": seeds,
                 "bench_cost_command": "python scripts/bench_cost.py " + " ".join(_cost_argv(args, pooling))}
    return runs, settings


def _cost_argv(args: argparse.Namespace, pooling: list[str]) -> list[str]:
    """bench_cost.py's flags that reuse these runs (and add the grid and AdaLoRA)."""
    argv = [f"--task {args.task}", f"--train-samples {args.train_samples or 'none'}", f"--max-length {args.max_length}",
            f"--epochs {args.epochs}", f"--search-epochs {args.search_epochs}", f"--batch-size {args.batch_size}",
            f"--seeds {args.seeds}", f"--autolora-override method.search.log_every={args.log_every}"]
    argv += [f"--override {o}" for o in [*pooling, *args.override]]
    if args.eval_samples:
        argv.append(f"--eval-samples {args.eval_samples}")
    if args.model != "minilm":
        argv.append(f"--model {args.model}")
    return argv


def retrain_runs(args: argparse.Namespace, settings: dict[str, Any], lora_runs: dict[int, BenchRun],
                 full: dict[int, RunRecord], paths: dict[int, dict[str, Any]]) -> list[BenchRun]:
    """Run 3: per --retrain-budgets (in order) and seed, LoRA with the truncated search's ranks."""
    root = Path(settings["runs_dir"])
    runs, seen = [], set()
    for budget in settings["retrain_budgets"]:
        for seed in settings["seeds"]:
            if seed not in paths or full.get(seed) is None or full[seed].result is None:
                continue
            path = paths[seed]
            ranks = sb.ranks_at(path, sb.budget_step(budget, path["total_steps"], path["log_every"]))
            if ranks == full[seed].result["search"]["ranks"]:
                continue  # the full run's retrain is this retrain
            digest = sb.ranks_digest(ranks)
            if (seed, digest) in seen:
                continue
            seen.add((seed, digest))
            rank_file = save_rank_pattern_json(ranks, root / "ranks" / f"{digest}.json")
            overrides = [o for o in lora_runs[seed].overrides if not o.startswith("seed=")]
            overrides += [f"method.rank_pattern_file={os.path.relpath(rank_file, REPO)}", f"seed={seed}"]
            task_model = lora_runs[seed].folder.relative_to(root).parent.parent  # <task>/<model>
            runs.append(BenchRun({"method": "lora_ranks", "seed": seed, "ranks": digest, "budget": budget},
                                 overrides, root / task_model / "lora_ranks" / digest / f"seed{seed}"))
    return runs


def run_entry(rec: RunRecord) -> dict[str, Any]:
    entry = rec.entry()
    if rec.result is None:
        return entry
    r = rec.result
    return entry | {"score": sb.score(r), "score_final": sb.score(r, "final"), "ranks": r.get("ranks"),
                    "phases": {k: {x: v.get(x) for x in ("wall_s", "cpu_s", "steps")} for k, v in r["phases"].items()},
                    "search": {k: (r.get("search") or {}).get(k) for k in
                               ("steps", "passes_per_iteration", "mean_rank", "converged_at", "stop_reason")}
                    if r.get("search") else None}


def build_summary(records: list[RunRecord], settings: dict[str, Any], paths: dict[int, dict[str, Any]],
                  val_fraction: float = 0.5) -> dict[str, Any]:
    done = [r for r in records if r.result is not None]
    by = {m: {r.key["seed"]: r.result for r in done if r.key["method"] == m}
          for m in ("autolora", "autolora_fast", "lora", "lora_grid")}
    retrains = {(r.key["seed"], r.key["ranks"]): r.result for r in done if r.key["method"] == "lora_ranks"}
    grid = sb.grid_cpu(by["lora_grid"])
    rows = sb.points(by["autolora"], paths, retrains, by["autolora_fast"], by["lora"], settings["budgets"],
                     val_fraction, grid_cpu_s=grid["median"] if grid else None)
    return {"rows": rows, **sb.summarise(rows, by["lora"], by["lora_grid"]),
            "paths": {str(s): p for s, p in paths.items()}}


def markdown(report: dict[str, Any]) -> str:
    st = report["settings"]
    lines = [f"# Search budget curve: {st['task']} | {st['model']}", "",
             f"Settings: {st['train_samples'] or 'all'} seeded training rows, dev rows {st['eval_samples'] or 'all'}, "
             f"max length {st['max_length']}, batch {st['batch_size']}, pooling {st['pooling']}, retrain {st['epochs']} "
             f"epochs (LoRA lr 5e-4), the full search `method=autolora` {st['search_epochs']} epochs over D_tr "
             f"(alpha every {st['log_every']} iterations), seeds {st['seeds']}, device {st['device']}. "
             "Budgets are shares of the full search's iterations: its ranks at that iteration (a shorter search "
             "is a prefix of the full one), retrained with `method=lora method.rank_pattern_file` (the retrain "
             "AutoLoRA does with those ranks).", ""]
    if report.get("points"):
        lines += [sb.markdown_table(report), ""]
        lo, hi = report["full_score_range"]
        lora = report["lora_score"]
        lines += ["Median [min–max] over seeds (n = seeds with the figure). Score: the primary dev metric x100 at "
                  "the best epoch. Search CPU / wall seconds of a budget: that share of the full search phase's "
                  "measured seconds; search + retrain: plus the retrain's measured train phase; / LoRA: over "
                  "LoRA r=4's train phase (same seed), phase CPU seconds (wall in its own column); / 5-rank grid: "
                  + _grid_text(report) + " item 3: retrained median at or above the full search's lowest seed, "
                  f"<= {sb.TARGET_LORA}x LoRA and <= {sb.TARGET_GRID}x the grid.", ""]
        if lo is not None:
            lines.append(f"- Full search's retrained score over seeds: {lo * 100:.1f} to {hi * 100:.1f}; LoRA r=4: "
                         f"{fmt_stat(lora, 100, 1)}.")
        missing = [(p["point"], p["not_retrained_seeds"]) for p in report["points"] if p["not_retrained_seeds"]]
        for point, seeds in missing:
            lines.append(f"- Not run (no retrained score): budget {point}, seeds {seeds}.")
        lines.append("")
        lines += [f"![search budget curve]({report['png']})", ""]
    for status, title in (("failed", "Failed runs"), ("not_run", "Not run (no finished result here or in the store)")):
        listed = [e for e in report["runs"] if e["status"] == status]
        if listed:
            lines += [f"{title}:", ""] + [f"- {_run_name(e)}: {e.get('error')}" for e in listed] + [""]
    m = report["machine"]
    lines += [f"Machine: {machine_line(m)}; at the end {report['loadavg_end']}. Benchmark wall time "
              f"{report['bench_wall_s']:.0f} s ({report['runs_computed']} run(s) computed, {report['runs_reused']} "
              f"reused, {report.get('runs_not_run', 0)} not run); {process_wall_text(report)}.", "",
              f"Reproduce: `{report['command'].replace(' --no-compute', '')}`"
              + (" (this report: built with --no-compute from the finished runs)" if "--no-compute" in report["command"]
                 else "") + f"; the measured grid and AdaLoRA beside these runs: `{st['bench_cost_command']}`.", ""]
    return "\n".join(lines)


def _grid_text(report: dict[str, Any]) -> str:
    grid = report["grid"]
    if grid["measured"]:
        return (f"over the measured grid (`method=lora_grid`, its search + train phase CPU seconds, "
                f"{fmt_stat(grid['measured'], digits=0)} over seeds {grid['seeds']}; run by the bench_cost "
                "command below).")
    return (f"the CPU ratio to LoRA over {1 + sb.GRID_RANKS * 0.5:g} LoRA trainings (an estimate: one LoRA "
            "run on D_tr per rank, then the retrain; no grid run at these settings yet: the bench_cost command "
            "below measures it).")


def _run_name(entry: dict[str, Any]) -> str:
    if entry["method"] == "lora_ranks":
        return f"retrain of budget {sb.budget_label(entry['budget'])}'s ranks ({entry['ranks']}), seed {entry['seed']}"
    if entry["method"] == "lora_grid":
        return f"the 5-rank grid, seed {entry['seed']} (bench_cost.py runs it, not this benchmark)"
    return f"{entry['method']} seed {entry['seed']}"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    committed = committed_store(args)
    cost = _bench_cost()
    try:
        runs, settings = plan(args, cost)
        machine, start = machine_info(), time.perf_counter()
        records: list[RunRecord] = []
        paths: dict[int, dict[str, Any]] = {}

        def report() -> int:
            entries = [run_entry(r) for r in records]
            summary = build_summary(records, settings, paths)
            png = args.out / f"{args.name}.png"
            if summary["points"]:
                sb.plot(summary, png, f"search budget curve: {settings['task']} | {settings['model']}")
            summary["png"] = png.name
            return write_report("search_budget", SCRIPT, argv, settings, machine, start, records, entries, summary,
                                markdown, args.out, args.name, echo=False)

        def execute(run: BenchRun, compute: bool = True) -> RunRecord:
            rec = run_one(run, REPO, committed=committed, compute=compute and not args.no_compute)
            if rec.key["method"] == "autolora" and rec.result is not None:
                path = sb.write_search_ranks(rec.folder)
                if path is not None:
                    paths[rec.key["seed"]] = path
            if committed is not None:
                export_committed([rec], *committed)
            records.append(rec)
            report()  # a partial report after every run
            return rec

        full = {}
        for run in runs:  # seed by seed: full search, autolora_fast, LoRA (and a finished grid run)
            rec = execute(run, compute=run.key["method"] != "lora_grid")
            if run.key["method"] == "autolora":
                full[run.key["seed"]] = rec
        lora_runs = {r.key["seed"]: r for r in runs if r.key["method"] == "lora"}
        for run in retrain_runs(args, settings, lora_runs, full, paths):
            execute(run)
        status = report()  # not-run runs are listed, not failures
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print((args.out / f"{args.name}.md").read_text(encoding="utf-8"))
    return status


if __name__ == "__main__":
    sys.exit(main())
