"""Host synchronisations the hot loops make on a GPU, counted by torch.cuda.set_sync_debug_mode.

Runs the training loop (LoRA) and the AutoLoRA search (darts, bf16) on a small random RoBERTa on
the GPU, each at two lengths, and counts the synchronising calls whose Python caller is one of
train.py, search.py or hypergrad.py. The per-step figure is the difference between the two
lengths divided by the extra steps: 0 when nothing in those loops synchronises per step (the
reads at the log/epoch boundaries are the same at both lengths). Writes <out>/sync.json.

    python scripts/sync_check.py --out outputs/gpu_check
"""

from __future__ import annotations

import argparse
import collections
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import torch

HOT = ("train.py", "search.py", "hypergrad.py")


def model(device: torch.device):
    from transformers import RobertaConfig, RobertaForSequenceClassification

    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=72, num_labels=2)
    return RobertaForSequenceClassification(cfg).to(device)


def batches(n: int, device: torch.device, seed: int) -> list[dict[str, torch.Tensor]]:
    """Host batches in pinned memory, as a DataLoader with pin_memory hands them over."""
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(5, 1000, (8, 64), generator=g).pin_memory(),
             "labels": torch.randint(0, 2, (8,), generator=g).pin_memory()} for _ in range(n)]


def run_fit(steps: int, device: torch.device) -> None:
    from autolora_exp.methods.lora import LoRA
    from autolora_exp.precision import Precision
    from autolora_exp.train import fit

    method = LoRA(r=4)
    net = method.prepare(model(device), ["query", "value"], ["classifier"])
    cfg = SimpleNamespace(epochs=1, max_steps=None, weight_decay=0.1, warmup_ratio=0.0, max_grad_norm=1.0,
                          progress=False, log_every=10_000)
    fit(net, method, batches(steps, device, 1), lambda m: {"validation": {"accuracy": 0.0}}, cfg, 1e-3, "accuracy",
        device, precision=Precision("bf16", device))


def run_search(steps: int, device: torch.device) -> None:
    from autolora_exp.methods.autolora import SearchConfig, inject_selection_lora, search
    from autolora_exp.precision import Precision

    net = model(device)
    inject_selection_lora(net, ["query", "value"], k=4, trainable_extra=["classifier"])
    search(net, batches(steps, device, 1), batches(steps, device, 2), SearchConfig(k=4, log_every=10_000),
           progress=False, precision=Precision("bf16", device))


def count(fn, steps: int, device: torch.device) -> collections.Counter:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            fn(steps, device)
            torch.cuda.synchronize(device)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return collections.Counter(f"{Path(w.filename).name}:{w.lineno}" for w in caught
                               if "synchroniz" in str(w.message) and Path(w.filename).name in HOT
                               and "autolora_exp" in w.filename)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="outputs/gpu_check")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not torch.cuda.is_available():
        report = {"skipped": "no GPU: torch.cuda.set_sync_debug_mode needs one (tests/test_host_sync.py is the CPU check)"}
    else:
        device = torch.device("cuda")
        report = {}
        for name, fn, short, long in (("train", run_fit, 4, 12), ("search", run_search, 3, 9)):
            count(fn, 2, device)  # warm-up: kernels, lazy initialisation
            a, b = count(fn, short, device), count(fn, long, device)
            report[name] = {"steps": [short, long], "syncs": [sum(a.values()), sum(b.values())],
                            "per_step": (sum(b.values()) - sum(a.values())) / (long - short),
                            "where": dict(b)}
    (out / "sync.json").write_text(json.dumps(report, indent=2) + "\n")
    print("sync check:", json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
