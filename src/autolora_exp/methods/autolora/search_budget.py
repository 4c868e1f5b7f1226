"""The search budget curve (issue 19): what a shorter AutoLoRA search finds, what it costs, how it retrains.

A shorter search is the prefix of the full one: nothing in the search depends on its length (no
learning-rate schedule in either optimiser, D_tr's order seeded by (seed, epoch), D_val cycled;
``tests/test_search_budget.py`` checks beta of an E-epoch search against the 2E-epoch search's
history at E epochs). So a search of b x the full budget of T iterations finds the full search's
thresholded beta at iteration b T (an alpha log there), and no shorter search is rerun:

    r_l(b)      = threshold(beta_l after b T iterations)                  (the search's own rule)
    distance(b) = (1/L) sum_l |r_l(b) - r_l(1)|                           (L layers, same seed)

Retrain of budget b: ``method=lora method.rank_pattern_file=<r(b)>``, which trains exactly what an
AutoLoRA run with those ranks retrains (same seed, same numbers; tested). A budget whose ranks
equal the full search's has the full run's retrain, not rerun.

Cost of budget b, per seed (derived from measured phases, not a separate run):

    search(b)     = b x (the full search phase's seconds)          wall and CPU (time.process_time)
    end-to-end(b) = search(b) + the retrain's train phase          (measured in its own run)
    / LoRA        = end-to-end(b) / (train phase of LoRA r=4, same seed)

Every search iteration costs the same (same passes, same batch size), so the first is exact up to
the phase's fixed part (building the model, the heatmap: a few seconds of hundreds), scaled with
b too. The 5-rank grid (``method=lora_grid``) is measured where ``scripts/bench_cost.py`` ran it at
the same settings (it shares this benchmark's run folders): its search + train phase CPU seconds,
median over its seeds (the grid's cost does not depend on the seed beyond noise)::

    / grid = end-to-end(b) CPU / grid CPU

Without a grid run it is estimated as ``1 + 5 (1 - v)`` LoRA trainings (one LoRA run per rank on
D_tr, a share 1 - v of the rows, then the retrain), which overstates it where the dev set is larger
than D_val: each LoRA training scores its evaluation set every epoch, the grid's ranks only D_val.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from autolora_exp.bench import SEARCH_RANKS_FILE, fmt_stat, md_table, stats
from autolora_exp.errors import UserError
from autolora_exp.methods.autolora.search import rank_distance
from autolora_exp.methods.autolora.threshold import resolve_threshold, threshold_ranks

#: grid size of the estimate (the paper's 5-rank grid, ``method=lora_grid``'s default ranks)
GRID_RANKS = 5
#: cost targets of issue 19 item 3 (end-to-end, over the reference's)
TARGET_LORA, TARGET_GRID = 1.2, 0.35
#: seeds of both the full search and a point before "within the seed spread" is judged (issue 19: >= 3)
VERDICT_SEEDS = 3


def search_ranks(search: dict[str, Any]) -> dict[str, Any]:
    """The thresholded ranks at every alpha log of a finished search (a ``search.json``).

    ``{"rule", "total_steps", "layers": [names], "steps": [s_0 .. s_n], "ranks": [[r per layer] per log],
    "final": [r per layer]}``; small enough to commit (no beta, no alphas).
    """
    cfg = search["config"]
    rule = resolve_threshold(cfg["threshold"], cfg["gate"], cfg["k"], cfg["selection_init"])
    final = threshold_ranks(search["selection_logits"], rule)
    layers = list(final)
    path = [threshold_ranks(h["selection_logits"], rule) for h in search["history"]]
    return {"rule": rule, "total_steps": search["steps"], "log_every": cfg["log_every"], "layers": layers,
            "steps": [h["step"] for h in search["history"]], "ranks": [[r[n] for n in layers] for r in path],
            "final": [final[n] for n in layers]}


def ranks_at(path: dict[str, Any], step: int) -> dict[str, int]:
    """The ranks a search cut after ``step`` iterations finds (the alpha log at that step)."""
    if step not in path["steps"]:
        raise UserError(f"the search logged no alpha at iteration {step}; logged: every {path['log_every']} "
                        f"iterations up to {path['total_steps']}")
    return dict(zip(path["layers"], path["ranks"][path["steps"].index(step)]))


def budget_step(budget: float, total_steps: int, log_every: int) -> int:
    """Iterations of a search of ``budget`` x the full one: b T, which must be an alpha log (a multiple of log_every)."""
    if not 0 < budget <= 1:
        raise UserError(f"budget {budget:g} is not accepted; use a fraction of the full search in (0, 1]")
    step = budget * total_steps
    if abs(step - round(step)) > 1e-9 or round(step) % log_every and round(step) != total_steps:
        accepted = ", ".join(f"{s / total_steps:g}" for s in range(log_every, total_steps + 1, log_every)[:8])
        raise UserError(f"budget {budget:g} x {total_steps} iterations = {step:g} is not an alpha log (every "
                        f"{log_every} iterations); accepted budgets: multiples of {log_every / total_steps:g} "
                        f"({accepted}, ...)")
    return int(round(step))


def ranks_digest(ranks: dict[str, int]) -> str:
    """12 hex digits of the sha256 of the ranks (sorted JSON): the name of their rank file and retrain folder."""
    return hashlib.sha256(json.dumps(ranks, sort_keys=True).encode()).hexdigest()[:12]


def budget_label(budget: float) -> str:
    """0.05 -> ``1/20``; 1 -> ``1``; else the fraction as written."""
    if budget == 1:
        return "1"
    inverse = 1 / budget
    return f"1/{round(inverse)}" if abs(inverse - round(inverse)) < 1e-9 else f"{budget:g}"


def _phase(result: dict[str, Any], phase: str, what: str) -> float | None:
    return ((result.get("phases") or {}).get(phase) or {}).get(what)


def score(result: dict[str, Any], which: str = "best") -> float:
    """The primary dev metric of a run (first eval split), ``best`` epoch or ``final``."""
    metrics = result["metrics"]
    split = next(iter(metrics[which]))
    return metrics[which][split][metrics["primary"]]


def points(full: dict[int, dict[str, Any]], paths: dict[int, dict[str, Any]], retrains: dict[tuple[int, str], Any],
           fast: dict[int, dict[str, Any]], lora: dict[int, dict[str, Any]], budgets: Iterable[float],
           val_fraction: float = 0.5, grid_cpu_s: float | None = None) -> list[dict[str, Any]]:
    """One row per (point, seed): the budgets (truncated full searches), the full search, autolora_fast.

    ``full``/``fast``/``lora``: seed -> result.json; ``paths``: seed -> :func:`search_ranks` of the
    full search; ``retrains``: (seed, ranks digest) -> result.json of ``method=lora
    rank_pattern_file`` (absent: not run); ``grid_cpu_s``: the measured grid's CPU seconds
    (:func:`grid_cpu`; None: the grid is estimated). Figures missing from an unfinished run are None.
    """
    rows = []
    grid_trainings = 1 + GRID_RANKS * (1 - val_fraction)
    for seed, run in sorted(full.items()):
        path = paths.get(seed)
        final_ranks = run["search"]["ranks"]
        lora_train = lora.get(seed)
        for budget in [*sorted(b for b in budgets if b < 1), 1.0, "fast"]:
            if budget == "fast":
                if seed not in fast:
                    continue
                res = fast[seed]
                ranks, retrained, fraction = res["search"]["ranks"], res, None
                search_wall, search_cpu = _phase(res, "search", "wall_s"), _phase(res, "search", "cpu_s")
                steps, passes = res["search"]["steps"], res["search"]["passes_per_iteration"]
                how = "autolora_fast run"
            else:
                if path is None:
                    continue
                steps = budget_step(budget, path["total_steps"], path["log_every"])
                ranks = ranks_at(path, steps) if budget < 1 else final_ranks
                fraction = steps / path["total_steps"]
                search_wall = fraction * _phase(run, "search", "wall_s")
                search_cpu = fraction * _phase(run, "search", "cpu_s")
                passes = run["search"]["passes_per_iteration"]
                if ranks == final_ranks:
                    retrained, how = run, "full run" if budget == 1 else "same ranks as the full search: its retrain"
                else:
                    retrained = retrains.get((seed, ranks_digest(ranks)))
                    how = "lora rank_pattern_file" if retrained else "not run"
            row: dict[str, Any] = {
                "point": budget if budget == "fast" else budget_label(budget), "budget": fraction, "seed": seed,
                "iterations": steps, "passes_per_iteration": passes, "ranks": ranks,
                "mean_rank": sum(ranks.values()) / len(ranks),
                "rank_distance": rank_distance(final_ranks, ranks) if ranks.keys() == final_ranks.keys() else None,
                "layers_same_rank": sum(ranks.get(k) == v for k, v in final_ranks.items()), "layers": len(final_ranks),
                "search_wall_s": search_wall, "search_cpu_s": search_cpu, "retrain": how,
                "score": score(retrained) if retrained else None,
                "score_final": score(retrained, "final") if retrained else None}
            if retrained:
                train_wall, train_cpu = _phase(retrained, "train", "wall_s"), _phase(retrained, "train", "cpu_s")
                row |= {"train_wall_s": train_wall, "train_cpu_s": train_cpu,
                        "cost_wall_s": search_wall + train_wall, "cost_cpu_s": search_cpu + train_cpu}
                if lora_train:
                    row["ratio_to_lora"] = row["cost_wall_s"] / _phase(lora_train, "train", "wall_s")
                    row["cpu_ratio_to_lora"] = row["cost_cpu_s"] / _phase(lora_train, "train", "cpu_s")
                    if grid_cpu_s is None:
                        row["cpu_ratio_to_grid"] = row["cpu_ratio_to_lora"] / grid_trainings
                if grid_cpu_s is not None:
                    row["cpu_ratio_to_grid"] = row["cost_cpu_s"] / grid_cpu_s
            if lora_train:  # the search alone, in LoRA runs (what the x axis of the plot shows)
                row["search_cpu_over_lora"] = search_cpu / _phase(lora_train, "train", "cpu_s")
            rows.append(row)
    return rows


def grid_cpu(grid: dict[int, dict[str, Any]]) -> dict[str, Any] | None:
    """The measured grid runs' search + train phase CPU seconds: median [min-max] over seeds."""
    seconds = [_phase(r, "search", "cpu_s") + _phase(r, "train", "cpu_s") for r in grid.values()
               if _phase(r, "search", "cpu_s") is not None and _phase(r, "train", "cpu_s") is not None]
    return stats(seconds) if seconds else None


