"""AutoLoRA as a method of the pipeline: search the ranks, then retrain LoRA with them.

    search_ranks:   inject selection LoRA (k rank-1 terms per layer, gate on beta), run the
                    bilevel search on D_tr / D_val, threshold alpha -> rank per layer
    retrain_method: a fresh peft LoRA whose ``rank_pattern`` holds exactly those ranks
                    (rank-0 layers get no LoRA), trained by the shared loop on D_tr + D_val
"""

from __future__ import annotations


from omegaconf import DictConfig, OmegaConf
from torch import nn

from autolora_exp.methods.autolora.layer import inject_selection_lora
from autolora_exp.methods.autolora.rank_pattern import rank_pattern_config
from autolora_exp.methods.autolora.search import SearchConfig, SearchResult, search
from autolora_exp.methods.base import Method, SearchContext
from autolora_exp.methods.lora import LoRA


class AutoLoRA(Method):
    """Searches per-layer ranks, then hands over to :class:`LoRA` for the retrain."""

    name = "autolora"
    searches_ranks = True

    def __init__(
        self,
        name: str = "autolora",
        lr: float = 5e-4,
        lora_alpha: float = 16.0,
        lora_dropout: float = 0.1,
        scaling: str = "per_layer",
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
    def search_val_fraction(self) -> float:
        """Share of the training set held out as D_val for the search (``search.val_fraction``)."""
        return self.search_config.val_fraction

    @property
    def search_batch_size(self) -> int | None:
        """Batch size of the search loaders (``search.batch_size``; None: train.batch_size)."""
        return self.search_config.batch_size

    @property
    def search_subsample(self) -> tuple[float, float]:
        """Shares of D_tr and D_val the search runs on (``search.subsample_tr`` / ``subsample_val``)."""
        return self.search_config.subsample_tr, self.search_config.subsample_val

    def search_ranks(self, ctx: SearchContext) -> SearchResult:
        """The bilevel search on a fresh backbone; W learns on D_tr only, beta on D_val only."""
        cfg = self.search_config
        model = ctx.new_model()
        inject_selection_lora(model, ctx.target_modules, k=cfg.k, gate=cfg.gate, lora_alpha=self.lora_alpha,
                              lora_dropout=0.0, trainable_extra=ctx.head_modules,
                              selection_init=cfg.selection_init, train_backbone=cfg.train_backbone)
        return search(model, ctx.d_tr_loader, ctx.d_val_loader, cfg, on_log=ctx.on_log, progress=ctx.progress,
                      checkpointer=ctx.checkpointer, stop=ctx.stop, precision=ctx.precision)

    def retrain_method(self, ranks: dict[str, int]) -> LoRA:
        """Fresh LoRA with exactly the found rank per named layer (peft ``rank_pattern``)."""
        kwargs = rank_pattern_config(ranks, lora_alpha=self.lora_alpha, scaling=self.scaling,
                                     k=self.search_config.k)
        return LoRA(name=self.name, lr=self.lr, lora_dropout=self.lora_dropout, **kwargs)
