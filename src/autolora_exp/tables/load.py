"""A folder of run outputs -> runs and failures, grouped into cells and aggregated over seeds.

Everything the tables know comes from two files a run leaves in its folder:

- ``result.json`` (schema in :mod:`autolora_exp.results`): a completed run;
- ``failed.json`` (``{"status": "failed", "phase", "error", "config", ...}``): a run that
  stopped; it is listed in the tables, never dropped. A folder holding both, of one config, is
  a run that failed once and then completed: its result counts and the stale failure is
  ignored. A failure of another config, or beside a result.json that cannot be read, is listed.

Any other ``result.json``/``failed.json`` that cannot be read is kept as *unreadable* and
listed too.

A *cell* is one (experiment, task, model, method, variant) and holds one run per seed; the
experiment is the run's ``name`` (``table1_glue``, ``mini/table1_glue``, ...). ``variant``
separates runs of one method that differ in a swept setting the tables show: LoRA's rank ``r``
(Table 5 trains LoRA at every rank of a grid), and any other config key in which two runs of
one cell and seed differ (:func:`variant_labels`).

Scores are the ones the paper reports: on the task's test split when it has one (E2E, WebNLG,
BioNLP), else on its first dev split (GLUE; MNLI: validation_matched), taken from the best
epoch (``select="best"``, the LoRA paper's "the result for each run is taken from the best
epoch") or the last (``select="final"``).
"""

from __future__ import annotations

import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from autolora_exp import results as results_schema
from autolora_exp.errors import UserError

#: the phases whose wall time is the training cost (data loading and the final test pass are not)
COST_PHASES = ("search", "train")
SELECTIONS = ("best", "final")

CellKey = tuple[str, str, str, str, str]  # experiment, task, model, method, variant


@dataclass(frozen=True)
class Run:
    """One completed run, reduced to what the tables show."""

    experiment: str
    task: str
    model: str
    method: str
    variant: str
    seed: int
    split: str                       # the split ``scores`` are on
    scores: dict[str, float]         # every metric on that split
    primary: str                     # the task's metric (``scores[primary]``)
    trainable: int | None            # trainable parameters
    cost_s: float | None             # sum of COST_PHASES wall times (None when none recorded)
    ranks: dict[str, int] | None     # ranks the search found (AutoLoRA, the grid), per LoRA layer
    path: Path
    #: the ranks the final model trained with (result.json ``ranks``; AdaLoRA: those its budget left)
    trained_ranks: dict[str, int] | None = None
    #: the epoch ``best`` scores come from; None where the final model has no epochs to select
    #: from (a method whose search trains it, e.g. DyLoRA: best = final)
    best_epoch: int | None = None
    #: the grid a ``lora_grid`` run searched (``method.ranks``), else empty
    config_ranks: tuple[int, ...] = ()
    #: result.json's ``config_hash`` (two configs of one cell and seed are two runs)
    config_hash: str = ""

    @property
    def key(self) -> CellKey:
        return (self.experiment, self.task, self.model, self.method, self.variant)


@dataclass(frozen=True)
class Failure:
    """One failed run, from its ``failed.json``."""

    experiment: str
    task: str
    model: str
    method: str
    variant: str
    seed: int | None
    phase: str
    error: str
    path: Path

    @property
    def key(self) -> CellKey:
        return (self.experiment, self.task, self.model, self.method, self.variant)

    def describe(self) -> str:
        seed = "?" if self.seed is None else self.seed
        method = self.method + (f" {self.variant}" if self.variant else "")
        return f"{self.task} | {self.model} | {method} | seed {seed}: {self.phase}: {self.error} ({self.path})"


