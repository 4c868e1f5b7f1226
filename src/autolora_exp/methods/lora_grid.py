"""The LoRA rank grid search (the paper's cost table, Table 5): the baseline AutoLoRA replaces.

    for r in ranks:  train LoRA(r) on D_tr, score it on D_val        (one full training per rank)
    r*  = the rank with the best D_val metric (best epoch)
    retrain LoRA(r*) on D_tr + D_val and report its dev metric, like every other method

It uses exactly the held-out split AutoLoRA searches on (the pipeline's ``split_for_search``),
so the two are compared on equal terms; its cost is the search phase (every grid training)
plus the retrain.

Preemption is exact: rank r trains from its own seed, derived from (seed, r), so it does not
depend on the ranks trained before it; its training is checkpointed like any other
(``checkpoints/search_r<r>.pt``, RNG included), and each finished rank is recorded in the
grid's checkpoint. A stopped grid resumes inside the rank it was training and gives the same
scores and best rank, bit for bit on CPU, as an uninterrupted one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

from autolora_exp.contract import (COUNT, DROPOUT, LEARNING_RATE, LORA_ALPHA, Method, MethodConfig, MethodSpec,
                                   RankSearch, SearchContext, SearchPlan, register_method)
from autolora_exp.errors import UserError
from autolora_exp.methods.lora import LoRA
from autolora_exp.models import check_target_modules, count_parameters
from autolora_exp.seeding import derived_seed, seed_everything
from autolora_exp.validation import Accepts, accepts, check_fields


@dataclass
class LoRAGridConfig(MethodConfig):
    """LoRA trained at each rank of ``ranks`` on D_tr, the best on D_val retrained (Table 5)."""

    _target_: str = "autolora_exp.methods.lora_grid.LoRAGrid"
    name: str = "lora_grid"
    lr: float = accepts(5e-4, **LEARNING_RATE)
    ranks: list[int] = accepts(factory=lambda: [1, 2, 4, 8, 16], min_items=1, distinct=True, item=Accepts(**COUNT))
    lora_alpha: float = accepts(16.0, **LORA_ALPHA)
    lora_dropout: float = accepts(0.1, **DROPOUT)


register_method(MethodSpec("lora_grid", LoRAGridConfig, table_labels={"lora_grid": "LoRA + grid search"}))


@dataclass
class GridResult:
    #: the selected rank, for every target layer
    ranks: dict[str, int]
    best_rank: int
    #: rank -> {"value" (D_val primary metric, best epoch), "best_epoch", "steps", "wall_s", "trainable"}
    per_rank: dict[int, dict[str, Any]] = field(default_factory=dict)
    steps: int = 0
    #: one forward+backward pass per training step
    passes_per_iteration: int = 1
    wall_time_s: float = 0.0

    @property
    def mean_rank(self) -> float:
        return float(self.best_rank)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"mean_rank": self.mean_rank}

    def rank_search(self) -> RankSearch:
        """The pipeline's view: ranks, cost, per_rank for result.json, this as search.json."""
        return RankSearch(ranks=self.ranks, steps=self.steps, passes_per_iteration=self.passes_per_iteration,
                          record={"per_rank": self.per_rank}, artifacts={"search.json": self.to_dict()})


