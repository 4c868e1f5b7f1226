"""One run: load data and backbone, (search ranks), train, evaluate, write result.json.

    data   = load the task's splits (hub or local official files)
    method = instantiate(cfg.method)                      (any autolora_exp.contract.Method)
    if method.search_plan is not None:                    (AutoLoRA, the rank grid, ...)
        D_tr, D_val = split of the training set           (the search never sees dev/test)
        found       = method.search_ranks(ctx)            (a RankSearch)
        write rank_pattern.json, rank_heatmap.png, found.artifacts (search.json)
        method      = method.after_search(found)          (AutoLoRA: LoRA with those ranks)
    if method is None: found.model is final               (evaluated once, no training phase)
    else: model = method.prepare(backbone); train on the whole training set, evaluate every
          epoch on the dev split(s)
    write result.json (+ rank heatmap), log to W&B

The pipeline knows a method only through :mod:`autolora_exp.contract`; it imports no method.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import resource
import shutil
import signal
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import torch
from omegaconf import DictConfig, OmegaConf

from autolora_exp import progress, results
from autolora_exp.atomic import WriteError, atomic_write_json
from autolora_exp.checkpoint import Checkpointer, checkpoint_schedule
from autolora_exp.data.checks import check_labels, check_primary_metric, check_splits_not_empty
from autolora_exp.data.source import source_of
from autolora_exp.data.split import ids_hash, sample_groups, split_held_out
from autolora_exp.device import describe_device, device_line, resolve_device, sweep_job_index
from autolora_exp.errors import UserError
from autolora_exp.task_types import TaskKind, make_kind
from autolora_exp.library_output import quiet_libraries
from autolora_exp.contract import Method, RankSearch, SearchContext
from autolora_exp.models import check_head_modules, count_parameters, load_backbone, load_tokenizer, target_modules
from autolora_exp.rank_heatmap import rank_heatmap
from autolora_exp.precision import Precision, allow_tf32, check_precision
from autolora_exp.rank_pattern_file import save_rank_pattern_json
from autolora_exp.preemption import Preempted, StopSignal, stop_point
from autolora_exp.run_folder import ATTEMPTS_FILE, CHECKPOINT_DIR, check_owner, exclusive
from autolora_exp.seeding import seed_everything
from autolora_exp.tracking import Tracker
from autolora_exp.train import bound_fit, fit
from autolora_exp.validation import build, validate_config

log = logging.getLogger(__name__)


class PhaseTimer:
    """Wall and CPU seconds and peak memory per phase (data, search, train, ...), for result.json.

    A run that was stopped (preempted, failed) and run again repeats or resumes its phases;
    what a phase cost is what every attempt spent on it:

        wall_s   = sum over the attempts a that entered the phase of wall_s(a)     (cpu_s alike)
        attempts = the number of those attempts
        peak_*   = the largest peak of any attempt

    The sums of the earlier attempts are kept in ``ledger`` (``checkpoints/attempts.json``),
    rewritten at the end of every phase with the config hash (which also marks the folder's
    checkpoints as this config's: run_folder.check_owner). It goes with the checkpoints once
    result.json is written. Without a ledger every phase counts one attempt.
    """

    def __init__(self, device: torch.device, ledger: Path | None = None, config_hash: str = "") -> None:
        self.device = device
        self.ledger = ledger
        self.config_hash = config_hash
        self.phases: dict[str, dict[str, Any]] = {}
        #: the phase running now (named in failed.json when it fails)
        self.current: str | None = None
        #: phase -> {"wall_s", "cpu_s", "attempts", peaks} summed over the earlier attempts
        self.earlier: dict[str, dict[str, Any]] = self._read_ledger()

    def _read_ledger(self) -> dict[str, dict[str, Any]]:
        if self.ledger is None or not self.ledger.is_file():
            return {}
        try:
            record = json.loads(self.ledger.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            log.warning("%s is unreadable (%s); earlier attempts' costs are not counted", self.ledger, err)
            return {}
        return record.get("phases", {}) if record.get("config_hash") == self.config_hash else {}

    def _write_ledger(self) -> None:
        if self.ledger is None:
            return
        try:
            atomic_write_json(self.ledger, {"config_hash": self.config_hash, "phases": {**self.earlier, **self.phases}})
        except WriteError as err:  # never hides the phase's own outcome; the costs then count this attempt only
            log.warning("%s; the next attempt will not count this one's costs", err)

    @contextmanager
    def __call__(self, name: str) -> Iterator[dict[str, Any]]:
        record: dict[str, Any] = {}
        self.current = name
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        start, cpu = time.perf_counter(), time.process_time()
        try:
            yield record
        finally:
            before = self.earlier.get(name, {})
            record["wall_s"] = round(before.get("wall_s", 0.0) + time.perf_counter() - start, 3)
            # CPU seconds of this process: comparable across runs on a shared machine
            record["cpu_s"] = round(before.get("cpu_s", 0.0) + time.process_time() - cpu, 3)
            record["attempts"] = before.get("attempts", 0) + 1
            if self.device.type == "cuda":
                peak = ("peak_mem_mb", round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1))
            else:  # process-lifetime peak resident set (Linux reports KiB)
                peak = ("peak_rss_mb", round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))
            record[peak[0]] = max(peak[1], before.get(peak[0], 0.0))
            self.phases[name] = record
            self._write_ledger()


def load_task_data(task_cfg: DictConfig, seed: int) -> Any:
    """The task's ``DatasetDict``: loader from ``task.loader``, then seeded subsampling."""
    loader = build(task_cfg.loader, "task.loader", _partial_=True)
    params = inspect.signature(loader.func).parameters
    kwargs: dict[str, Any] = {}
    if task_cfg.data_dir is not None:
        if "data_dir" not in params:
            raise UserError(f"task '{task_cfg.name}' has no local data option: unset task.data_dir")
        kwargs["data_dir"] = task_cfg.data_dir
    if "seed" in params:
        kwargs["seed"] = seed
    data = loader(**kwargs)

    needed = ["train", *task_cfg.eval_splits] + ([task_cfg.test_split] if task_cfg.test_split else [])
    missing = [s for s in needed if s not in data]
    if missing:
        raise UserError(f"task '{task_cfg.name}': split(s) {missing} are missing from the data "
                        f"(found {sorted(data)}); supply the files or change task.eval_splits")
    check_splits_not_empty(data, needed, task_cfg)
    if task_cfg.max_train_samples is not None and len(data["train"]) > task_cfg.max_train_samples:
        data["train"] = data["train"].shuffle(seed=seed).select(range(task_cfg.max_train_samples))
    for split in needed[1:]:  # evaluation: whole inputs, each with all its references (NLG ``group``)
        ds, limit = data[split], task_cfg.max_eval_samples
        if limit is None:
            continue
        if "group" in ds.column_names:
            data[split] = ds.select(sample_groups(ds["group"], limit, seed))
        elif len(ds) > limit:
            data[split] = ds.shuffle(seed=seed).select(range(limit))
    return data


def check_metric_programs(metric: Any, task_name: str) -> None:
    """A metric marked ``needs_java`` (E2E, WebNLG: METEOR 1.5, the PTB tokenizer) finds Java and its
    jars at setup. Only such a metric imports the NLG metrics' package (it needs pycocoevalcap):
    a GLUE run works without it, as on the GPU check's machine."""
    func = metric.func if isinstance(metric, functools.partial) else metric
    if getattr(func, "needs_java", False):
        from autolora_exp.metrics.nlg.java import check_java_for

        log.debug("java for the metrics: %s", check_java_for(metric, f"task '{task_name}'"))


def split_record(data: Any) -> dict[str, dict[str, Any]]:
    """Per split: row count, hash of the row ids, and the route the rows came from where the
    loader records one (:mod:`autolora_exp.data.source`)."""
    records = {}
    for split, ds in data.items():
        records[split] = {"n": len(ds), "ids_sha256": ids_hash(ds["idx"])}
        if (source := source_of(data, split)) is not None:
            records[split]["source"] = source
    return records


def split_for_search(train: Any, seed: int, val_fraction: float = 0.5) -> tuple[Any, Any]:
    """AutoLoRA's seeded split of the original training set into D_tr and D_val: 1:1 as the
    paper (``val_fraction=0.5``), or D_val ~ ``val_fraction`` of it (the authors' code: 0.3).

    The search only ever receives these two parts of ``train``: checked here, in code, that
    they are disjoint and together are exactly the training set. Rows are grouped by their
    ``group`` column when there is one, else by ``idx``.
    """
    # rows that share an input (NLG references, windows of one sentence) stay on one side
    groups = train["group"] if "group" in train.column_names else train["idx"]
    tr_idx, val_idx = split_held_out(list(groups), seed, val_fraction)
    tr, val = set(map(int, tr_idx)), set(map(int, val_idx))
    if tr & val or tr | val != set(range(len(train))):
        raise RuntimeError("D_tr and D_val must partition the training set")
    return train.select(sorted(tr)), train.select(sorted(val))


def subsample_for_search(part: Any, seed: int, fraction: float) -> Any:
    """The seeded share ``fraction`` of D_tr or D_val that the search runs on (1: all of it).

    The kept rows are the D_tr side of :func:`split_held_out` at held-out share 1 - fraction,
    so rows sharing a ``group`` stay together and the count is within one group of fraction * n.
    """
    if fraction >= 1.0:
        return part
    groups = part["group"] if "group" in part.column_names else part["idx"]
    kept, _ = split_held_out(list(groups), seed, 1.0 - fraction)
    return part.select(sorted(map(int, kept)))


def search_phase(cfg: DictConfig, method: Method, data: Any, encoded: Any, kind: TaskKind, loader_for: Any,
                 tracker: Tracker, output_dir: Path, checkpointer: Checkpointer, stop: StopSignal,
                 precision: Precision) -> tuple[RankSearch, dict[str, Any]]:
    """Split, search; writes ``rank_pattern.json``, the rank heatmap and every file of
    ``found.artifacts`` (AutoLoRA, the grid: ``search.json``). Returns the search and its
    result.json entry."""
    plan = method.search_plan
    assert plan is not None, "search_phase needs a method with a search_plan"
    d_tr, d_val = split_for_search(encoded["train"], cfg.seed, plan.val_fraction)
    share_tr, share_val = plan.subsample_tr, plan.subsample_val
    d_tr, d_val = subsample_for_search(d_tr, cfg.seed, share_tr), subsample_for_search(d_val, cfg.seed, share_val)
    device = precision.device
    search_batch = plan.batch_size or cfg.train.batch_size
    @functools.cache
    def val_eval_data() -> tuple[Any, Any]:
        """D_val as raw rows and their evaluation loader, built on first use (only a method that
        scores on D_val uses it): kinds that score whole inputs (NER words, NLG references) need the rows."""
        val_ids = set(d_val["idx"])
        raw_val = data["train"].filter(lambda row: row["idx"] in val_ids, keep_in_memory=True)
        return raw_val, loader_for(kind.encode("d_val", raw_val), False)

    def evaluate_val(model: torch.nn.Module) -> dict[str, float]:
        with precision.autocast():
            return kind.evaluate(model, "d_val", *val_eval_data(), device, None)

    ctx = SearchContext(
        new_model=lambda: backbone(cfg.model, kind).to(device),
        target_modules=list(cfg.model.target_modules), head_modules=list(cfg.model.head_modules),
        d_tr_loader=loader_for(d_tr, True, search_batch), d_val_loader=loader_for(d_val, True, search_batch),
        evaluate_val=evaluate_val,
        fit=bound_fit(cfg.train, cfg.task.primary_metric, device, greater_is_better=kind.greater_is_better,
                      stop=stop, precision=precision),
        train_cfg=cfg.train, primary_metric=cfg.task.primary_metric, greater_is_better=kind.greater_is_better,
        device=device, on_log=tracker.log_search, progress=cfg.train.progress, checkpointer=checkpointer, stop=stop,
        seed=cfg.seed, precision=precision)
    found = method.search_ranks(ctx)
    save_rank_pattern_json(found.ranks, output_dir / "rank_pattern.json")
    rank_heatmap(found.ranks, output_dir / "rank_heatmap.png",
                 title=f"{cfg.task.name} | {cfg.model.name} | {method.name}")
    for file_name, content in found.artifacts.items():
        atomic_write_json(output_dir / file_name, content)
    entry = {
        "ranks": found.ranks,
        "mean_rank": found.mean_rank,
        "steps": found.steps,
        "passes_per_iteration": found.passes_per_iteration,
        **found.record,  # the method's own fields (AutoLoRA: alphas, converged_at, stop_reason; the grid: per_rank)
        # the rows the search ran on: D_tr and D_val after the plan's subsample_tr / subsample_val
        "split": {name: {"n": len(set(part["idx"])), "rows": len(part), "ids_sha256": ids_hash(set(part["idx"])),
                         "subsample": share}
                  for name, part, share in (("d_tr", d_tr, share_tr), ("d_val", d_val, share_val))},
    }
    return found, entry


def backbone(model_cfg: DictConfig, kind: TaskKind) -> torch.nn.Module:
    """The backbone with a fresh task head, its ``model.head_modules`` checked (every method)."""
    model = load_backbone(model_cfg, kind.tokenizer, kind.auto_class, kind.head_kwargs())
    check_head_modules(model, list(model_cfg.head_modules))
    return model


#: seed offsets of the phases: each phase starts from its own seed, so a run resumed at the
#: retrain (search already done) initialises exactly as an uninterrupted one
PHASE_SEEDS = {"search": 1, "train": 2}


def run(cfg: DictConfig, stop: StopSignal | None = None) -> dict[str, Any]:
    """The whole pipeline for one composed config; returns the result written to result.json.

    Skips the run when its folder already holds a result.json of the same config (hash), and
    resumes from the phase checkpoints when an earlier attempt was stopped. A failure writes
    failed.json (error and phase) and re-raises; a stop (:class:`Preempted`) or an abort (a second
    Ctrl-C) is no failure: the checkpoints are the record. Refuses a folder that holds another
    config's files or that another process is running in.
    """
    output_dir = Path(cfg.output_dir)
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise WriteError(output_dir, err) from None
    with exclusive(output_dir):
        return _run_in(cfg, output_dir, stop)


def _run_in(cfg: DictConfig, output_dir: Path, stop: StopSignal | None) -> dict[str, Any]:
    config = OmegaConf.to_container(cfg, resolve=True)
    digest = results.config_hash(config)
    try:  # every value, before anything loads; a sweep lists the job as failed in phase "config"
        validate_config(cfg)
    except UserError as err:
        results.write_failure(output_dir, "config", err, config, digest)
        raise
    cfg.model.target_modules = target_modules(cfg.model)  # a preset name (all_linear) -> its module names
    finished = results.finished_result(output_dir, digest)
    if finished is not None:
        print(f"already finished (same config): {output_dir / results.RESULT_FILE}", flush=True)
        return finished
    check_owner(output_dir, digest)  # another config's result.json or checkpoints: refuse, touch nothing
    try:
        method = build(cfg.method, "method")  # the method's own rules (e.g. AdaLoRA's target_r < init_r) run here
        precision, device_info = setup_device(cfg, method)
    except UserError as err:
        results.write_failure(output_dir, "setup", err, config, digest)
        raise
    timer = PhaseTimer(precision.device, output_dir / CHECKPOINT_DIR / ATTEMPTS_FILE, digest)
    tracker = Tracker.for_run(cfg, config, digest)
    try:
        result = _run(cfg, config, digest, output_dir, timer, tracker, stop or StopSignal(), precision, device_info,
                      method)
    except Preempted as err:
        tracker.stopped(err.signum)
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: an abort, no failure
        tracker.stopped(signal.SIGINT)
        raise
    except BaseException as err:
        results.write_failure(output_dir, timer.current or "setup", err, config, digest)
        tracker.failed(timer.current or "setup", err)
        raise
    tracker.finish()
    (output_dir / results.FAILED_FILE).unlink(missing_ok=True)
    if not cfg.train.keep_checkpoints:
        shutil.rmtree(output_dir / CHECKPOINT_DIR, ignore_errors=True)
    return result


def setup_device(cfg: DictConfig, method: Method) -> tuple[Precision, dict[str, Any]]:
    """The run's device (chosen once, here) and precision, checked (also by the method's own
    rule, e.g. AutoLoRA's search: no fp16), printed and described."""
    check_precision(cfg.train.precision)
    method.check_precision(cfg.train.precision)
    device = resolve_device(cfg.device, sweep_job_index())
    tf32 = allow_tf32(device, cfg.train.tf32)
    info = describe_device(device, cfg.train.precision, cfg.model.attn_implementation, tf32)
    print(device_line(info), flush=True)
    return Precision(cfg.train.precision, device), info


def _run(cfg: DictConfig, config: dict[str, Any], digest: str, output_dir: Path, timer: "PhaseTimer",
         tracker: Tracker, stop: StopSignal, precision: Precision, device_info: dict[str, Any],
         searching_method: Method) -> dict[str, Any]:
    seed_everything(cfg.seed)
    progress.configure(enabled=cfg.train.progress, every_s=cfg.train.log_every_s)
    quiet_libraries()
    device = precision.device
    schedule = checkpoint_schedule(cfg.train)
    task_cfg, model_cfg = cfg.task, cfg.model

    def checkpointer(phase: str) -> Checkpointer:
        return Checkpointer(output_dir / CHECKPOINT_DIR, phase, config_hash=digest, **schedule)

    metric = build(task_cfg.metric, "task.metric")
    check_metric_programs(metric, task_cfg.name)  # before any data or training
    with timer("data"):
        data = load_task_data(task_cfg, cfg.seed)
        check_labels(data, task_cfg)
        tokenizer = load_tokenizer(model_cfg, task_cfg.kind)
        kind = make_kind(task_cfg, tokenizer, metric)
        check_primary_metric(kind.metric_names(), task_cfg)
        encoded = {split: kind.encode(split, ds) for split, ds in data.items()}

    pin_memory = device.type == "cuda" if cfg.train.pin_memory is None else cfg.train.pin_memory

    def loader_for(dataset: Any, shuffle: bool, batch_size: int | None = None) -> Any:
        bs = batch_size or (cfg.train.batch_size if shuffle else cfg.train.eval_batch_size)
        return kind.loader(dataset, bs, shuffle, cfg.seed, cfg.train.num_workers, pin_memory=pin_memory,
                           group_by_length=cfg.train.group_by_length)

    def evaluate_split(model: torch.nn.Module, split: str) -> dict[str, float]:
        with precision.autocast():  # evaluation and decoding under the run's precision
            return kind.evaluate(model, split, data[split], loader_for(encoded[split], False), device, output_dir)

    def evaluate(model: torch.nn.Module) -> dict[str, dict[str, float]]:
        return {split: evaluate_split(model, split) for split in task_cfg.eval_splits}

    search, found = None, None
    stop_point("data")  # a stop during data loading ends the run here (nothing to save yet)
    method: Method | None = searching_method
    if searching_method.search_plan is not None:
        with timer("search") as record:
            seed_everything(cfg.seed + PHASE_SEEDS["search"])
            found, search = search_phase(cfg, searching_method, data, encoded, kind, loader_for, tracker, output_dir,
                                         checkpointer("search"), stop, precision)
            record.update(steps=found.steps, passes_per_iteration=found.passes_per_iteration)
        method = searching_method.after_search(found)

    if method is not None:
        with timer("train") as record:
            seed_everything(cfg.seed + PHASE_SEEDS["train"])
            model = backbone(model_cfg, kind)
            model = method.prepare(model, list(model_cfg.target_modules), list(model_cfg.head_modules)).to(device)
            params = count_parameters(model)
            trained = fit(model, method, loader_for(encoded["train"], True), evaluate, cfg.train, method.lr,
                          task_cfg.primary_metric, device, greater_is_better=kind.greater_is_better,
                          on_epoch=tracker.log_epoch, on_step=tracker.log_train_step,
                          checkpointer=checkpointer("train"), stop=stop, precision=precision)
            record.update(steps=trained.steps, resumed_from_step=trained.resumed_from)
        ranks = method.ranks(model)
        params |= method.parameter_counts(model)  # e.g. SoRA's count once its zero gates are pruned
        best = trained.epochs[trained.best_epoch - 1] if trained.best_epoch else trained.epochs[-1]
        metrics = {"final": trained.epochs[-1]["eval"], "best": best["eval"], "best_epoch": trained.best_epoch,
                   "per_epoch": trained.epochs}
    else:  # the search trained the final model (no retrain): evaluate it once
        model, metrics = searched_model(found, evaluate, timer)
        params = count_parameters(model) | searching_method.parameter_counts(model)
        ranks = searching_method.ranks(model) or found.ranks
        method = searching_method

    test = None
    if task_cfg.test_split:
        with timer("test"):
            try:
                test = evaluate_split(model, task_cfg.test_split)
            except Preempted as stopped:  # the retrain's final checkpoint is kept; the test is redone
                raise stopped.within("test") from None

    if ranks and search is None:  # AdaLoRA's final budget, drawn like AutoLoRA's found ranks
        rank_heatmap(ranks, output_dir / "rank_heatmap.png", title=f"{task_cfg.name} | {model_cfg.name} | {method.name}")
    result = {
        "schema_version": results.SCHEMA_VERSION,
        "status": "completed",
        "name": cfg.name,
        "task": task_cfg.name,
        "model": model_cfg.name,
        "method": method.name,
        "seed": cfg.seed,
        "config_hash": digest,
        "config": config,
        "metrics": {
            "primary": task_cfg.primary_metric,
            **metrics,
            "test": test,
        },
        "params": params,
        "ranks": ranks,
        "search": search,
        "phases": dict(timer.phases),  # as written: the "write" phase below is timed after it
        "data": split_record(data),
        "env": results.environment(str(device)) | {"device_info": {
            **device_info, "attn_implementation": getattr(model.config, "_attn_implementation", None)}},
        "created": results.now(),
    }
    tracker.record_result(result, output_dir)
    with timer("write"):
        path = write_result_or_report(output_dir, result)
    tracker.log_outputs(output_dir)
    print_summary(result, path)
    return result


def searched_model(found: RankSearch | None, evaluate: Any, timer: PhaseTimer) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The final model of a method whose search trained it (``after_search`` -> None), its eval
    splits scored once (phase "eval"): result.json's metrics get per_epoch = the search's
    epochs, best = final = that evaluation, best_epoch = None."""
    if found is None or found.model is None:
        raise RuntimeError("after_search() returned None but the search returned no model (RankSearch.model)")
    with timer("eval"):
        scores = evaluate(found.model)
    return found.model, {"final": scores, "best": scores, "best_epoch": None, "per_epoch": list(found.epochs)}


def write_result_or_report(output_dir: Path, result: dict[str, Any]) -> Path:
    """Write result.json; if the disk refuses, print the metrics so nothing computed is lost."""
    try:
        return results.write_result(output_dir, result)
    except OSError as err:  # a WriteError (disk full, read-only, permissions)
        print(json.dumps({"metrics": result["metrics"], "params": result["params"], "ranks": result["ranks"]},
                         default=str), file=sys.stderr, flush=True)
        raise UserError(f"could not write {output_dir / results.RESULT_FILE} ({err.strerror or err}); the metrics "
                        "are printed above and the checkpoints are kept: free space and run the same command "
                        "again (it resumes from the checkpoints)") from err


def print_summary(result: dict[str, Any], path: Path) -> None:
    m = result["metrics"]
    primary = m["primary"]
    lines = [f"== {result['task']} | {result['model']} | {result['method']} | seed {result['seed']}"]
    for split, scores in m["final"].items():
        lines.append(f"   {split:<24} final {primary} {scores[primary]:.4f}   "
                     f"best {m['best'][split][primary]:.4f} (epoch {m['best_epoch']})")
    if m["test"]:
        lines.append(f"   {'test':<24} {primary} {m['test'][primary]:.4f}")
    p = result["params"]
    lines.append(f"   trainable params {p['trainable']:,} of {p['total']:,}")
    lines.append("   " + ", ".join(f"{k} {v['wall_s']:.1f}s" for k, v in result["phases"].items()))
    lines.append(f"   result: {path}")
    print("\n".join(lines), flush=True)
