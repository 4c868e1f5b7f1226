"""Learning curves: the dev metric against optimiser steps, and the setting each task needs.

Each point of a curve is a real run (``python run.py``, see :mod:`autolora_exp.bench`): one run
per (task, setting, seed) trains LoRA for E epochs over a fixed seeded subset of the training set
and scores the whole dev set after every epoch, so its result.json holds the curve

    curve = [(step_e, s_e) for e = 1..E],   step_e = e * ceil(n / batch)

(the learning rate follows one linear warm-up/decay schedule over all E epochs: the point at
epoch e is not a run of e epochs, whose schedule would decay sooner).

Plateau rule, per curve (``tol`` on the metric's own 0-1 scale)::

    best         = max_e s_e
    e_p          = min { e : s_e >= best - tol }          (the plateau epoch)
    plateaued    = E - e_p >= patience                    (the last `patience` epochs add < tol)
    learned      = best >= chance + margin                (chance: the dev majority-class share
                                                           for accuracy, 0 for MCC / Spearman / F1)

Choice, per task: among the curves that learned and plateaued, and whose best is within ``tol``
of the task's best over all its curves (a small setting that plateaus lower has not reached the
task's plateau), the one with the least compute to its plateau, ``step_{e_p} * max_length``
(batch is fixed; ties: the higher best). A task without such a curve is reported with its curves
as "cannot learn here" (no curve learned) or "still rising" (none plateaued), never dropped.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from pathlib import Path
from typing import Any

#: metrics whose chance level is 0 (correlations); accuracy's is the majority-class share
ZERO_CHANCE = ("matthews_correlation", "spearmanr", "pearson", "f1")


def curve_of(result: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """(primary metric, [{"epoch", "step", "score", "train_loss"}]) of a finished run's result.json."""
    metrics = result["metrics"]
    primary = metrics["primary"]
    points = []
    for ep in metrics["per_epoch"]:
        split = next(iter(ep["eval"]))  # the first eval split: the reported dev split
        points.append({"epoch": ep["epoch"], "step": ep["step"], "score": ep["eval"][split][primary],
                       "train_loss": ep.get("train_loss")})
    return primary, points


