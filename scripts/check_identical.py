"""Bit-identical check: the numbers of a few tiny CPU runs, recorded once and compared exactly.

    python scripts/check_identical.py --write docs/bench/identical_baseline.json   # record (before a change)
    python scripts/check_identical.py                                               # compare (after it)

Each config is one ``python run.py ... debug=default model=tiny-roberta device=cpu`` run (the
offline BBC News data, seeded). What is compared, with ``==`` on every float: result.json's
``metrics`` (every epoch's train loss and scores, best, final, test), ``params``, ``ranks``,
``search`` and ``phases[*].steps``, and the run folder's ``search.json`` / ``rank_pattern.json``
when written; wall/CPU seconds and memory are left out (they are not numbers of the method),
and a null of the baseline that a run no longer writes is listed, not counted.
Exit 1 and the differing paths named when anything differs; a config missing from the
baseline is reported, not silently passed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BASE = ["debug=default", "model=tiny-roberta", "device=cpu"]
#: name -> overrides; the cheapest real configs that exercise each method's code paths
CONFIGS: dict[str, list[str]] = {
    "lora": ["method=lora"],
    "adalora": ["method=adalora"],
    "autolora": ["method=autolora"],
    "autolora_fast": ["method=autolora_fast"],
    "autolora_authors": ["method=autolora_authors"],
    "lora_grid": ["method=lora_grid", "method.ranks=[1,2]"],
    "adapter": ["method=adapter"],
    "full_ft": ["method=full_ft"],
    # a threshold that zeroes some gates within the 4 steps, so the proximal step's numbers count
    "sora": ["method=sora", "method.xi=0.1", "method.lr=0.05"],
    # no retrain: the search's training (rank draws), every rank's D_val score, the truncated model
    "dylora": ["method=dylora"],
}
#: keys whose values are costs of the machine, not numbers of the method
COST_KEYS = {"wall_s", "cpu_s", "wall_time_s", "peak_rss_mb", "peak_mem_mb", "attempts"}


def strip_costs(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: strip_costs(v) for k, v in value.items() if k not in COST_KEYS}
    if isinstance(value, list):
        return [strip_costs(v) for v in value]
    return value


def numbers_of_run(name: str, overrides: list[str], workdir: Path) -> dict[str, Any]:
    out = workdir / name
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    proc = subprocess.run([sys.executable, "run.py", *BASE, *overrides, f"hydra.run.dir={out}"], cwd=REPO,
                          env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{name}: run.py failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    result = json.loads((out / "result.json").read_text(encoding="utf-8"))
    record = {"overrides": overrides, "metrics": result["metrics"], "params": result["params"],
              "ranks": result["ranks"], "search": strip_costs(result["search"]),
              "steps": {phase: p.get("steps") for phase, p in result["phases"].items()}}
    for file in ("search.json", "rank_pattern.json"):
        if (out / file).is_file():
            record[file] = strip_costs(json.loads((out / file).read_text(encoding="utf-8")))
    return record


def dropped_nulls(a: Any, b: Any, path: str = "") -> list[str]:
    """Keys of the baseline whose value is null and that this run no longer writes (issue 18:
    result.json's ``search`` entry holds only the searching method's own fields, so the rank
    grid no longer writes ``alphas: null`` nor AutoLoRA ``per_rank: null``): not numbers, listed."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}" for k in a.keys() - b.keys() if a[k] is None]
        return out + [d for k in a.keys() & b.keys() for d in dropped_nulls(a[k], b[k], f"{path}.{k}")]
    return []


#: keys this run writes that the baseline (recorded before they existed) lacks, each with why it
#: cannot have changed a number: listed, not counted as differences
ADDED_SINCE_BASELINE = {
    ".search.json.config.min_rank": "issue 18's search.min_rank; 0 = the earlier rule, no floor",
    ".params.effective": "SoRA's parameter count after pruning, written since the pipeline calls parameter_counts",
}


def added_keys(a: Any, b: Any, path: str = "") -> list[str]:
    """Keys of :data:`ADDED_SINCE_BASELINE` that this run has and the baseline lacks."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}" for k in b.keys() - a.keys() if f"{path}.{k}" in ADDED_SINCE_BASELINE]
        return out + [d for k in a.keys() & b.keys() for d in added_keys(a[k], b[k], f"{path}.{k}")]
    return []


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Dotted paths where ``a`` and ``b`` differ (floats compared with ==); a null of the
    baseline that this run leaves out is not a difference (:func:`dropped_nulls`)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{path}.{k}: only in {'baseline' if k in a else 'this run'}" for k in sorted(set(a) ^ set(b), key=str)
               if not (k in a and a[k] is None) and f"{path}.{k}" not in ADDED_SINCE_BASELINE]
        for k in a.keys() & b.keys():
            out += differences(a[k], b[k], f"{path}.{k}")
        return out
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: baseline {a!r} != now {b!r}"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, default=REPO / "docs" / "bench" / "identical_baseline.json")
    parser.add_argument("--write", type=Path, help="record the numbers here instead of comparing")
    parser.add_argument("--only", nargs="*", choices=sorted(CONFIGS), help="a subset of the configs")
    args = parser.parse_args()
    names = args.only or list(CONFIGS)
    with tempfile.TemporaryDirectory() as tmp:
        now = {}
        for name in names:
            print(f"[identical] {name}: {' '.join(CONFIGS[name])}", flush=True)
            now[name] = numbers_of_run(name, CONFIGS[name], Path(tmp))
    if args.write:
        args.write.parent.mkdir(parents=True, exist_ok=True)
        args.write.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        print(f"[identical] wrote {args.write}")
        return 0
    baseline = json.loads(args.baseline.read_text(encoding="utf-8"))
    failed = False
    for name in names:
        if name not in baseline:
            print(f"[identical] {name}: not in {args.baseline}")
            failed = True
            continue
        current = json.loads(json.dumps(now[name]))
        diff = differences(baseline[name], current)
        failed |= bool(diff)
        nulls = dropped_nulls(baseline[name], current)
        added = added_keys(baseline[name], current)
        print(f"[identical] {name}: " + ("identical" if not diff else f"{len(diff)} difference(s)")
              + (f" (null keys no longer written: {', '.join(sorted(nulls))})" if nulls else "")
              + (f" (keys added since the baseline: {', '.join(sorted(added))})" if added else ""))
        for line in diff[:20]:
            print(f"    {line}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
