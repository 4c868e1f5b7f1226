"""Benchmark runs: every configuration goes through the real pipeline, each in its own folder.

    folder = <out>/runs/<bench>/<settings tag>/<task>/<model>/<variant>/seed<N>-<digest>
    if folder/result.json was written by the same config (hash)   -> reuse it (resumable)
    else  python run.py <overrides> hydra.run.dir=<folder>         -> a fresh process per run

The digest is the run's config digest, as in every run folder (:mod:`autolora_exp.run_folder`):
a benchmark rerun after a change of the code's defaults computes into a new folder and never
replaces (or reuses) a result of the old config.

A fresh process per run, because on CPU the pipeline records the peak resident set of the
whole process (``ru_maxrss``): runs sharing one process would inherit each other's peaks. A
crash then costs one run, not the benchmark. Next to each run's result.json the benchmark keeps
``bench.json`` (process wall and CPU seconds, load averages before and after), so a reused run
still reports how it was measured.

Also here: the machine record printed next to every figure, statistics over seeds and Markdown
tables. Used by scripts/bench_cost.py and scripts/bench_quality.py.
"""

from __future__ import annotations

import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from autolora_exp import results
from autolora_exp.atomic import atomic_write_json, atomic_write_text
from autolora_exp.errors import UserError
from autolora_exp.glue_tasks import GLUE_TASK_NAMES
from autolora_exp.run_folder import with_digest

#: sidecar written next to result.json by a benchmark run
BENCH_FILE = "bench.json"
LOG_FILE = "bench.log"

#: environment of every benchmark run: offline, no W&B, no tokenizer thread pools
RUN_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false"}


def glue_task(name: str) -> str:
    """``rte`` or ``glue/rte`` -> ``glue/rte`` (the Hydra task option)."""
    short = name.removeprefix("glue/").lower()
    if short not in GLUE_TASK_NAMES:
        raise UserError(f"task {name!r} is not a GLUE task; accepted: {', '.join(GLUE_TASK_NAMES)}")
    return f"glue/{short}"


def portable_data_dir(data_dir: Path, repo: Path) -> str:
    """The data folder as the runs' configs record it: relative to the repository (run.py's
    working directory), so that the config hash, and with it a committed result, is the same on
    every machine with the same layout (``../shared/data/glue`` beside the repository). Lexical,
    symlinks not followed: a ``../shared`` that links elsewhere still records ``../shared/...``."""
    return os.path.relpath(os.path.normpath(os.path.join(repo, data_dir)), os.path.normpath(repo))


def parse_list(text: str, what: str, cast: type = str) -> list[Any]:
    """``"a,b,c"`` -> ``[a, b, c]`` (cast), refusing an empty list."""
    items = [x.strip() for x in str(text).split(",") if x.strip()]
    if not items:
        raise UserError(f"{what} is empty; give a comma-separated list")
    try:
        return [cast(x) for x in items]
    except ValueError:
        raise UserError(f"{what}={text!r} is not a comma-separated list of {cast.__name__}") from None


def optional_int(text: str) -> int | None:
    """argparse type: an integer, or ``none``/``full`` for no limit."""
    if str(text).lower() in ("none", "full", "all"):
        return None
    value = int(text)
    if value < 1:
        raise ValueError(text)
    return value