class LoRAGrid(Method):
    """Select one LoRA rank for all layers by a grid search on the held-out half."""

    name = "lora_grid"
    #: the grid searches on the pipeline's D_tr / D_val split, 1:1, at train.batch_size
    search_plan = SearchPlan()

    def __init__(self, name: str = LoRAGridConfig.name, lr: float = LoRAGridConfig.lr, ranks: list[int] | None = None,
                 lora_alpha: float = LoRAGridConfig.lora_alpha, lora_dropout: float = LoRAGridConfig.lora_dropout) -> None:
        self.name = name
        self.lr = lr
        # None = the default grid; an empty list is an error (it once ran the default grid and
        # recorded [] in result.json)
        self.grid = [int(r) for r in (LoRAGridConfig().ranks if ranks is None else ranks)]
        check_fields(LoRAGridConfig(name=name, lr=lr, ranks=self.grid, lora_alpha=lora_alpha,
                                    lora_dropout=lora_dropout), "method.")  # distinct ranks >= 1, ...
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout

    def lora(self, r: int) -> LoRA:
        return LoRA(name=self.name, lr=self.lr, r=r, lora_alpha=self.lora_alpha, lora_dropout=self.lora_dropout)

    def search_ranks(self, ctx: SearchContext) -> RankSearch:
        return self.grid_search(ctx).rank_search()

    def grid_search(self, ctx: SearchContext) -> GridResult:
        state = ctx.checkpointer.load() if ctx.checkpointer else None
        if state is not None and state.get("done"):
            return GridResult(**state["result"])
        per_rank: dict[int, dict[str, Any]] = dict(state["per_rank"]) if state else {}
        layers: list[str] = list(state["layers"]) if state else []
        start = time.perf_counter()
        for r in self.grid:
            if r in per_rank:
                continue
            t0 = time.perf_counter()
            seed_everything(derived_seed(ctx.seed, r))  # head and LoRA init, dropout: rank r's own stream
            lora = self.lora(r)
            model = ctx.new_model()
            layers = check_target_modules(model, ctx.target_modules)
            model = lora.prepare(model, ctx.target_modules, ctx.head_modules).to(ctx.device)
            rank_checkpointer = (ctx.checkpointer.for_phase(f"{ctx.checkpointer.phase}_r{r}")
                                 if ctx.checkpointer is not None else None)
            trained = ctx.fit(model, lora, ctx.d_tr_loader, lambda m: {"d_val": ctx.evaluate_val(m)}, self.lr,
                              phase=f"grid r={r}", checkpointer=rank_checkpointer,
                              on_epoch=self._history_entry(ctx, r, per_rank))
            per_rank[r] = {"value": trained.best_value, "best_epoch": trained.best_epoch, "steps": trained.steps,
                           "wall_s": round(time.perf_counter() - t0, 3),
                           "trainable": count_parameters(model)["trainable"]}
            if ctx.checkpointer is not None:
                ctx.checkpointer.save({"per_rank": per_rank, "layers": layers, "step": len(per_rank)})
                rank_checkpointer.clear()  # type: ignore[union-attr]
        scored = {r: v for r, v in per_rank.items() if v["value"] is not None}
        if not scored:
            raise UserError(f"no rank of {self.grid} produced a finite D_val {ctx.primary_metric}")
        pick = max if ctx.greater_is_better else min
        best = pick(scored, key=lambda r: scored[r]["value"])
        result = GridResult(ranks={name: best for name in layers}, best_rank=best, per_rank=per_rank,
                            steps=sum(v["steps"] for v in per_rank.values()),
                            wall_time_s=round(time.perf_counter() - start, 3))
        if ctx.checkpointer is not None:
            ctx.checkpointer.save({"done": True, "result": asdict(result), "step": len(per_rank)})
        return result

    @staticmethod
    def _history_entry(ctx: SearchContext, r: int, per_rank: dict[int, dict[str, Any]]) -> Any:
        """The grid's search curve for ``ctx.on_log``: after every epoch of rank ``r``, its D_tr
        loss and D_val metrics at step = the grid's optimiser steps so far (the ranks before
        ``r`` are the finished ones, also after a resume)."""
        if ctx.on_log is None:
            return None
        offset = sum(v["steps"] for v in per_rank.values())
        return lambda rec: ctx.on_log({"step": offset + rec["step"], "rank": r, "train_loss": rec["train_loss"],
                                       "d_val": rec["eval"]["d_val"]})

    def after_search(self, found: RankSearch) -> LoRA:
        """LoRA at the selected rank, trained by the shared loop on the whole training set."""
        return self.lora(max(found.ranks.values()))
