"""AutoLoRA as a method of the pipeline: search the ranks, then retrain LoRA with them.

    search_ranks:   inject selection LoRA (k rank-1 terms per layer, gate on beta), run the
                    bilevel search on D_tr / D_val, threshold alpha -> rank per layer
    after_search:   a fresh peft LoRA whose ``rank_pattern`` holds exactly those ranks
                    (rank-0 layers get no LoRA), trained by the shared loop on D_tr + D_val

Its schema (:class:`AutoLoRAConfig`), table labels and the per-task search length
(:mod:`~autolora_exp.methods.autolora.search_epochs`) are registered here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from autolora_exp.contract import (DROPOUT, LEARNING_RATE, LORA_ALPHA, Method, MethodConfig, MethodSpec, RankSearch,
                                   SearchContext, SearchPlan, register_method)
from autolora_exp.methods.autolora.layer import inject_selection_lora
from autolora_exp.methods.autolora.rank_pattern import SCALINGS, rank_pattern_config
from autolora_exp.methods.autolora.search import SearchConfig, SearchResult, search
from autolora_exp.methods.autolora.search_epochs import register_search_epochs_resolver
from autolora_exp.methods.lora import LoRA
from autolora_exp.precision import check_search_precision
from autolora_exp.validation import accepts


@dataclass
class AutoLoRAConfig(MethodConfig):
    """AutoLoRA: ``search`` holds the bilevel search (k, gate, hypergradient, optimisers); ``lr``,
    ``lora_alpha``, ``lora_dropout`` and ``scaling`` are the retrain's LoRA settings."""

    _target_: str = "autolora_exp.methods.autolora.method.AutoLoRA"
    name: str = "autolora"
    lr: float = accepts(5e-4, **LEARNING_RATE)
    lora_alpha: float = accepts(16.0, **LORA_ALPHA)
    lora_dropout: float = accepts(0.1, **DROPOUT)
    #: per_layer (peft: lora_alpha / r_l) | fixed (lora_alpha / k for every layer)
    scaling: str = accepts("per_layer", choices=SCALINGS)
    search: SearchConfig = field(default_factory=SearchConfig)


#: the tables' row label of each result name the AutoLoRA presets (conf/method/autolora*.yaml) produce;
#: an ablation names its parent, as it also stands outside Table 4 (e.g. the glue_evidence rows)
TABLE_LABELS = {
    "autolora": "AutoLoRA", "autolora_no_cst": "AutoLoRA w/o constraint", "autolora_sigmoid": "AutoLoRA, sigmoid",
    "autolora_eta0": "AutoLoRA, η = 0", "autolora_authors": "AutoLoRA (authors' search)",
    "autolora_authors_no_cst": "AutoLoRA w/o constraint (authors' search)",
    "autolora_authors_sigmoid": "AutoLoRA, sigmoid (authors' search)",
    "autolora_authors_eta0": "AutoLoRA, η = 0 (authors' search)",
    "autolora_authors_bionlp": "AutoLoRA (authors' BioNLP search)", "autolora_fast": "AutoLoRA (fast search)",
}

register_method(MethodSpec("autolora", AutoLoRAConfig, table_labels=TABLE_LABELS))
register_search_epochs_resolver()  # conf/method/autolora.yaml: search.epochs per task


def search_result_found(result: SearchResult) -> RankSearch:
    """The pipeline's view of the bilevel search: its ranks and cost; alphas, converged_at and
    stop_reason for result.json; the whole result (history, beta, config) as search.json."""
    return RankSearch(ranks=result.ranks, steps=result.steps, passes_per_iteration=result.passes_per_iteration,
                      record={"alphas": result.alphas, "converged_at": result.converged_at,
                              "stop_reason": result.stop_reason},
                      artifacts={"search.json": result.to_dict()})


class AutoLoRA(Method):
    """Searches per-layer ranks, then hands over to :class:`LoRA` for the retrain."""

    name = "autolora"

    def __init__(
        self,
        name: str = AutoLoRAConfig.name,
        lr: float = AutoLoRAConfig.lr,
        lora_alpha: float = AutoLoRAConfig.lora_alpha,
        lora_dropout: float = AutoLoRAConfig.lora_dropout,
        scaling: str = AutoLoRAConfig.scaling,
        search: SearchConfig | DictConfig | dict | None = None,
    ) -> None:
        self.name = name
        self.lr = lr
        self.lora_alpha = lora_alpha
        self.lora_dropout = lora_dropout
        self.scaling = scaling
        if isinstance(search, DictConfig):
            search = OmegaConf.to_container(search, resolve=True)
        if isinstance(search, dict):
            search = SearchConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in search.items()})
        self.search_config = search or SearchConfig()

    @property
    def search_plan(self) -> SearchPlan:  # type: ignore[override]
        """D_val's share, the loaders' batch size and the searched shares: ``search.val_fraction``,
        ``search.batch_size`` (None: train.batch_size), ``search.subsample_tr`` / ``subsample_val``."""
        cfg = self.search_config
        return SearchPlan(val_fraction=cfg.val_fraction, batch_size=cfg.batch_size,
                          subsample_tr=cfg.subsample_tr, subsample_val=cfg.subsample_val)

    def check_precision(self, precision: str) -> None:
        """The bilevel search's hand-made gradient passes have no loss scale: no fp16."""
        check_search_precision(precision)

    def search_ranks(self, ctx: SearchContext) -> RankSearch:
        """The bilevel search on a fresh backbone; W learns on D_tr only, beta on D_val only."""
        cfg = self.search_config
        model = ctx.new_model()
        inject_selection_lora(model, ctx.target_modules, k=cfg.k, gate=cfg.gate, lora_alpha=self.lora_alpha,
                              lora_dropout=0.0, trainable_extra=ctx.head_modules,
                              selection_init=cfg.selection_init, train_backbone=cfg.train_backbone)
        return search_result_found(search(model, ctx.d_tr_loader, ctx.d_val_loader, cfg, on_log=ctx.on_log,
                                          progress=ctx.progress, checkpointer=ctx.checkpointer, stop=ctx.stop,
                                          precision=ctx.precision))

    def after_search(self, found: RankSearch) -> LoRA:
        """Fresh LoRA with exactly the found rank per named layer (peft ``rank_pattern``)."""
        kwargs = rank_pattern_config(found.ranks, lora_alpha=self.lora_alpha, scaling=self.scaling,
                                     k=self.search_config.k)
        return LoRA(name=self.name, lr=self.lr, lora_dropout=self.lora_dropout, **kwargs)