def compose_config(overrides: list[str], output_dir: Path, conf_dir: Path) -> Any:
    """The app config exactly as ``python run.py <overrides>`` composes it (Hydra compose API)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import open_dict

    from autolora_exp.schema import register

    register()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(conf_dir.resolve()), version_base="1.3"):
            cfg = compose(config_name="config", overrides=list(overrides))
    except HydraException as err:  # a bad override names itself; one line for the user
        raise UserError(f"config {' '.join(overrides)!r} does not compose: {str(err).splitlines()[0]}") from None
    finally:
        GlobalHydra.instance().clear()
    with open_dict(cfg):
        cfg.output_dir = str(output_dir)
    return cfg


def resolved_config(overrides: list[str], output_dir: Path, conf_dir: Path) -> dict[str, Any]:
    """The resolved config (plain dict) ``python run.py <overrides>`` would run."""
    from omegaconf import OmegaConf

    return OmegaConf.to_container(compose_config(overrides, output_dir, conf_dir), resolve=True)


def config_digest(overrides: list[str], output_dir: Path, conf_dir: Path) -> str:
    """The config hash pipeline.run will record for these overrides (see results.config_hash)."""
    return results.config_hash(resolved_config(overrides, output_dir, conf_dir))


@dataclass
class BenchRun:
    """One configuration of a benchmark: what identifies it, its overrides, its folder."""

    key: dict[str, Any]
    overrides: list[str]
    folder: Path


@dataclass
class RunRecord:
    key: dict[str, Any]
    folder: Path
    #: completed | failed | not_run (no finished result to reuse, and computing was off)
    status: str
    #: True when a finished result.json of the same config was reused (nothing recomputed)
    reused: bool = False
    result: dict[str, Any] | None = None
    error: str | None = None
    #: {"wall_s", "cpu_s", "loadavg_before", "loadavg_after", "started", "command"} of the process
    process: dict[str, Any] = field(default_factory=dict)

    def entry(self) -> dict[str, Any]:
        """The fields every benchmark reports of a run (its key, folder, status, reuse, process),
        with its error when it has no result; each benchmark adds its figures."""
        entry = {**self.key, "folder": str(self.folder), "status": self.status, "reused": self.reused,
                 "process": self.process}
        return entry if self.result is not None else entry | {"error": self.error}


def run_one(run: BenchRun, repo: Path, python: str = sys.executable, echo: bool = True,
            committed: tuple[Path, Path] | None = None, compute: bool = True) -> RunRecord:
    """Reuse a finished result.json of the run's config, or run it in a fresh process.

    Reused where it lies (:func:`find_reusable`): the planned folder with the config digest
    (``seed<N>-<digest>``), the planned folder without it (the layout before run folders carried
    it), or another ``seed<N>-*`` folder beside them. With ``committed = (runs_root, store)`` the
    same places in a store of committed results (e.g. ``docs/bench/runs`` from another machine)
    are looked at next, and a hit is copied here (:func:`import_committed`). ``compute=False``:
    a run with no finished result is not started (status ``not_run``).
    """
    conf_dir = repo / "conf"
    current = resolved_config(run.overrides, run.folder, conf_dir)
    digest = results.config_hash(current)
    hit = find_reusable(run.folder, digest, current)
    if hit is None and committed is not None:
        hit = import_committed(run.folder, digest, *committed, current)
        if hit is not None and echo:
            print(f"[bench] import {committed[1] / hit[0].relative_to(committed[0])}", flush=True)
    if hit is not None:
        folder, finished = hit
        if echo:
            print(f"[bench] reuse {folder}", flush=True)
        return RunRecord(run.key, folder, "completed", reused=True, result=finished,
                         process=_read_json(folder / BENCH_FILE).get("process", {}))
    run = BenchRun(run.key, run.overrides, with_digest(run.folder, digest))
    if not compute:
        return RunRecord(run.key, run.folder, "not_run", error="no finished result; not computed")

    run.folder.mkdir(parents=True, exist_ok=True)
    cmd = [python, str(repo / "run.py"), *run.overrides, f"hydra.run.dir={run.folder}"]
    env = os.environ | RUN_ENV
    if echo:
        print(f"[bench] run  {' '.join(run.overrides)}", flush=True)
    process: dict[str, Any] = {"command": shlex.join(cmd[1:]), "started": results.now(),
                               "loadavg_before": _loadavg()}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(run.folder / LOG_FILE, "w", encoding="utf-8") as log:
        rc = subprocess.run(cmd, cwd=repo, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    # the child's CPU seconds (user + system, all its threads): less sensitive to other jobs
    # on shared cores than wall time, though still not immune (cache, memory bandwidth)
    process.update(wall_s=round(time.perf_counter() - start, 3), returncode=rc, loadavg_after=_loadavg(),
                   cpu_s=round(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime, 3))
    result = _read_json(run.folder / results.RESULT_FILE) if rc == 0 else {}
    if rc != 0 or result.get("status") != "completed":
        failed = _read_json(run.folder / results.FAILED_FILE)
        error = failed.get("error") or _tail(run.folder / LOG_FILE) or f"exit status {rc}"
        if echo:
            print(f"[bench] FAILED ({rc}): {error}  (log: {run.folder / LOG_FILE})", flush=True)
        return RunRecord(run.key, run.folder, "failed", error=error, process=process)
    if result.get("config_hash") != digest:  # compose here and in run.py disagree: say so, keep going
        process["warning"] = f"config hash {result.get('config_hash')} != composed {digest}"
    atomic_write_json(run.folder / BENCH_FILE, {"key": run.key, "config_hash": digest, "process": process})
    return RunRecord(run.key, run.folder, "completed", result=result, process=process)


_NO_DEFAULT = object()


def schema_default(config: dict[str, Any], path: tuple[str, ...]) -> Any:
    """The schema's default for the key at ``path`` (``_NO_DEFAULT`` when it has none).

    Walks the structured-config dataclasses of autolora_exp.schema; ``method`` is the registered
    method schema (autolora_exp.contract) whose ``_target_`` the config names.
    """
    import dataclasses
    import typing

    from autolora_exp import schema
    from autolora_exp.contract import discover_methods

    node: Any = schema.Config
    for depth, key in enumerate(path):
        if depth == 1 and path[0] == "method":
            target = config.get("method", {}).get("_target_")
            node = next((spec.schema for spec in discover_methods().values()
                         if getattr(spec.schema, "_target_", None) == target), None)
            if node is None:
                return _NO_DEFAULT
        if not dataclasses.is_dataclass(node):
            return _NO_DEFAULT
        found = {f.name: f for f in dataclasses.fields(node)}.get(key)
        if found is None:
            return _NO_DEFAULT
        if depth == len(path) - 1:
            if found.default is not dataclasses.MISSING:
                return found.default
            if found.default_factory is not dataclasses.MISSING:
                value = found.default_factory()
                return dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
            return _NO_DEFAULT
        node = typing.get_type_hints(node).get(key) if not (depth == 0 and key == "method") else None


#: keys the schema no longer has, each with what now holds its effect on the numbers: a stored
#: run that differs from the current config only by these (and by added keys at their defaults)
#: computed what the current config computes
DROPPED_KEYS: dict[tuple[str, ...], str] = {
    # issue 18: AutoLoRA's search length moved to the method; the resolved method.search.epochs
    # (compared like any key) holds the value, and no other method read it
    ("task", "search_epochs"): "method.search.epochs",
}


def _presets_unused(current: dict[str, Any]) -> bool:
    """``model.target_presets`` only matter when ``model.target_modules`` names one of them."""
    return not isinstance((current.get("model") or {}).get("target_modules"), str)


#: keys added since a stored run that do not change what it computed under a condition of the
#: current config (checked with it), whatever their value (model configs give them values)
ADDED_KEYS_WITHOUT_EFFECT: dict[tuple[str, ...], Any] = {
    # issue 18: the per-model presets of model.target_modules; a run that lists its modules uses none
    ("model", "target_presets"): _presets_unused,
}


def added_keys_at_default(stored: dict[str, Any], current: dict[str, Any],
                          dropped: list[str] | None = None) -> list[str] | None:
    """Keys the current config has and a stored run's config lacks, when all sit at their schema
    defaults or are without effect on it (:data:`ADDED_KEYS_WITHOUT_EFFECT`).

    ``[]`` when the configs are equal, the dotted names of the added keys when the stored config
    equals the current one without them and each holds its schema default (a key added to the
    schema after the run, which computes what the run computed), else None (another config).
    Keys left out of the hash (results.UNHASHED_KEYS) are ignored; a key of the stored run
    listed in :data:`DROPPED_KEYS` is ignored too and its dotted name appended to ``dropped``.
    """
    added: list[str] = []

    def walk(a: Any, b: Any, path: tuple[str, ...]) -> bool:
        if path in results.UNHASHED_KEYS:
            return True
        if isinstance(a, dict) and isinstance(b, dict):
            for key in sorted(set(a) - set(b)):
                if path + (key,) in DROPPED_KEYS:
                    if dropped is not None:
                        dropped.append(".".join(path + (key,)))
                elif path + (key,) not in results.UNHASHED_KEYS:
                    return False  # the stored run had a key the schema no longer has
            for key in b:
                if key not in a:
                    if path + (key,) in results.UNHASHED_KEYS:
                        continue
                    unused = ADDED_KEYS_WITHOUT_EFFECT.get(path + (key,))
                    if unused is not None and unused(current):
                        added.append(".".join(path + (key,)))
                        continue
                    default = schema_default(current, path + (key,))
                    if default is _NO_DEFAULT or json.dumps(default, sort_keys=True, default=str) != json.dumps(
                            b[key], sort_keys=True, default=str):
                        return False
                    added.append(".".join(path + (key,)))
                elif not walk(a[key], b[key], path + (key,)):
                    return False
            return True
        return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)

    return added if walk(stored, current, ()) else None


def reusable_result(folder: Path, digest: str, current: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """The finished result.json in ``folder`` when it computed this config: the same hash, or
    (given the ``current`` resolved config) the same config up to schema keys added since, at
    their defaults (recorded in the result as ``reused_with_added_keys``) and keys dropped since
    (:data:`DROPPED_KEYS`, recorded as ``reused_with_dropped_keys``)."""
    finished = results.finished_result(folder, digest)
    if finished is not None or current is None:
        return finished
    stored = _read_json(folder / results.RESULT_FILE)
    if stored.get("status") != "completed" or not isinstance(stored.get("config"), dict):
        return None
    dropped: list[str] = []
    added = added_keys_at_default(stored["config"], current, dropped)
    if added is None:
        return None
    return stored | {"reused_with_added_keys": added} | ({"reused_with_dropped_keys": dropped} if dropped else {})


#: an AutoLoRA search's thresholded ranks at every alpha log (:func:`autolora_exp.methods.autolora.search_budget.search_ranks`),
#: written beside result.json by scripts/bench_search_budget.py: what the budget curve is rebuilt from
SEARCH_RANKS_FILE = "search_ranks.json"
#: the files of a finished run that a committed store keeps when present (small JSON: no weights, no logs)
COMMITTED_FILES = (results.RESULT_FILE, BENCH_FILE, SEARCH_RANKS_FILE)


def candidate_folders(planned: Path, digest: str) -> list[Path]:
    """Where a finished run of the planned folder may lie: ``seed<N>-<digest>``, ``seed<N>``
    (the layout before run folders carried the digest), then any other ``seed<N>-*`` beside them
    (a run of an earlier schema: :func:`reusable_result` decides)."""
    exact = [with_digest(planned, digest), planned]
    others = sorted(p for p in planned.parent.glob(f"{planned.name}-*") if p not in exact) \
        if planned.parent.is_dir() else []
    return exact + others


def find_reusable(planned: Path, digest: str, current: dict[str, Any] | None = None
                  ) -> tuple[Path, dict[str, Any]] | None:
    """``(folder, result)`` of the first candidate folder holding a result this config may reuse."""
    for folder in candidate_folders(planned, digest):
        found = reusable_result(folder, digest, current)
        if found is not None:
            return folder, found
    return None


def import_committed(planned: Path, digest: str, runs_root: Path, store: Path,
                     current: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]] | None:
    """Copy a committed finished run of this config from ``store`` into ``runs_root``.

    ``store`` mirrors ``runs_root``: the run ``runs_root/<rel>`` is kept as ``store/<rel>/result.json``
    (+ ``bench.json``). The store's folders are searched as local ones (:func:`find_reusable`): a
    committed result of another config (other data path, device, settings) is ignored, and nothing
    local is overwritten. Returns ``(local folder, result)`` or None.
    """
    try:
        rel = planned.relative_to(runs_root)
    except ValueError:
        return None
    hit = find_reusable(store / rel, digest, current)
    if hit is None:
        return None
    target = runs_root / hit[0].relative_to(store)
    if (target / results.RESULT_FILE).exists():
        return None
    target.mkdir(parents=True, exist_ok=True)
    for name in COMMITTED_FILES:
        if (hit[0] / name).is_file():
            atomic_write_text(target / name, (hit[0] / name).read_text(encoding="utf-8"))
    found = reusable_result(target, digest, current)
    return None if found is None else (target, found)


def export_committed(records: Iterable["RunRecord"], runs_root: Path, store: Path) -> int:
    """Copy every finished run's small JSON files to ``store`` (mirroring ``runs_root``); the count copied."""
    copied = 0
    for rec in records:
        if rec.status != "completed":
            continue
        try:
            target = store / rec.folder.relative_to(runs_root)
        except ValueError:
            continue
        for name in COMMITTED_FILES:
            src = rec.folder / name
            if src.is_file() and (not (target / name).is_file()
                                  or (target / name).read_bytes() != src.read_bytes()):
                target.mkdir(parents=True, exist_ok=True)
                atomic_write_text(target / name, src.read_text(encoding="utf-8"))
                copied += name == results.RESULT_FILE
    return copied


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _tail(path: Path, lines: int = 3) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(text[-lines:])