def summarise(rows: list[dict[str, Any]], lora: dict[int, dict[str, Any]],
              grid: dict[int, dict[str, Any]] | None = None) -> dict[str, Any]:
    """Per point: median [min-max] over seeds of every figure; the full search's seed range and the verdict.

    A point is *within the seed spread* when the median of its retrained scores lies at or above the
    lowest of the full search's per-seed scores (the full search's range, or above it), on the
    seeds where both were retrained; judged only with :data:`VERDICT_SEEDS` retrained seeds of
    each (fewer: None, the paired differences are still given). It meets the cost targets when
    its median end-to-end CPU ratio is <= 1.2x LoRA and to the grid (measured, else estimated) <= 0.35x.
    """
    order: list[Any] = []
    for r in rows:
        if r["point"] not in order:
            order.append(r["point"])
    full_scores = [r["score"] for r in rows if r["point"] == "1" and r["score"] is not None]
    lo, hi = (min(full_scores), max(full_scores)) if full_scores else (None, None)
    lora_scores = [score(res) for res in lora.values()]
    out = []
    for point in order:
        mine = [r for r in rows if r["point"] == point]
        keys = ("iterations", "search_wall_s", "search_cpu_s", "rank_distance", "layers_same_rank", "mean_rank",
                "score", "score_final", "cost_wall_s", "cost_cpu_s", "ratio_to_lora", "cpu_ratio_to_lora",
                "cpu_ratio_to_grid", "search_cpu_over_lora")
        s = {k: stats(r.get(k) for r in mine) for k in keys}
        full_by_seed = {r["seed"]: r["score"] for r in rows if r["point"] == "1"}
        paired = [r["score"] - full_by_seed[r["seed"]] for r in mine
                  if r["score"] is not None and full_by_seed.get(r["seed"]) is not None]
        within = None if s["score"] is None or lo is None or min(s["score"]["n"], len(full_scores)) < VERDICT_SEEDS \
            else s["score"]["median"] >= lo
        cost_ok = None if s["cpu_ratio_to_lora"] is None else (
            s["cpu_ratio_to_lora"]["median"] <= TARGET_LORA
            and s["cpu_ratio_to_grid"]["median"] <= TARGET_GRID)
        out.append({"point": point, "budget": mine[0]["budget"], "seeds": [r["seed"] for r in mine],
                    "retrained_seeds": [r["seed"] for r in mine if r["score"] is not None],
                    "not_retrained_seeds": [r["seed"] for r in mine if r["score"] is None],
                    **s, "paired_score_minus_full": stats(paired), "within_full_seed_spread": within,
                    "cost_targets_met": cost_ok, "meets_item3": (within and cost_ok) if None not in (within, cost_ok)
                    else None})
    return {"points": out, "full_score_range": [lo, hi], "lora_score": stats(lora_scores),
            "lora_train": {"wall_s": stats(_phase(r, "train", "wall_s") for r in lora.values()),
                           "cpu_s": stats(_phase(r, "train", "cpu_s") for r in lora.values())},
            "grid": {"measured": grid_cpu(grid or {}), "seeds": sorted(grid or {})}}