@dataclass(frozen=True)
class Stat:
    """One cell's values over seeds: median, spread (min-max, quartiles) and n.

    ``values`` are the finite ones; a seed whose value is NaN or infinite (a collapsed run)
    is kept apart in ``nonfinite``: shown next to the number (``n=2 of 3, 1 NaN``), never
    folded into the median or the range (the median of [x, NaN, y] depends on the order).
    """

    values: tuple[float, ...]
    seeds: tuple[int, ...]
    #: (seed, value) of the runs whose value is NaN or +-inf
    nonfinite: tuple[tuple[int, float], ...] = ()

    @property
    def n(self) -> int:
        return len(self.values)

    def nonfinite_counts(self) -> list[str]:
        """``["1 NaN", "1 inf"]``: the non-finite values by kind."""
        nan = sum(1 for _, v in self.nonfinite if math.isnan(v))
        inf = len(self.nonfinite) - nan
        return [f"{k} {label}" for k, label in ((nan, "NaN"), (inf, "inf")) if k]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def lo(self) -> float:
        return min(self.values)

    @property
    def hi(self) -> float:
        return max(self.values)

    @property
    def iqr(self) -> tuple[float, float]:
        """(Q1, Q3), inclusive method (the sample's own quartiles; both equal the value when n = 1)."""
        if self.n == 1:
            return (self.values[0], self.values[0])
        q1, _, q3 = statistics.quantiles(self.values, n=4, method="inclusive")
        return (q1, q3)


def aggregate(pairs: Iterable[tuple[int, float]]) -> Stat | None:
    """``(seed, value)`` pairs -> :class:`Stat` (seed order), or None when there are none.

    Non-finite values go to ``Stat.nonfinite``; a Stat may then hold no finite value (n = 0).
    """
    pairs = sorted(((s, float(v)) for s, v in pairs), key=lambda p: p[0])
    if not pairs:
        return None
    finite = [(s, v) for s, v in pairs if math.isfinite(v)]
    return Stat(values=tuple(v for _, v in finite), seeds=tuple(s for s, _ in finite),
                nonfinite=tuple((s, v) for s, v in pairs if not math.isfinite(v)))


@dataclass
class Collection:
    """The runs, failures and unreadable files of a folder."""

    runs: list[Run] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    unreadable: list[tuple[Path, str]] = field(default_factory=list)
    #: runs that were found more than once for one cell and seed (the newest is kept)
    duplicates: list[Path] = field(default_factory=list)

    def experiments(self) -> list[str]:
        return sorted({r.experiment for r in self.runs} | {f.experiment for f in self.failures})

    def of(self, experiment: str) -> Collection:
        return Collection([r for r in self.runs if r.experiment == experiment],
                          [f for f in self.failures if f.experiment == experiment], [], [])

    def cells(self) -> dict[CellKey, list[Run]]:
        out: dict[CellKey, list[Run]] = defaultdict(list)
        for run in self.runs:
            out[run.key].append(run)
        return dict(out)

    def failed_cells(self) -> dict[CellKey, list[Failure]]:
        out: dict[CellKey, list[Failure]] = defaultdict(list)
        for failure in self.failures:
            out[failure.key].append(failure)
        return dict(out)

    def stat(self, key: CellKey, value: str = "score", metric: str | None = None) -> Stat | None:
        """Aggregate one cell: ``value`` is ``score`` (``metric``, default the primary),
        ``cost_s``, ``trainable`` or ``mean_rank``."""
        return aggregate((r.seed, v) for r in self.cells().get(key, []) if (v := run_value(r, value, metric)) is not None)


def run_value(run: Run, value: str, metric: str | None = None) -> float | None:
    if value == "score":
        return run.scores.get(metric or run.primary)
    if value == "cost_s":
        return run.cost_s
    if value == "trainable":
        return None if run.trainable is None else float(run.trainable)
    if value == "mean_rank":
        return None if not run.ranks else sum(run.ranks.values()) / len(run.ranks)
    raise UserError(f"unknown cell value {value!r}; accepted: score, cost_s, trainable, mean_rank")


# ---- reading ---------------------------------------------------------------------------------


def variant_of(config: dict[str, Any]) -> str:
    """The swept setting that splits one method's runs into separate cells: LoRA's uniform rank."""
    method = config.get("method") or {}
    if method.get("name") == "lora" and not method.get("rank_pattern") and not method.get("rank_pattern_file") \
            and "r" in method:
        return f"r={method['r']}"
    return ""