def _loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine_info() -> dict[str, Any]:
    """What the figures were measured on: CPU model, cores, memory, accelerator, load now."""
    import torch

    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu_model": cpu, "nproc": os.cpu_count(), "usable_cores": len(os.sched_getaffinity(0)),
            "mem_total_gb": mem_gb, "gpu": gpu, "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(), "loadavg": _loadavg(),
            "git_commit": results.git_commit()}


def machine_line(machine: dict[str, Any]) -> str:
    """One line for a Markdown summary."""
    where = machine.get("gpu") or f"CPU only ({machine.get('cpu_model')})"
    return (f"{where}; {machine.get('nproc')} cores, {machine.get('mem_total_gb')} GiB RAM, "
            f"torch {machine.get('torch')} ({machine.get('torch_threads')} threads); "
            f"load average (1/5/15 min) when this summary started {machine.get('loadavg')}")


def stats(values: Iterable[float]) -> dict[str, Any] | None:
    """Median, min, max, mean, sample standard deviation (None for one value) and n over the
    finite values; ``nonfinite`` counts the NaN/inf ones (left out of every statistic, shown)."""
    given = [float(v) for v in values if v is not None]
    xs = [x for x in given if math.isfinite(x)]
    if not xs:
        return None
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "mean": statistics.fmean(xs),
            "std": statistics.stdev(xs) if len(xs) > 1 else None, "n": len(xs), "nonfinite": len(given) - len(xs)}


