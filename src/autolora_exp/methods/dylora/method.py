"""DyLoRA (Valipour et al., EACL 2023): LoRA trained over a range of ranks, the rank chosen after.

    model = LoRA with r_max components on the target layers (:mod:`.layer`)
    fit on D_tr; before every step:  b ~ Uniform{r_min, ..., r_max}     (one b for all layers)
                                     forward with the first b components, scaling alpha / b,
                                     gradient only to the b-th (``frozen``, the default)
    for b in r_min..r_max:  score the model at rank b on D_val
    b* = the best D_val score (ties: the smaller rank, fewer parameters)
    the final model = the trained one truncated to b*: no retrain

Source: the reference code, huawei-noah/Efficient-NLP @ bb44348, DyLoRA/: the step's rank is
``torch.randint(0, r_max)`` + 1, uniform over 1..r_max, set on every layer with ``frozen=True``
before each step (examples/NLU/examples/text-classification/run_glue.py:542-552); after
training every rank 1..r_max is evaluated (run_glue.py:603-612). The paper selects among the
ranks on the dev set; here the choice is made on D_val, a held-out share of the training set
(``val_fraction``), and dev/test only report the chosen model.

In this project it is a method with a rank search and no training phase: :meth:`search_ranks`
trains through the shared loop (``ctx.fit``; the rank is drawn in :meth:`on_step_begin`),
returns the truncated model in :class:`~autolora_exp.contract.RankSearch`, and
:meth:`after_search` returns None, so the pipeline evaluates that model on dev and test.

The rank draws come from their own generator, seeded by ``derived_seed(run seed,
RANK_SAMPLER_STREAM)``: the draws do not depend on, nor change, the global RNG (LoRA dropout,
data order); the generator's state is in the checkpoints (:meth:`state_dict`), so a stopped
run resumes with the same draws.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from autolora_exp.contract import Method, RankSearch, SearchContext, SearchPlan
from autolora_exp.errors import UserError
from autolora_exp.methods.dylora.config import DyLoRAConfig
from autolora_exp.methods.dylora.layer import dylora_layers, inject_dylora, set_rank
from autolora_exp.seeding import derived_seed
from autolora_exp.validation import check_fields

#: the key of the rank draws' seed: ``derived_seed(seed, RANK_SAMPLER_STREAM)``
RANK_SAMPLER_STREAM = 0xD7


class RankSampler:
    """b ~ Uniform{r_min, ..., r_max} from its own ``torch.Generator``; counts its draws."""

    def __init__(self, r_min: int, r_max: int, seed: int) -> None:
        self.r_min, self.r_max = r_min, r_max
        self.generator = torch.Generator().manual_seed(seed)
        #: rank -> times drawn
        self.draws = {b: 0 for b in range(r_min, r_max + 1)}

    def draw(self) -> int:
        b = self.r_min + int(torch.randint(0, self.r_max - self.r_min + 1, (1,), generator=self.generator))
        self.draws[b] += 1
        return b

    def state_dict(self) -> dict[str, Any]:
        return {"generator": self.generator.get_state(), "draws": dict(self.draws)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.generator.set_state(state["generator"])
        self.draws = {int(b): int(n) for b, n in state["draws"].items()}


def select_rank(scores: dict[int, float], greater_is_better: bool) -> int:
    """The rank with the best finite score; among equal scores the smallest rank.

    Raises :class:`UserError` when no score is finite.
    """
    finite = {b: v for b, v in scores.items() if v is not None and math.isfinite(v)}
    if not finite:
        raise UserError(f"no rank of {sorted(scores)} has a finite D_val score: {scores}")
    sign = -1.0 if greater_is_better else 1.0
    return min(finite, key=lambda b: (sign * finite[b], b))


class DyLoRA(Method):
    """LoRA with nested dropout over its ranks; the rank chosen on D_val, no retrain."""

    name = "dylora"

    def __init__(self, name: str = DyLoRAConfig.name, lr: float = DyLoRAConfig.lr, r_min: int = DyLoRAConfig.r_min,
                 r_max: int = DyLoRAConfig.r_max, frozen: bool = DyLoRAConfig.frozen,
                 lora_alpha: float = DyLoRAConfig.lora_alpha, lora_dropout: float = DyLoRAConfig.lora_dropout,
                 val_fraction: float = DyLoRAConfig.val_fraction) -> None:
        check_fields(DyLoRAConfig(name=name, lr=lr, r_min=r_min, r_max=r_max, frozen=frozen, lora_alpha=lora_alpha,
                                  lora_dropout=lora_dropout, val_fraction=val_fraction), "method.")
        self.name = name
        self.lr = lr
        self.r_min, self.r_max = int(r_min), int(r_max)
        self.frozen = bool(frozen)
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.search_plan = SearchPlan(val_fraction=val_fraction)
        #: made by :meth:`search_ranks` (its seed is the run's)
        self.sampler: RankSampler | None = None

    @property
    def candidates(self) -> list[int]:
        """The ranks scored on D_val: every rank training used."""
        return list(range(self.r_min, self.r_max + 1))

    # ---- the model -------------------------------------------------------------------------

    def prepare(self, model: nn.Module, target_modules: list[str], head_modules: list[str]) -> nn.Module:
        inject_dylora(model, target_modules, head_modules, self.r_max, self.lora_alpha, self.lora_dropout)
        return model

    def ranks(self, model: nn.Module) -> dict[str, int]:
        return {name: layer.rank for name, layer in dylora_layers(model).items()}

    # ---- the training loop's hooks ---------------------------------------------------------

    def _sampler(self) -> RankSampler:
        if self.sampler is None:
            raise RuntimeError("DyLoRA's rank sampler is made by search_ranks (seeded by the run); none yet")
        return self.sampler

    def on_step_begin(self, model: nn.Module, step: int) -> None:
        """Draw this step's rank b and set it on every layer (frozen: gradient to component b only)."""
        set_rank(model, self._sampler().draw(), frozen=self.frozen)

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        return {"sampler": self._sampler().state_dict()}

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        self._sampler().load_state_dict(state["sampler"])

    # ---- the search --------------------------------------------------------------------------

    def score_ranks(self, model: nn.Module, ctx: SearchContext) -> dict[int, dict[str, float]]:
        """{b: D_val metrics of ``model`` at rank b} for every candidate rank."""
        scores = {}
        for b in self.candidates:
            set_rank(model, b)
            scores[b] = ctx.evaluate_val(model)
        return scores

    def search_ranks(self, ctx: SearchContext) -> RankSearch:
        model = self.prepare(ctx.new_model(), ctx.target_modules, ctx.head_modules)
        self.sampler = RankSampler(self.r_min, self.r_max, derived_seed(ctx.seed, RANK_SAMPLER_STREAM))

        def evaluate_full_rank(m: nn.Module) -> dict[str, dict[str, float]]:
            # the per-epoch curve: D_val at r_max (the next step draws its own rank again)
            set_rank(m, self.r_max)
            return {"d_val": ctx.evaluate_val(m)}

        def log_epoch(record: dict[str, Any]) -> None:
            if ctx.on_log is not None:
                ctx.on_log({"step": record["step"], "train_loss": record["train_loss"], "d_val": record["eval"]["d_val"]})

        trained = ctx.fit(model, self, ctx.d_tr_loader, evaluate_full_rank, self.lr, phase="dylora",
                          checkpointer=ctx.checkpointer, on_epoch=log_epoch)
        per_rank = self.score_ranks(model, ctx)
        chosen = select_rank({b: m.get(ctx.primary_metric) for b, m in per_rank.items()}, ctx.greater_is_better)
        for layer in dylora_layers(model).values():
            layer.truncate(chosen)
        record = {"chosen_rank": chosen, "metric": ctx.primary_metric, "per_rank": per_rank,
                  "rank_draws": dict(self._sampler().draws)}
        return RankSearch(ranks=self.ranks(model), steps=trained.steps, passes_per_iteration=1, record=record,
                          artifacts={"search.json": {**record, "epochs": trained.epochs}}, model=model,
                          epochs=trained.epochs)

    def after_search(self, found: RankSearch) -> None:
        """None: the search trained the final model (``found.model``, truncated to the chosen rank)."""
        return None