def _label(point: Any) -> str:
    return "`autolora_fast`" if point == "fast" else ("full search (1)" if point == "1" else point)


def markdown_table(summary: dict[str, Any]) -> str:
    """The budget curve as a Markdown table: one row per point, median [min-max] over seeds."""
    grid = "measured" if (summary.get("grid") or {}).get("measured") else "est."
    rows = []
    for p in summary["points"]:
        retrained = f"{len(p['retrained_seeds'])}/{len(p['seeds'])}"
        rows.append([_label(p["point"]), fmt_stat(p["iterations"], digits=0), fmt_stat(p["search_cpu_s"], digits=0),
                     fmt_stat(p["rank_distance"]), fmt_stat(p["layers_same_rank"], digits=0),
                     fmt_stat(p["mean_rank"]), fmt_stat(p["score"], 100, 1) + f" ({retrained})",
                     fmt_stat(p["paired_score_minus_full"], 100, 1), fmt_stat(p["cost_cpu_s"], digits=0),
                     fmt_stat(p["cpu_ratio_to_lora"]), fmt_stat(p["ratio_to_lora"]),
                     fmt_stat(p["cpu_ratio_to_grid"]), _verdict(p)])
    header = ["search budget", "iterations", "search CPU s", "mean abs rank diff to full", "layers same rank",
              "mean rank", "dev score x100 (seeds retrained)", "score - full, paired x100", "search + retrain CPU s",
              "/ LoRA (CPU)", "/ LoRA (wall)", f"/ 5-rank grid (CPU, {grid})", "item 3"]
    return md_table(header, rows)