def fmt_stat(s: dict[str, Any] | None, scale: float = 1.0, digits: int = 2) -> str:
    """``median [min-max] (n)``, or the value alone for one seed; ``-`` when missing;
    ``(n=2 of 3, 1 NaN/inf)`` when a seed's value was not finite."""
    if not s:
        return "-"
    med = f"{s['median'] * scale:.{digits}f}"
    bad = s.get("nonfinite") or 0
    if s["n"] == 1 and not bad:
        return med
    n = f"{s['n']} of {s['n'] + bad}, {bad} NaN/inf" if bad else str(s["n"])
    return f"{med} [{s['min'] * scale:.{digits}f}–{s['max'] * scale:.{digits}f}] (n={n})"


def md_table(header: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def command_line(script: str, argv: list[str]) -> str:
    return shlex.join(["python", script, *argv])


def write_report(bench: str, script: str, argv: list[str], settings: dict[str, Any], machine: dict[str, Any],
                 start: float, records: list[RunRecord], entries: list[dict[str, Any]], summary: dict[str, Any],
                 markdown: Any, out: Path, name: str, echo: bool = True) -> int:
    """Write ``<out>/<name>.json`` and ``.md`` (atomically), print the Markdown; exit status 1 if a run failed."""
    report: dict[str, Any] = {"bench": bench, "created": results.now(), "command": command_line(script, argv),
                              "settings": settings, "machine": machine, "loadavg_end": machine_info()["loadavg"],
                              "bench_wall_s": round(time.perf_counter() - start, 1),
                              "runs_computed": sum(1 for r in records if not r.reused and r.status != "not_run"),
                              "runs_not_run": sum(1 for r in records if r.status == "not_run"),
                              "runs_reused": sum(1 for r in records if r.reused),
                              # the runs' own process wall seconds, whenever they were computed
                              "runs_process_wall_s": round(sum(r.process.get("wall_s") or 0 for r in records), 1),
                              # finished runs whose bench.json is missing (e.g. the benchmark was SIGKILLed
                              # between the run's result.json and its record): not in the sum above
                              "runs_without_process_record": sum(1 for r in records if r.status == "completed"
                                                                 and r.process.get("wall_s") is None),
                              "runs": entries}
    report |= summary
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{name}.json", report)
    text = markdown(report)
    atomic_write_text(out / f"{name}.md", text)
    if echo:
        print(text)
    return 1 if any(e["status"] == "failed" for e in entries) else 0


def process_wall_text(report: dict[str, Any]) -> str:
    """The report's sentence on the runs' own process wall time, naming the runs it leaves out."""
    text = f"the runs' process wall time {report['runs_process_wall_s']:.0f} s in all"
    missing = report.get("runs_without_process_record", 0)
    return text + (f" ({missing} finished run(s) without a process record in {BENCH_FILE}: not in it)"
                   if missing else "")


def add_run_arguments(p: Any, repo: Path, epochs: int, stem: str) -> None:
    """The flags both benchmarks share: model, data, sizes, schedule, device, output."""
    p.add_argument("--model", default="minilm", help="model config (default minilm, the packaged MiniLM)")
    p.add_argument("--data-dir", type=Path, default=repo.parent / "shared" / "data" / "glue",
                   help="folder of the official GLUE files")
    p.add_argument("--train-samples", type=optional_int, default=None,
                   help="seeded training subsample (default: the whole training set; 'none' = whole)")
    p.add_argument("--eval-samples", type=optional_int, default=None, help="dev subsample (default: whole)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--epochs", type=int, default=epochs, help=f"training epochs of every method (default {epochs})")
    p.add_argument("--search-epochs", type=int, default=None,
                   help="AutoLoRA's search epochs (method.search.epochs; default: --epochs)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (resolved once, recorded in the config)")
    p.add_argument("--override", action="append", default=[], help="extra Hydra override for every run (repeatable)")
    p.add_argument("--out", type=Path, default=repo / "outputs" / "bench", help="output folder")
    p.add_argument("--name", default=None, help=f"summary file stem (default {stem}, {stem}_quick with --quick)")
    p.add_argument("--quick", action="store_true", help="tiny-roberta smoke configuration (a few steps)")


def add_committed_argument(p: Any, repo: Path) -> None:
    p.add_argument("--committed", type=_store_path, default=repo / "docs" / "bench" / "runs",
                   help="store of committed results (small JSON): finished runs are read from it before "
                        "computing and copied to it as they finish, so another machine resumes "
                        "(default docs/bench/runs; 'none' = off)")


def _store_path(text: str) -> Path | None:
    return None if str(text).lower() == "none" else Path(text)


def committed_store(args: Any) -> tuple[Path, Path] | None:
    """``(runs root, store)`` for :func:`run_one` / :func:`run_benchmark`, or None when off."""
    return (args.out / "runs", args.committed) if args.committed else None


def parse_with_quick(p: Any, argv: list[str] | None, quick: dict[str, Any], stem: str) -> Any:
    """Parse; with --quick the smoke settings become the defaults (explicit flags still win)."""
    if p.parse_known_args(argv)[0].quick:
        p.set_defaults(**quick)
    args = p.parse_args(argv)
    args.name = args.name or (f"{stem}_quick" if args.quick else stem)
    return args


def run_benchmark(bench: str, script: str, argv: list[str], args: Any, repo: Path, plan: Any, run_entry: Any,
                  summarise: Any, markdown: Any, committed: tuple[Path, Path] | None = None,
                  on_record: Any = None, compute: bool = True) -> int:
    """The body of a benchmark script: plan, run (or reuse) every run, summarise, write the report.

    ``plan(args) -> (runs, settings)``, ``run_entry(record) -> entry`` and
    ``summarise(entries, settings) -> summary`` are the script's own; a bad setting is one
    ``error:`` line and exit status 2. ``committed = (runs_root, store)``: runs are imported
    from the store when there (see :func:`run_one`) and every finished one is exported to it as
    soon as it finishes, so a stopped benchmark leaves its results ready to commit.
    ``on_record(records_so_far)`` is called after every run (partial reports). ``compute=False``
    starts no run: the report is built from the finished ones, the rest are ``not_run``.
    """
    try:
        runs, settings = plan(args)
        machine = machine_info()
        start = time.perf_counter()
        records = []
        for run in runs:
            records.append(run_one(run, repo, committed=committed, compute=compute))
            if committed is not None:
                export_committed(records[-1:], *committed)
            if on_record is not None:
                on_record(records, settings, machine, start)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    entries = [run_entry(r) for r in records]
    return write_report(bench, script, argv, settings, machine, start, records, entries,
                        summarise(entries, settings), markdown, args.out, args.name)