def median_curve(curves: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per epoch, the median score over seeds (the epochs all seeds have)."""
    epochs = min(len(c) for c in curves)
    return [{"epoch": curves[0][i]["epoch"], "step": curves[0][i]["step"],
             "score": statistics.median(c[i]["score"] for c in curves),
             "train_loss": curves[0][i]["train_loss"] if len(curves) == 1 else None}
            for i in range(epochs)]


def plateau(curve: list[dict[str, Any]], tol: float, patience: int) -> dict[str, Any]:
    """The plateau rule of the module docstring on one curve."""
    if not curve:
        raise ValueError("empty curve")
    scores = [p["score"] for p in curve]
    best = max(scores)
    i_best = scores.index(best)
    i_p = next(i for i, s in enumerate(scores) if s >= best - tol)
    return {"best": best, "best_epoch": curve[i_best]["epoch"], "plateau_epoch": curve[i_p]["epoch"],
            "plateau_step": curve[i_p]["step"], "plateau_score": scores[i_p],
            "plateaued": len(scores) - 1 - i_p >= patience, "final": scores[-1]}


def chance_level(metric: str, dev_labels: list[Any] | None) -> float:
    """Majority-class share of the dev labels for accuracy; 0 for correlations and F1."""
    if metric in ZERO_CHANCE:
        return 0.0
    if metric == "accuracy":
        if not dev_labels:
            raise ValueError("accuracy's chance level needs the dev labels")
        return Counter(dev_labels).most_common(1)[0][1] / len(dev_labels)
    raise ValueError(f"no chance level for metric {metric!r}; known: accuracy, {', '.join(ZERO_CHANCE)}")


def choose(settings: list[dict[str, Any]], tol: float) -> dict[str, Any]:
    """The choice rule of the module docstring over one task's analysed settings.

    Each setting: {"setting": {...,"max_length"}, "analysis": plateau(...) | {"learned"}}. Returns
    {"status": "chosen" | "still_rising" | "cannot_learn", "chosen": setting or None, "top": best}.
    """
    learned = [s for s in settings if s["analysis"]["learned"]]
    if not learned:
        return {"status": "cannot_learn", "chosen": None, "top": max((s["analysis"]["best"] for s in settings),
                                                                      default=None)}
    top = max(s["analysis"]["best"] for s in learned)
    candidates = [s for s in learned if s["analysis"]["plateaued"] and s["analysis"]["best"] >= top - tol]
    if not candidates:
        return {"status": "still_rising", "chosen": None, "top": top}
    pick = min(candidates, key=lambda s: (compute_to_plateau(s), -s["analysis"]["best"]))
    return {"status": "chosen", "chosen": pick, "top": top}


def compute_to_plateau(setting: dict[str, Any]) -> int:
    """Optimiser steps to the plateau times the sequence length (batch is fixed): the cost proxy."""
    return setting["analysis"]["plateau_step"] * setting["setting"]["max_length"]


def steps_per_epoch(rows: int, batch_size: int) -> int:
    return math.ceil(rows / batch_size)


def plot_task(task: str, metric: str, settings: list[dict[str, Any]], chance: float | None,
              chosen_label: str | None, path: Path, title_note: str = "", method: str = "LoRA r=4") -> Path:
    """One PNG per task: every setting's curve (dev metric vs optimiser steps), plateaus marked."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from autolora_exp.atomic import atomic_save_figure

    fig = Figure(figsize=(7.5, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for s in settings:
        xs = [p["step"] for p in s["curve"]]
        ys = [p["score"] for p in s["curve"]]
        bold = s["label"] == chosen_label
        line, = ax.plot(xs, ys, marker="o", markersize=3, linewidth=2.6 if bold else 1.2,
                        label=s["label"] + (" (chosen)" if bold else ""))
        a = s["analysis"]
        if a["plateaued"]:
            ax.plot([a["plateau_step"]], [a["plateau_score"]], marker="*", markersize=12, color=line.get_color())
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label=f"chance ({chance:.3f})")
    ax.set_xlabel("optimiser steps")
    ax.set_ylabel(f"dev {metric}")
    ax.set_title(f"{task}: {method} learning curves{title_note}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    return atomic_save_figure(fig, path, dpi=110)


# ---- the benchmark: scripts/bench_curves.py ------------------------------------------------------

#: --method: LoRA at --rank, or AdaLoRA with its config (item 3 of issue 15: its curve beside LoRA's)
METHODS = ("lora", "adalora")

#: --quick: tiny-roberta on a few rows of RTE, three epochs
QUICK = dict(model="tiny-roberta", tasks="rte", train_samples="32", max_lengths="32", lrs="5e-4", epochs=3,
             batch_size=8, seeds="0", committed=None)


def parse_args(argv: list[str] | None, repo: Path) -> Any:
    import argparse

    from autolora_exp.bench import add_committed_argument, optional_int, parse_with_quick

    p = argparse.ArgumentParser(description="LoRA r=4 learning curves on GLUE: the setting each task needs",
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--tasks", default="stsb", help="GLUE tasks (default stsb)")
    p.add_argument("--model", default="minilm", help="model config (default minilm, the packaged MiniLM)")
    p.add_argument("--train-samples", default="512", help="training-set sizes (seeded subsets), comma-separated")
    p.add_argument("--lrs", default="5e-4", help="learning rates, comma-separated (default 5e-4, LoRA's config)")
    p.add_argument("--max-lengths", default="64", help="sequence lengths, comma-separated (default 64)")
    p.add_argument("--poolings", default="cls",
                   help="sequence heads (model.pooling), comma-separated: cls (the model's pooler) and/or mean")
    p.add_argument("--epochs", type=int, default=12, help="epochs of every run (the curve's length; default 12)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seeds", default="0", help="seeds, comma-separated (default 0)")
    p.add_argument("--eval-samples", type=optional_int, default=None,
                   help="seeded dev subsample (default: the whole dev set); for slow backbones")
    p.add_argument("--rank", type=int, default=4, help="LoRA rank (default 4)")
    p.add_argument("--method", default="lora", choices=METHODS,
                   help="lora (LoRA r=--rank, the default) or adalora (its config: init_r 6 -> target_r 4)")
    p.add_argument("--data-dir", type=Path, default=repo.parent / "shared" / "data" / "glue",
                   help="folder of the official GLUE files (default ../shared/data/glue beside the repository); "
                        "the runs record it relative to the repository (bench.portable_data_dir)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--override", action="append", default=[], help="extra Hydra override for every run (repeatable)")
    p.add_argument("--tol", type=float, default=0.01, help="plateau tolerance on the 0-1 metric scale (default 0.01)")
    p.add_argument("--patience", type=int, default=2, help="epochs after the plateau epoch that add < tol (default 2)")
    p.add_argument("--margin", type=float, default=0.05, help="learned = best >= chance + margin (default 0.05)")
    p.add_argument("--out", type=Path, default=repo / "outputs" / "bench", help="runs and summary folder")
    add_committed_argument(p, repo)
    p.add_argument("--name", default=None, help="summary file stem (default curves, curves_quick with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny-roberta smoke configuration")
    return parse_with_quick(p, argv, QUICK, "curves")


def plan(args: Any, repo: Path) -> tuple[list[Any], dict[str, Any]]:
    """One run per (task, training size, max length, lr, seed), task-major."""
    import hashlib
    import itertools

    from autolora_exp.bench import BenchRun, glue_task, parse_list, portable_data_dir
    from autolora_exp.errors import UserError

    tasks = [glue_task(t) for t in parse_list(args.tasks, "--tasks")]
    sizes = parse_list(args.train_samples, "--train-samples", int)
    lengths = parse_list(args.max_lengths, "--max-lengths", int)
    lrs = parse_list(args.lrs, "--lrs", float)
    seeds = parse_list(args.seeds, "--seeds", int)
    poolings = parse_list(args.poolings, "--poolings")
    from autolora_exp.models import POOLINGS

    bad = [x for x in poolings if x not in POOLINGS]
    if bad:
        raise UserError(f"--poolings {bad} unknown; accepted: {', '.join(POOLINGS)}")
    for name, values in (("--train-samples", sizes), ("--max-lengths", lengths), ("--lrs", lrs)):
        if any(v <= 0 for v in values):
            raise UserError(f"{name} {values} must all be > 0")
    if args.epochs < 1 or args.batch_size < 1:
        raise UserError(f"--epochs {args.epochs} and --batch-size {args.batch_size} must be >= 1")
    if not args.data_dir.is_dir():
        raise UserError(f"--data-dir {args.data_dir} is not a folder; point it at the official GLUE files "
                        "(../shared/data/glue beside the repository)")
    data_dir = portable_data_dir(args.data_dir, repo)
    from autolora_exp.device import resolve_device

    device = str(resolve_device(args.device))  # auto resolved here: the runs' configs name the device
    method = [f"method={args.method}"] + ([f"method.r={args.rank}"] if args.method == "lora" else [])
    common = [f"model={args.model}", *method, f"task.data_dir={data_dir}",
              f"train.epochs={args.epochs}", f"train.batch_size={args.batch_size}", f"device={device}",
              "logger.mode=disabled", "train.progress=false", f"task.max_eval_samples={args.eval_samples or 'null'}",
              *args.override]
    extra = "_x" + hashlib.sha1("\n".join(args.override).encode()).hexdigest()[:8] if args.override else ""
    root = args.out / "runs" / "curves"
    runs = []
    for task, pooling, n, length, lr, seed in itertools.product(tasks, poolings, sizes, lengths, lrs, seeds):
        name = f"r{args.rank}" if args.method == "lora" else args.method
        setting = (f"{device}_{pooling}_{name}_n{n}_L{length}_lr{lr:g}_e{args.epochs}_b{args.batch_size}"
                   f"{f'_v{args.eval_samples}' if args.eval_samples else ''}{extra}")
        runs.append(BenchRun({"task": task, "pooling": pooling, "train_samples": n, "max_length": length, "lr": lr,
                              "seed": seed},
                             [f"task={task}", *common, f"model.pooling={pooling}", f"task.max_train_samples={n}",
                              f"task.max_length={length}", f"method.lr={lr}", f"seed={seed}"],
                             root / task.removeprefix("glue/") / args.model / setting / f"seed{seed}"))
    settings = {"tasks": tasks, "model": args.model, "poolings": poolings, "method": args.method,
                "rank": args.rank if args.method == "lora" else None, "train_samples": sizes,
                "max_lengths": lengths, "lrs": lrs, "epochs": args.epochs, "batch_size": args.batch_size,
                "seeds": seeds, "eval_samples": args.eval_samples, "data_dir": data_dir, "device": device, "overrides": args.override,
                "tol": args.tol, "patience": args.patience, "margin": args.margin, "runs_dir": str(root),
                "committed": str(args.committed) if args.committed else None, "quick": args.quick}
    return runs, settings


def run_entry(rec: Any) -> dict[str, Any]:
    entry = rec.entry()
    if rec.result is None:
        return entry
    metric, curve = curve_of(rec.result)
    return entry | {"metric": metric, "curve": curve, "rows": {k: v["n"] for k, v in rec.result["data"].items()},
                    "train_s": rec.result["phases"].get("train", {}).get("wall_s")}


def method_label(st: dict[str, Any]) -> str:
    return f"LoRA r={st['rank']}" if st.get("method", "lora") == "lora" else "AdaLoRA (its config)"


def setting_label(s: dict[str, Any]) -> str:
    return f"{s['pooling']} n={s['train_samples']} L={s['max_length']} lr={s['lr']:g}"


def summarise(entries: list[dict[str, Any]], st: dict[str, Any], dev_labels: Any) -> dict[str, Any]:
    """Per task: every setting's (median-over-seeds) curve with its plateau analysis, and the choice.

    ``dev_labels(task, seed) -> labels`` gives accuracy's chance level (majority-class share; with
    several seeds of a dev subsample, the median over the seeds' subsamples).
    """
    per_task: dict[str, Any] = {}
    for task in st["tasks"]:
        done = [e for e in entries if e["task"] == task and e["status"] == "completed"]
        groups: dict[tuple, list[dict[str, Any]]] = {}
        for e in done:
            groups.setdefault((e["pooling"], e["train_samples"], e["max_length"], e["lr"]), []).append(e)
        if not groups:
            per_task[task] = {"status": "no_runs", "settings": [], "chosen": None}
            continue
        metric = done[0]["metric"]
        chance = statistics.median(chance_level(metric, dev_labels(task, seed) if metric == "accuracy" else None)
                                   for seed in sorted({e["seed"] for e in done}))
        analysed = []
        for (pooling, n, length, lr), cell in sorted(groups.items()):
            curve = median_curve([e["curve"] for e in cell])
            a = plateau(curve, st["tol"], st["patience"])
            a["learned"] = a["best"] >= chance + st["margin"]
            setting = {"pooling": pooling, "train_samples": n, "max_length": length, "lr": lr,
                       "rows": cell[0]["rows"], "steps_per_epoch": curve[0]["step"]}
            analysed.append({"setting": setting, "label": setting_label(setting), "seeds": sorted(e["seed"] for e in cell),
                             "curve": curve, "analysis": a,
                             "train_s": statistics.median(e["train_s"] for e in cell if e["train_s"] is not None)
                             if any(e["train_s"] is not None for e in cell) else None})
        pick = choose(analysed, st["tol"])
        chosen = pick["chosen"]
        per_task[task] = {"metric": metric, "chance": chance, "status": pick["status"], "top": pick["top"],
                          "settings": analysed,
                          "chosen": None if chosen is None else {
                              **chosen["setting"], "epochs": chosen["analysis"]["plateau_epoch"],
                              "steps": chosen["analysis"]["plateau_step"], "score": chosen["analysis"]["plateau_score"],
                              "best": chosen["analysis"]["best"], "label": chosen["label"]}}
    return {"per_task": per_task}


STATUS_TEXT = {"chosen": "plateau reached", "still_rising": "still rising at the last epoch (no plateau in budget)",
               "cannot_learn": "cannot learn here (no curve beats chance + margin)", "no_runs": "no finished run"}


def markdown(report: dict[str, Any]) -> str:
    from autolora_exp.bench import machine_line, md_table, process_wall_text

    st = report["settings"]
    lines = [f"# Learning curves: {method_label(st)} on {st['model']}", "",
             f"Every run: {method_label(st)} (head pooling and lr as listed; cls = the model's own head), batch "
             f"{st['batch_size']}, {st['epochs']} epochs over a seeded training subset, "
             + (f"a seeded subsample of {st['eval_samples']} dev rows" if st.get("eval_samples") else "the whole dev set")
             + f" scored after every epoch, seeds {st['seeds']}, device {st['device']}; one linear warm-up/decay "
             f"schedule over all {st['epochs']} epochs."
             + (f" Extra overrides: {st['overrides']}." if st["overrides"] else ""),
             f"Plateau rule: e_p = first epoch within {st['tol']} of the curve's best; plateaued when at least "
             f"{st['patience']} later epochs follow (they add < {st['tol']}); learned when best >= chance + "
             f"{st['margin']}. Choice: among learned, plateaued curves within {st['tol']} of the task's best, the "
             "least steps x max_length to the plateau.", "",
             "## Chosen settings", ""]
    rows = []
    for task, t in report["per_task"].items():
        c = t.get("chosen")
        rows.append([task.removeprefix("glue/").upper(), STATUS_TEXT[t["status"]],
                     *(["-"] * 7 if c is None else
                       [c["pooling"], c["train_samples"], c["max_length"], f"{c['lr']:g}", c["epochs"], c["steps"],
                        f"{c['score'] * 100:.1f} (best {c['best'] * 100:.1f})"]),
                     "-" if t.get("chance") is None else f"{t['chance'] * 100:.1f}"])
    lines += [md_table(["task", "status", "head", "train rows", "max length", "lr", "epochs", "steps", "dev x100 at plateau",
                        "chance x100"], rows), ""]
    for task, t in report["per_task"].items():
        if not t["settings"]:
            continue
        lines += [f"## {task.removeprefix('glue/').upper()} ({t['metric']})", "",
                  f"![{task}]({Path(t['figure']).name})" if t.get("figure") else "", ""]
        rows = []
        for s in t["settings"]:
            a = s["analysis"]
            rows.append([s["label"], s["setting"]["rows"].get("train"), s["setting"]["steps_per_epoch"],
                         " ".join(f"{p['score'] * 100:.1f}" for p in s["curve"]),
                         f"{a['best'] * 100:.1f} (ep {a['best_epoch']})",
                         f"ep {a['plateau_epoch']} / step {a['plateau_step']}" if a["plateaued"] else "no",
                         "yes" if a["learned"] else "no", "-" if s["train_s"] is None else f"{s['train_s']:.0f}"])
        lines += [md_table(["setting", "train rows", "steps/epoch", "dev x100 per epoch", "best", "plateau",
                            "learned", "train s"], rows), ""]
    failed = [e for e in report["runs"] if e["status"] != "completed"]
    if failed:
        lines += ["Failed runs:", ""] + [f"- {e['task']} {e['pooling']} n={e['train_samples']} L={e['max_length']} lr={e['lr']:g} "
                                         f"seed {e['seed']}: {e.get('error')}" for e in failed] + [""]
    lines += [f"Machine: {machine_line(report['machine'])}; at the end {report['loadavg_end']}. Benchmark wall time "
              f"{report['bench_wall_s']:.0f} s ({report['runs_computed']} run(s) computed, {report['runs_reused']} "
              f"reused); {process_wall_text(report)}.", "",
              f"Reproduce: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None, repo: Path, script: str = "scripts/bench_curves.py") -> int:
    import sys

    from autolora_exp.bench import committed_store, run_benchmark, write_report

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv, repo)
    labels: dict[str, list[Any]] = {}

    def dev_labels(task: str, seed: int) -> list[Any]:
        """The dev labels the runs scored: the whole dev set, or the pipeline's seeded subsample."""
        if (task, seed) not in labels:
            from autolora_exp.data.glue import load_glue

            dev = load_glue(task.removeprefix("glue/"), args.data_dir)["validation"]
            if args.eval_samples and len(dev) > args.eval_samples:  # as pipeline.load_data subsamples
                dev = dev.shuffle(seed=seed).select(range(args.eval_samples))
            labels[task, seed] = list(dev["label"])
        return labels[task, seed]

    def summary(entries: list[dict[str, Any]], st: dict[str, Any]) -> dict[str, Any]:
        out = summarise(entries, st, dev_labels)
        for task, t in out["per_task"].items():
            if t["settings"]:
                path = args.out / f"{args.name}_{task.removeprefix('glue/')}.png"
                plot_task(task, t["metric"], t["settings"], t["chance"],
                          t["chosen"]["label"] if t["chosen"] else None, path,
                          f" ({st['model']}, batch {st['batch_size']}, seeds {st['seeds']})", method_label(st))
                t["figure"] = str(path)
        return out

    def partial(records: list[Any], st: dict[str, Any], machine: dict[str, Any], start: float) -> None:
        """After every run: the report so far (curves appear as runs finish)."""
        entries = [run_entry(r) for r in records]
        write_report("curves", script, argv, st, machine, start, records, entries, summary(entries, st),
                     markdown, args.out, args.name, echo=False)

    return run_benchmark("curves", script, argv, args, repo, lambda a: plan(a, repo), run_entry, summary, markdown,
                         committed=committed_store(args), on_record=partial)
