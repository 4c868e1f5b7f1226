"""How much AutoLoRA's second-order term weighs, under the paper's search and the authors'.

For each preset P (default: ``autolora``, the paper's equations, and ``autolora_authors``, the
search of the authors' code), on the packaged MiniLM with real GLUE rows:

1. Share of the second-order term. The search runs ``--iterations`` iterations of P; at each,
   the hypergradient h = direct - second_order is split into its terms as they enter beta's
   update (sgd look-ahead: second_order = eta * mixed, eta = 1e-4; the authors' real-step
   look-ahead: the mixed term itself, no eta). Reported: median and range over the iterations of
   ||second_order|| / ||direct||, and of cos(h, direct).
2. Distance to the eta = 0 ablation. P's ``_eta0`` preset (``autolora_eta0``,
   ``autolora_authors_eta0``) runs from the same initial weights on the same batches. Reported:
   ||beta_P - beta_eta0|| / ||beta_P - beta_init|| (the gap in units of P's own displacement),
   and the layers whose rank (P's threshold rule) differs.

Dropout is 0 by default (``--dropout model`` keeps the model's), so the two searches differ by
the second-order term alone, not by dropout draws. Writes ``<out>/second_order.json`` and prints
a Markdown summary.

    python scripts/second_order.py --task rte --train-samples 256 --max-length 128 --iterations 40
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from autolora_exp import results  # noqa: E402
from autolora_exp.atomic import atomic_write_json, atomic_write_text  # noqa: E402
from autolora_exp.bench import command_line, compose_config, machine_info, machine_line, md_table  # noqa: E402
from autolora_exp.task_types import make_kind  # noqa: E402
from autolora_exp.methods.autolora import inject_selection_lora, selection_layers, selection_logits  # noqa: E402
from autolora_exp.methods.autolora.search import BilevelSearch, default_loss_fn  # noqa: E402
from autolora_exp.methods.autolora.threshold import threshold_ranks  # noqa: E402
from autolora_exp.models import load_backbone, load_tokenizer, target_modules  # noqa: E402
from autolora_exp.pipeline import PHASE_SEEDS, load_task_data, split_for_search  # noqa: E402
from autolora_exp.seeding import seed_everything  # noqa: E402
from autolora_exp.train import epoch_batches  # noqa: E402
from hydra.utils import instantiate  # noqa: E402

#: each preset and its eta = 0 ablation
ETA0 = {"autolora": "autolora_eta0", "autolora_authors": "autolora_authors_eta0"}


def _forever(loader: Any) -> Iterator[Any]:
    epoch = 1
    while True:
        yield from epoch_batches(loader, epoch)
        epoch += 1


def _norm(tensors: list[torch.Tensor]) -> float:
    return torch.cat([t.flatten().double() for t in tensors]).norm().item()


def _cos(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    x, y = torch.cat([t.flatten().double() for t in a]), torch.cat([t.flatten().double() for t in b])
    return (x @ y / (x.norm() * y.norm())).item()


def _flat(betas: dict[str, list[float]]) -> torch.Tensor:
    return torch.tensor([b for name in sorted(betas) for b in betas[name]], dtype=torch.float64)


def run_search(method: str, args: argparse.Namespace) -> dict[str, Any]:
    """``args.iterations`` iterations of ``method``'s search; the per-iteration term norms and beta."""
    cfg = compose_config([f"task=glue/{args.task}", "model=minilm", f"method={method}", f"seed={args.seed}",
                          f"task.data_dir={args.data_dir}", f"task.max_train_samples={args.train_samples}",
                          f"task.max_length={args.max_length}", "model.attn_implementation=eager",
                          "logger.mode=disabled", "device=cpu"], REPO / "outputs" / "unused", REPO / "conf")
    seed_everything(cfg.seed)
    meth = instantiate(cfg.method)
    search_cfg = meth.search_config
    data = load_task_data(cfg.task, cfg.seed)
    tokenizer = load_tokenizer(cfg.model, cfg.task.kind)
    kind = make_kind(cfg.task, tokenizer, instantiate(cfg.task.metric))
    d_tr, d_val = split_for_search(kind.encode("train", data["train"]), cfg.seed, meth.search_plan.val_fraction)
    batch = meth.search_plan.batch_size or cfg.train.batch_size

    seed_everything(cfg.seed + PHASE_SEEDS["search"])  # as the pipeline's search phase
    model = load_backbone(cfg.model, kind.tokenizer, kind.auto_class, kind.head_kwargs())
    if args.dropout != "model":
        for m in model.modules():
            if isinstance(m, nn.Dropout):
                m.p = float(args.dropout)
    inject_selection_lora(model, target_modules(cfg.model), k=search_cfg.k, gate=search_cfg.gate,
                          lora_alpha=meth.lora_alpha, trainable_extra=list(cfg.model.head_modules),
                          selection_init=search_cfg.selection_init, train_backbone=search_cfg.train_backbone)
    engine = BilevelSearch(model, search_cfg, default_loss_fn)
    model.train()
    beta_init = selection_logits(model)
    tr_batches = _forever(kind.loader(d_tr, batch, True, cfg.seed, 0))
    val_batches = _forever(kind.loader(d_val, batch, True, cfg.seed, 0))
    ratios, cosines = [], []
    start = time.process_time()
    for _ in range(args.iterations):
        engine.step(next(tr_batches), next(val_batches))
        h = engine.last_hypergradient
        if h is not None and h.second_order is not None:
            ratios.append(_norm(h.second_order) / _norm(h.direct))
            cosines.append(_cos(h.selection_grads, h.direct))
    beta = selection_logits(model)
    return {"method": method, "search": {k: search_cfg.__dict__[k] for k in (
                "hypergrad", "lookahead", "eta", "weight_optimizer", "lr_weights", "selection_optimizer",
                "lr_selection", "selection_init", "val_fraction")} | {"batch_size": batch,
                "threshold": search_cfg.threshold_rule, "look_ahead_eta": search_cfg.look_ahead_eta},
            "rows": {"d_tr": len(d_tr), "d_val": len(d_val)}, "cpu_s": round(time.process_time() - start, 1),
            "second_order_over_direct": ratios, "cos_hypergradient_direct": cosines,
            "beta_init": beta_init, "beta": beta, "ranks": threshold_ranks(beta, search_cfg.threshold_rule),
            "layers": list(selection_layers(model))}