def reported(result: dict[str, Any], select: str) -> tuple[str, dict[str, float]]:
    """(split, metrics) the paper reports for this run: see the module docstring."""
    metrics = result["metrics"]
    if metrics.get("test"):
        return "test", metrics["test"]
    by_split = metrics[select]
    eval_splits = ((result.get("config") or {}).get("task") or {}).get("eval_splits") or list(by_split)
    split = eval_splits[0]
    return split, by_split[split]


def trained_parameters(params: dict[str, Any]) -> int | None:
    """The Params column: the trainable parameters of the final model, i.e. ``effective`` where
    the method reports one (SoRA: what is left once its zero gates are pruned), else ``trainable``."""
    return params.get("effective", params.get("trainable"))


def run_from_result(result: dict[str, Any], path: Path, select: str) -> Run:
    split, scores = reported(result, select)
    phases = result.get("phases") or {}
    costs = [phases[p]["wall_s"] for p in COST_PHASES if p in phases and "wall_s" in phases[p]]
    search = result.get("search") or {}
    return Run(
        experiment=result.get("name") or result["config"].get("name", "default"),
        task=result["task"], model=result["model"], method=result["method"],
        variant=variant_of(result["config"]), seed=int(result["seed"]), split=split,
        scores={k: float(v) for k, v in scores.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
        primary=result["metrics"]["primary"],
        trainable=trained_parameters(result.get("params") or {}),
        cost_s=round(sum(costs), 3) if costs else None,
        ranks=search.get("ranks"),
        path=path,
        trained_ranks=result.get("ranks"),
        best_epoch=result["metrics"].get("best_epoch"),
        config_ranks=tuple((result["config"].get("method") or {}).get("ranks") or ()),
        config_hash=results_schema.recorded_hash(result) or "",
    )


def failure_from_record(record: dict[str, Any], path: Path) -> Failure:
    config = record.get("config") or {}

    def name_of(group: str) -> str:
        node = config.get(group)
        return str(node.get("name", "?")) if isinstance(node, dict) else "?"

    seed = config.get("seed", record.get("seed"))
    return Failure(
        experiment=str(config.get("name") or record.get("name") or "default"),
        task=name_of("task"), model=name_of("model"), method=name_of("method"), variant=variant_of(config),
        seed=None if seed is None else int(seed),
        phase=str(record.get("phase", "?")),
        error=" ".join(str(record.get("error", "?")).split())[:300],
        path=path,
    )


def load_folder(root: str | Path, select: str = "best") -> Collection:
    """Every ``result.json`` and ``failed.json`` under ``root``.

    A file that cannot be read (permissions, encoding, not JSON, not a result) is listed in
    ``unreadable`` and the others are still read. Two results of one cell and seed:

    - the same config (``config_hash``, e.g. a copied folder): one run, the newest kept, the
      other listed in ``duplicates``;
    - different configs (``method.lr=1e-4`` and ``1e-2``): two runs; the cell is split by the
      config keys its runs differ in (:func:`variant_labels`), which join the ``variant``
      (``lr=...`` rows), so neither is dropped or folded into the other's median; failed runs
      of such a cell are split the same way.
    """
    if select not in SELECTIONS:
        raise UserError(f"select={select!r} is not valid; accepted: {', '.join(SELECTIONS)}")
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"results folder {str(root)!r} does not exist; pass the folder the sweeps wrote "
                        f"(e.g. outputs/multirun)")
    out = Collection()
    read: list[tuple[Run, str, dict[str, Any]]] = []  # (run, created, config)
    for path in sorted(root.rglob(results_schema.RESULT_FILE)):
        try:
            result = json.loads(path.read_text(encoding="utf-8"))
            results_schema.validate_result(result)
            run = run_from_result(result, path, select)
        except (OSError, ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
            out.unreadable.append((path, f"{type(err).__name__}: {err}"))
            continue
        read.append((run, str(result.get("created", "")), result["config"]))
    #: folder -> config hash of the result read there
    completed = {run.path.parent: run.config_hash for run, _, _ in read}
    failed: list[tuple[Failure, str, dict[str, Any]]] = []  # (failure, config hash, config)
    for path in sorted(root.rglob(results_schema.FAILED_FILE)):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(record, dict) or record.get("status") != "failed":
                raise ValueError("not a failure record (status != 'failed')")
            config = record.get("config") or {}
            digest = results_schema.recorded_hash(record) or ""
            if completed.get(path.parent) == digest:
                continue  # failed once, completed on a re-launch
            failed.append((failure_from_record(record, path), digest, config))
        except (OSError, ValueError, TypeError, AttributeError) as err:
            out.unreadable.append((path, f"{type(err).__name__}: {err}"))
    labels = variant_labels([(r.key, r.seed, r.config_hash, c) for r, _, c in read] +
                            [(f.key, f.seed, h, c) for f, h, c in failed])
    kept: dict[tuple[CellKey, int, str], tuple[str, Run]] = {}
    for run, created, _ in read:
        run = _with_label(run, labels.get((run.key, run.config_hash), ""))
        slot = (run.key, run.seed, run.config_hash)
        if slot in kept:  # the same config twice (e.g. copied folders): keep the newest
            old_created, old = kept[slot]
            out.duplicates.append((old if created >= old_created else run).path)
            if created < old_created:
                continue
        kept[slot] = (created, run)
    out.runs = [run for _, run in kept.values()]
    out.failures = [_with_label(f, labels.get((f.key, h), "")) for f, h, _ in failed]
    out.runs.sort(key=lambda r: (r.key, r.seed))
    out.failures.sort(key=lambda f: (f.key, f.seed if f.seed is not None else -1))
    return out


def flat_config(config: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """``{"method": {"lr": 0.01}}`` -> ``{"method.lr": "0.01"}`` (lists as JSON)."""
    flat: dict[str, str] = {}
    for key, value in config.items():
        if isinstance(value, dict):
            flat.update(flat_config(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = json.dumps(value, sort_keys=True, default=str)
    return flat


#: keys that never split a cell: the seed (a cell's runs are its seeds) and the unhashed keys
NOT_A_VARIANT = ("seed", *(".".join(path) for path in results_schema.UNHASHED_KEYS))


def differing_keys(configs: list[dict[str, Any]]) -> list[str]:
    """The config keys (dotted) whose values are not the same in every config, sorted."""
    flats = [flat_config(c) for c in configs]
    keys = sorted(set().union(*flats))
    return [k for k in keys if not k.startswith(tuple(f"{n}." for n in NOT_A_VARIANT)) and k not in NOT_A_VARIANT
            and len({f.get(k, "<absent>") for f in flats}) > 1]


def variant_labels(items: list[tuple[CellKey, int | None, str, dict[str, Any]]]) -> dict[tuple[CellKey, str], str]:
    """``(cell, seed, config hash, config)`` of every run and failure -> a label per (cell,
    config hash) for the cells that hold two configs for one seed: the keys they differ in
    (``lr=0.0001``). Cells with one config per seed get none (their runs are its seeds)."""
    cells: dict[CellKey, list[tuple[int | None, str, dict[str, Any]]]] = defaultdict(list)
    for key, seed, digest, config in items:
        cells[key].append((seed, digest, config))
    labels: dict[tuple[CellKey, str], str] = {}
    for key, entries in cells.items():
        per_seed: dict[int | None, set[str]] = defaultdict(set)
        for seed, digest, _ in entries:
            per_seed[seed].add(digest)
        if all(len(digests) == 1 for digests in per_seed.values()):
            continue
        keys = differing_keys([config for _, _, config in entries])
        for _, digest, config in entries:
            flat = flat_config(config)
            labels[(key, digest)] = ", ".join(f"{k.rsplit('.', 1)[-1]}={flat.get(k, '<absent>')}" for k in keys)
    return labels


def _with_label(item: Any, label: str) -> Any:
    """A Run or Failure whose variant also names its config's ``label`` (if any)."""
    if not label:
        return item
    return replace(item, variant=f"{item.variant}, {label}" if item.variant else label)
