"""When would the search's stopping rule have fired, and what would it have changed? (issue 19)

    python scripts/search_stop.py outputs/runs/.../search.json [more search.json ...] --out docs/bench

Reads the alpha history of finished searches (``search.json``: beta of every layer at every
alpha log) and replays the stop rule of ``method.search.patience`` / ``stop_tolerance``
(:func:`autolora_exp.methods.autolora.search.stop_reason`) on it for every pair of --patience x
--tolerance. The replay is exact: the rule only reads the history, and a stopped search is the
same trajectory cut at the stop (tests/test_autolora_search.py checks both), so no search is
rerun. For each pair and search: the step where the rule fires (or none), the share of the
search it saves, and the distance of the ranks at that step to the ranks of the whole search
(mean |rank difference| per layer, layers with the same rank, mean rank).

Also the ranks' path: the distance to the final ranks at every alpha log, i.e. what a search
cut at that many iterations would have found (a budget curve by truncation, one seed).

Writes <out>/<name>.json and <out>/<name>.md (--name, default search_stop). Replaying with a log interval coarser
than the one recorded: --every N keeps every N-th log.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from autolora_exp.bench import machine_info, md_table, parse_list
from autolora_exp.errors import UserError
from autolora_exp.methods.autolora.search import rank_distance, stop_reason
from autolora_exp.methods.autolora.threshold import resolve_threshold, threshold_ranks


def replay(history: list[dict[str, Any]], rule: str, patience: int, tolerance: float,
           min_rank: int = 0) -> dict[str, Any] | None:
    """The first alpha log at which ``stop_reason`` fires on the history up to it, or None."""
    for i, entry in enumerate(history):
        reason = stop_reason(history[: i + 1], rule, patience, tolerance, min_rank)
        if entry["step"] > 0 and reason:
            return {"step": entry["step"], "reason": reason,
                    "ranks": threshold_ranks(entry["selection_logits"], rule, min_rank)}
    return None


def analyse(search: dict[str, Any], patiences: list[int], tolerances: list[float], every: int) -> dict[str, Any]:
    cfg = search["config"]
    rule = resolve_threshold(cfg["threshold"], cfg["gate"], cfg["k"], cfg["selection_init"])
    floor = cfg.get("min_rank", 0)  # search.min_rank (searches recorded before it had none: 0)
    logs = search["history"]
    history = [h for i, h in enumerate(logs) if i % every == 0 or i == len(logs) - 1]
    final = threshold_ranks(search["selection_logits"], rule, floor)
    path = []
    for h in history:
        ranks = threshold_ranks(h["selection_logits"], rule, floor)
        path.append({"step": h["step"], "rank_distance": rank_distance(final, ranks),
                     "layers_same_rank": sum(ranks[k] == v for k, v in final.items()),
                     "mean_rank": sum(ranks.values()) / len(ranks)})
    stops = []
    for p in patiences:
        for tol in tolerances:
            hit = replay(history, rule, p, tol, floor)
            row: dict[str, Any] = {"patience": p, "tolerance": tol, "fires_at": hit["step"] if hit else None}
            if hit:
                row |= {"share_of_search": hit["step"] / search["steps"], "reason": hit["reason"],
                        "rank_distance": rank_distance(final, hit["ranks"]),
                        "layers_same_rank": sum(hit["ranks"][k] == v for k, v in final.items()),
                        "mean_rank": sum(hit["ranks"].values()) / len(hit["ranks"])}
            stops.append(row)
    return {"steps": search["steps"], "log_every": search["config"]["log_every"] * every, "rule": rule,
            "layers": len(final), "final_mean_rank": sum(final.values()) / len(final), "path": path, "stops": stops}


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Replaying the search's stopping rule", ""]
    for name, a in report["searches"].items():
        lines += [f"## {name}", "",
                  f"{a['steps']} iterations, alpha logged every {a['log_every']}, threshold `{a['rule']}`, "
                  f"{a['layers']} layers, final mean rank {a['final_mean_rank']:.2f}.", ""]
        rows = [[s["patience"], s["tolerance"], s["fires_at"] if s["fires_at"] is not None else "never",
                 f"{s['share_of_search']:.2f}" if s["fires_at"] else "-",
                 f"{s['rank_distance']:.2f}" if s["fires_at"] else "-",
                 f"{s['layers_same_rank']}/{a['layers']}" if s["fires_at"] else "-",
                 f"{s['mean_rank']:.2f}" if s["fires_at"] else "-"] for s in a["stops"]]
        lines += [md_table(["patience", "tolerance", "fires at step", "share of the search",
                            "mean |rank diff| to final", "layers same rank", "mean rank"], rows), ""]
        rows = [[p["step"], f"{p['rank_distance']:.2f}", f"{p['layers_same_rank']}/{a['layers']}",
                 f"{p['mean_rank']:.2f}"] for p in a["path"]]
        lines += ["Ranks along the search (what a search cut there would find):", "",
                  md_table(["step", "mean |rank diff| to final", "layers same rank", "mean rank"], rows), ""]
    lines += [f"Reproduce: `{report['command']}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("search_json", nargs="+", type=Path, help="search.json files of finished searches")
    p.add_argument("--patience", default="1,2,3,4", help="patience values to replay (default 1,2,3,4)")
    p.add_argument("--tolerance", default="0,0.25,0.5", help="stop_tolerance values (default 0,0.25,0.5)")
    p.add_argument("--every", type=int, default=1, help="keep every N-th recorded alpha log (default 1)")
    p.add_argument("--out", type=Path, default=Path("outputs/bench"))
    p.add_argument("--name", default="search_stop", help="file stem of the report (default search_stop)")
    args = p.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        patiences = parse_list(args.patience, "--patience", int)
        tolerances = parse_list(args.tolerance, "--tolerance", float)
        if args.every < 1:
            raise UserError(f"--every {args.every} is not valid; use an integer >= 1")
        searches = {}
        for path in args.search_json:
            if not path.is_file():
                raise UserError(f"{path} is not a file; give the search.json of a finished AutoLoRA run")
            searches[str(path)] = analyse(json.loads(path.read_text()), patiences, tolerances, args.every)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    command = "python scripts/search_stop.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = {"command": command, "machine": machine_info(), "searches": searches}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{args.name}.json").write_text(json.dumps(report, indent=2))
    (args.out / f"{args.name}.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