def _summary(values: list[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def compare(full: dict[str, Any], eta0: dict[str, Any]) -> dict[str, Any]:
    b, b0, init = _flat(full["beta"]), _flat(eta0["beta"]), _flat(full["beta_init"])
    differ = [n for n in full["ranks"] if full["ranks"][n] != eta0["ranks"][n]]
    return {"preset": full["method"], "eta0": eta0["method"],
            "second_order_over_direct": _summary(full["second_order_over_direct"]),
            "cos_hypergradient_direct": _summary(full["cos_hypergradient_direct"]),
            "beta_gap_over_displacement": ((b - b0).norm() / (b - init).norm()).item(),
            "beta_displacement": (b - init).norm().item(), "eta0_beta_displacement": (b0 - init).norm().item(),
            "layers": len(full["ranks"]), "layers_rank_differs": len(differ),
            "mean_rank": sum(full["ranks"].values()) / len(full["ranks"]),
            "eta0_mean_rank": sum(eta0["ranks"].values()) / len(eta0["ranks"])}


def markdown(report: dict[str, Any]) -> str:
    rows = []
    for c in report["comparisons"]:
        r, cos = c["second_order_over_direct"], c["cos_hypergradient_direct"]
        rows.append([f"`{c['preset']}`", f"{r['median']:.2e} [{r['min']:.1e}–{r['max']:.1e}]",
                     f"{cos['median']:.3f} [{cos['min']:.2f}–{cos['max']:.2f}]",
                     f"{c['beta_gap_over_displacement']:.2e}",
                     f"{c['layers_rank_differs']} / {c['layers']}",
                     f"{c['mean_rank']:.2f} / {c['eta0_mean_rank']:.2f}"])
    s = report["settings"]
    return "\n".join([
        f"# Second-order term: {s['task']} ({s['train_samples']} rows), MiniLM, {s['iterations']} iterations, "
        f"dropout {s['dropout']}, seed {s['seed']}", "",
        md_table(["preset", "‖2nd order‖ / ‖direct‖, median [range]", "cos(h, direct)",
                  "‖β − β_η0‖ / ‖β − β_init‖", "layers whose rank differs from η = 0", "mean rank / η = 0"], rows),
        "", f"`{report['command']}`", "", machine_line(report["machine"]), ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="rte", help="GLUE task (default rte)")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "glue"))
    p.add_argument("--train-samples", type=int, default=256)
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--iterations", type=int, default=40)
    p.add_argument("--presets", default="autolora,autolora_authors")
    p.add_argument("--dropout", default="0", help="dropout in every layer of the model, or 'model' to keep it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(REPO / "outputs" / "second_order"))
    args = p.parse_args(argv)
    presets = [x for x in args.presets.split(",") if x]
    unknown = [x for x in presets if x not in ETA0]
    if unknown:
        raise SystemExit(f"error: unknown preset(s) {unknown}; accepted: {', '.join(ETA0)}")
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    machine = machine_info()
    report: dict[str, Any] = {"created": results.now(), "command": command_line("scripts/second_order.py", argv or
                                                                                sys.argv[1:]),
                              "settings": {k: v for k, v in vars(args).items() if k != "out"}, "machine": machine,
                              "searches": [], "comparisons": []}
    for preset in presets:
        full, eta0 = run_search(preset, args), run_search(ETA0[preset], args)
        report["searches"] += [full, eta0]
        report["comparisons"].append(compare(full, eta0))
    report["loadavg_end"] = machine_info()["loadavg"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "second_order.json", report)
    text = markdown(report)
    atomic_write_text(out / "second_order.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
