"""The method contract: everything the pipeline and the training loop rely on of a method.

    pipeline (autolora_exp.pipeline)                 method (autolora_exp.methods.<name>)
    -----------------------------------------------  --------------------------------------------
    method = build(cfg.method)                        the class named by the schema's ``_target_``
    method.check_precision(train.precision)           before anything loads (AutoLoRA: no fp16)
    if method.search_plan is not None:                a method that searches ranks
        D_tr, D_val = split of the training set         (plan: val_fraction, batch size, shares)
        found = method.search_ranks(SearchContext)    -> RankSearch: ranks, steps, passes, record,
                                                         artifacts, and maybe the final model
        write rank_pattern.json, rank_heatmap.png, search.json  (for any method)
        method = method.after_search(found)           the method the training phase trains
                                                         (AutoLoRA: LoRA with the found ranks), or
                                                         None: ``found.model`` is final (DyLoRA)
    model = method.prepare(backbone, targets, heads)
    fit(model, method, ...)                           the loop calls the TrainingHooks below
    (after_search -> None: found.model is evaluated once; result.json's per_epoch = found.epochs)
    method.ranks(model)                               per-layer ranks of the trained model

The training loop (autolora_exp.train) sees a method only as :class:`TrainingHooks`; it never
imports a method package, and no central module does (tests/test_method_contract.py checks
it). A method registers itself (its schema, its table label) with :func:`register_method` when
its module is imported; :func:`discover_methods` imports every module of
``autolora_exp.methods``, so adding a method is ``methods/<name>/`` plus
``conf/method/<name>.yaml`` and nothing else.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from omegaconf import MISSING
from torch import nn

from autolora_exp.validation import accepts


# ---- the training loop's view of a method ---------------------------------------------------


def default_param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: decay on weight matrices, none on biases and normalisation weights."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class TrainingHooks:
    """What the shared training loop calls, in this order; every hook defaults to plain training.

        groups = hooks.param_groups(model, weight_decay)        -> AdamW(groups, lr)
        hooks.on_train_begin(model, total_steps)
        for each step (``step`` = optimiser steps done before it, 0 at the first):
            hooks.on_step_begin(model, step)
            loss = hooks.training_loss(model, model(**batch))
            backward, clip, optimizer.step(), scheduler.step()
            hooks.on_step_end(model, step + 1, optimizer)       before the gradients are zeroed
        checkpoints hold hooks.state_dict(model); a resume calls hooks.load_state_dict(model, state)
    """

    def param_groups(self, model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
        """The optimiser's parameter groups (a group may set its own ``lr`` / ``weight_decay``)."""
        return default_param_groups(model, weight_decay)

    def on_train_begin(self, model: nn.Module, total_steps: int) -> None:
        """Once before the first step, with the number of optimiser steps planned."""

    def on_step_begin(self, model: nn.Module, step: int) -> None:
        """Before the forward of step ``step + 1`` (``step`` optimiser steps are done)."""

    def training_loss(self, model: nn.Module, outputs: Any) -> torch.Tensor:
        """The loss that is backpropagated; ``outputs`` is the model's output with ``.loss``."""
        return outputs.loss

    def on_step_end(self, model: nn.Module, global_step: int, optimizer: torch.optim.Optimizer) -> None:
        """After ``optimizer.step()`` and the scheduler, before the gradients are zeroed;
        ``global_step`` counts the optimiser steps taken so far (1 after the first)."""

    def state_dict(self, model: nn.Module) -> dict[str, Any]:
        """Method state beyond the model's parameters that a resumed run needs (checkpoints)."""
        return {}

    def load_state_dict(self, model: nn.Module, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


# ---- the rank search ------------------------------------------------------------------------


@dataclass(frozen=True)
class SearchPlan:
    """How the pipeline prepares a method's rank search."""

    #: share of the training set held out as D_val (the paper's 1:1 = 0.5)
    val_fraction: float = 0.5
    #: batch size of the D_tr / D_val loaders; None = train.batch_size
    batch_size: int | None = None
    #: seeded shares of D_tr and of D_val the search runs on (1 = all)
    subsample_tr: float = 1.0
    subsample_val: float = 1.0


@dataclass
class RankSearch:
    """What a rank search found; the pipeline writes it for any method.

    ``ranks`` -> rank_pattern.json and rank_heatmap.png; ``artifacts`` (file name -> JSON-able
    content) -> files in the run folder (AutoLoRA: ``search.json``); ``record`` -> the method's
    own fields of result.json's ``search`` entry (AutoLoRA: alphas, converged_at, stop_reason;
    the grid: per_rank).
    """

    #: full module name -> rank (0: the layer gets no adapter)
    ranks: dict[str, int]
    #: optimiser steps the search took, and forward+backward passes per step (cost tables)
    steps: int
    passes_per_iteration: float
    record: dict[str, Any] = field(default_factory=dict)
    artifacts: dict[str, Any] = field(default_factory=dict)
    #: the trained model, when the search trained the final model (``after_search`` -> None)
    model: nn.Module | None = None
    #: that training's per-epoch records ({"epoch", "step", "train_loss", "eval"}), for result.json
    epochs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def mean_rank(self) -> float:
        return sum(self.ranks.values()) / max(len(self.ranks), 1)


@dataclass
class SearchContext:
    """What a rank-searching method gets from the pipeline: only the two parts of the training
    set (D_tr to fit weights, D_val to choose ranks); dev and test are not reachable from here."""

    #: a fresh backbone with a fresh head, on the run's device
    new_model: Callable[[], nn.Module]
    target_modules: list[str]
    head_modules: list[str]
    d_tr_loader: Any
    d_val_loader: Any
    #: the task metric of a model on D_val
    evaluate_val: Callable[[nn.Module], dict[str, float]]
    #: the shared training loop, bound to the run's device, precision, stop signal, train_cfg and
    #: primary metric: ``fit(model, hooks, loader, evaluate, lr, phase=..., checkpointer=...,
    #: on_epoch=...)`` -> an object with ``epochs``, ``best_epoch``, ``best_value``, ``steps``
    fit: Callable[..., Any]
    train_cfg: Any
    primary_metric: str
    greater_is_better: bool
    device: torch.device
    #: called with each point of the search's curves (step, and what the method logs)
    on_log: Callable[[dict[str, Any]], None] | None = None
    progress: bool = True
    checkpointer: Any = None
    stop: Any = None
    #: the run's seed: a search that trains several models derives each one's seed from it
    seed: int = 0
    #: the run's precision (autocast for the search's forwards)
    precision: Any = None


# ---- the method -----------------------------------------------------------------------------


class Method(TrainingHooks):
    """A fine-tuning method: full fine-tuning semantics unless a subclass overrides a hook."""

    #: name recorded in result.json
    name: str = "base"
    #: learning rate of the training phase
    lr: float = 1e-4
    #: None: no rank search; else how the pipeline prepares it (:meth:`search_ranks`)
    search_plan: SearchPlan | None = None

    def search_ranks(self, ctx: SearchContext) -> RankSearch:
        """Search the ranks on D_tr / D_val (only called when ``search_plan`` is set)."""
        raise NotImplementedError(f"method '{self.name}' has no rank search")

    def check_precision(self, precision: str) -> None:
        """Refuse (a :class:`~autolora_exp.errors.UserError`) a ``train.precision`` this method
        cannot run in; called before anything loads (AutoLoRA's search: no fp16)."""

    def after_search(self, found: RankSearch) -> "Method | None":
        """The method the training phase trains after the search; None: ``found.model`` is final."""
        return self

    def prepare(self, model: nn.Module, target_modules: list[str], head_modules: list[str]) -> nn.Module:
        """Return the model to train (wrapped or modified in place); set ``requires_grad``."""
        return model

    def ranks(self, model: nn.Module) -> dict[str, int] | None:
        """Per-layer ranks (full module name -> rank) when the method has them."""
        return None

    def parameter_counts(self, model: nn.Module) -> dict[str, int]:
        """Counts of the trained model that result.json's ``params`` adds to ``trainable`` and
        ``total`` (taken when training starts): e.g. SoRA's ``effective``, the trainable
        parameters left once its zero gates are pruned. Default: none."""
        return {}


# ---- configuration and registration ---------------------------------------------------------

#: value rules several methods' fields share (``accepts(default, **LEARNING_RATE)``)
LEARNING_RATE = {"gt": 0}
DROPOUT = {"ge": 0, "lt": 1}
LORA_ALPHA = {"gt": 0}
COUNT = {"ge": 1}


@dataclass
class MethodConfig:
    """The keys every method's schema has; a method's schema subclasses it beside the method."""

    _target_: str = MISSING
    name: str = MISSING
    #: learning rate of the trained weights (AdamW)
    lr: float = accepts(1e-4, **LEARNING_RATE)


@dataclass(frozen=True)
class MethodSpec:
    """A method as the configs and tables know it."""

    #: the schema's name: ``conf/method/*.yaml`` start from ``/schema/method/<schema_name>``
    schema_name: str
    #: the structured config (a dataclass with ``_target_``, ``name``, ``lr``, its own keys)
    schema: type
    #: row label in the tables, per result name (``method.name``) this schema produces
    table_labels: dict[str, str] = field(default_factory=dict)


_REGISTRY: dict[str, MethodSpec] = {}


def register_method(spec: MethodSpec) -> MethodSpec:
    """Called by a method's module at import; registering the same name twice is an error."""
    known = _REGISTRY.get(spec.schema_name)
    if known is not None and known.schema is not spec.schema:
        raise RuntimeError(f"method schema '{spec.schema_name}' is registered twice")
    _REGISTRY[spec.schema_name] = spec
    return spec


def discover_methods(package: str = "autolora_exp.methods") -> dict[str, MethodSpec]:
    """Import every module of ``package`` (so each registers itself); the registered methods."""
    root = importlib.import_module(package)
    for info in pkgutil.walk_packages(root.__path__, prefix=f"{package}."):
        importlib.import_module(info.name)
    return dict(_REGISTRY)