def _verdict(p: dict[str, Any]) -> str:
    if p["meets_item3"] is None:
        if p["score"] is None:
            return "not measured"
        if p["within_full_seed_spread"] is None:
            cost = "" if p["cost_targets_met"] is None else ("; cost met" if p["cost_targets_met"] else "; cost missed")
            return f"needs {VERDICT_SEEDS} seeds{cost}"
        return "-"
    if p["meets_item3"]:
        return "meets"
    why = []
    if not p["within_full_seed_spread"]:
        why.append("score below the full search's range")
    if not p["cost_targets_met"]:
        why.append("cost")
    return "misses: " + ", ".join(why)


def plot(summary: dict[str, Any], path: Path, title: str) -> Path:
    """Two panels against the search's CPU seconds (median over seeds, bars = min-max): the ranks'
    distance to the full search's, and the retrained dev score with the full search's seed range
    and LoRA r=4's median."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from autolora_exp.atomic import atomic_save_figure

    fig = Figure(figsize=(10, 4.2))
    FigureCanvasAgg(fig)
    ax_d, ax_s = fig.subplots(1, 2, sharex=True)
    for ax, key, scale, ylabel in ((ax_d, "rank_distance", 1, "mean |rank - full search's rank| per layer"),
                                   (ax_s, "score", 100, "retrained dev score x100 (best epoch)")):
        for p in summary["points"]:
            x, y = p["search_cpu_s"], p[key]
            if not x or not y:
                continue
            fast = p["point"] == "fast"
            ax.errorbar([x["median"]], [y["median"] * scale],
                        yerr=[[(y["median"] - y["min"]) * scale], [(y["max"] - y["median"]) * scale]],
                        fmt="s" if fast else "o", color="tab:red" if fast else "tab:blue", capsize=3)
            ax.annotate(_label(p["point"]).strip("`"), (x["median"], y["median"] * scale), fontsize=8,
                        xytext=(4, 4), textcoords="offset points")
        ax.set_xscale("log")
        ax.set_xlabel("search CPU seconds (median over seeds; log)")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    lo, hi = summary["full_score_range"]
    if lo is not None:
        ax_s.axhspan(lo * 100, hi * 100, color="tab:blue", alpha=0.12, label="full search, seed range")
    if summary["lora_score"]:
        ax_s.axhline(summary["lora_score"]["median"] * 100, color="gray", ls="--", label="LoRA r=4, median")
    lora_cpu = summary["lora_train"]["cpu_s"]
    if lora_cpu:  # the search CPU at which search + a retrain of LoRA's cost = 1.2x LoRA
        for ax in (ax_d, ax_s):
            ax.axvline((TARGET_LORA - 1) * lora_cpu["median"], color="tab:green", ls=":",
                       label="1.2x LoRA (retrain at LoRA's cost)")
    ax_s.legend(fontsize=8, loc="lower right")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return atomic_save_figure(fig, path)


def write_search_ranks(folder: Path) -> dict[str, Any] | None:
    """Write :data:`SEARCH_RANKS_FILE` from the run folder's search.json (kept if already there); None if neither."""
    target = folder / SEARCH_RANKS_FILE
    if target.is_file():
        return json.loads(target.read_text(encoding="utf-8"))
    source = folder / "search.json"
    if not source.is_file():
        return None
    from autolora_exp.atomic import atomic_write_text

    data = search_ranks(json.loads(source.read_text(encoding="utf-8")))
    atomic_write_text(target, json.dumps(data) + "\n")
    return data
