"""The bilevel search: alternate updates of the selection logits beta (on D_val) and W (on D_tr).

One iteration, on a D_tr batch and a D_val batch (the paper's eqs. 4 and 5):

    1. look-ahead   W_hat = W - eta * grad_W L_tr(W, beta)                       (eq. 4)
    2. outer step   beta <- opt_beta(beta, dL_val(W_hat(beta), beta)/dbeta)      (eq. 5)
    3. inner step   W <- opt_W(W, grad_W L_tr(W, beta_new))    (clipped to grad_clip if set)

opt_W and opt_beta are AdamW (the paper) or Adam (the authors' code), see ``weight_optimizer``
and ``selection_optimizer``. Step 2's hypergradient comes from
:mod:`~autolora_exp.methods.autolora.hypergrad` (``darts``, ``exact`` or ``first_order``;
look-ahead ``sgd`` or ``betty``). Passes per iteration (forward + backward of one batch):

    darts, sgd look-ahead, finite_difference=forward (default)   4: look-ahead, validation, W + eps v, inner
    darts, sgd look-ahead, finite_difference=central             5: ... W + eps v, W - eps v, inner
    darts, betty look-ahead (always central)                     5: real step, validation, +, -, redo of the step
    exact                                                        4: look-ahead, validation, double backward, inner
    first_order (eta = 0)                                        2: validation, inner

With ``reuse_lookahead_grad=True`` step 3 uses step 1's gradient (same batch, same W; only beta
has moved by one small step), saving one pass. D_val batches cycle when D_val is shorter.
After the search, :mod:`~autolora_exp.methods.autolora.threshold` turns beta into ranks by the
rule ``threshold`` (default: the gate's own).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from autolora_exp.checkpoint import Checkpointer, load_trainable_state, rng_state, set_rng_state, trainable_state
from autolora_exp.errors import UserError
from autolora_exp.loss_window import LossWindow
from autolora_exp.methods.autolora import hypergrad as hg
from autolora_exp.methods.autolora.gates import GATES, check_selection_init
from autolora_exp.methods.autolora.layer import (alphas, selection_layers, selection_logits, selection_parameters,
                                                 weight_parameters)
from autolora_exp.methods.autolora.threshold import THRESHOLDS, resolve_threshold, threshold_ranks
from autolora_exp.precision import Precision, check_search_precision
from autolora_exp.preemption import StopSignal
from autolora_exp.progress import progress_bar
from autolora_exp.train import NonFiniteLossError, epoch_batches
from autolora_exp.validation import Accepts, accepts, check_fields


def default_loss_fn(model: nn.Module, batch: Any) -> torch.Tensor:
    """A Hugging Face model that computes its own loss from ``labels`` in the batch."""
    return model(**batch).loss


#: optimisers the search can use for W and for beta (torch.optim classes)
OPTIMIZERS = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam}
#: dropout masks of darts' finite-difference passes: the look-ahead pass's again, or new draws
FD_DROPOUT_MASKS = ("replay", "fresh")


@dataclass
class SearchConfig:
    """Settings of the search; defaults are the paper's where it states them (k=8, lr 1e-4 / 1e-3,
    AdamW, 1:1 split). ``conf/method/autolora_authors*.yaml`` set what the authors' code does."""

    #: rank-1 terms per layer (must match the injected layers)
    k: int = accepts(8, ge=1)
    #: "softmax" (paper), "none" (w/o constraint), "sigmoid"
    gate: str = accepts("softmax", choices=GATES)
    #: beta -> rank rule: "softmax" (1/k), "linear" (beta / sum(beta) >= 1/k, the authors' GLUE
    #: code), "mean", "sigmoid" (0.5); None: the gate's own (softmax / mean / sigmoid)
    threshold: str | None = accepts(None, choices=THRESHOLDS)
    #: floor on every layer's rank after the rule: 0 (none) lets a layer get rank 0, i.e. no LoRA
    #: in the retrain (only the sigmoid rule gives 0); 1 keeps LoRA on every layer
    min_rank: int = accepts(0, ge=0)
    #: "darts" (finite difference), "exact" (second order), "first_order" (eta = 0)
    hypergrad: str = accepts("darts", choices=hg.HYPERGRAD_MODES)
    #: "sgd" (paper, eq. 4) or "betty" (the authors' code: the real optimiser step is the look-ahead)
    lookahead: str = accepts("sgd", choices=hg.LOOKAHEADS)
    #: look-ahead step size; None -> lr_weights (sgd look-ahead only); 0 = first order
    eta: float | None = accepts(None, ge=0)
    #: optimiser of W: "adamw" (paper) or "adam" (the authors' GLUE search)
    weight_optimizer: str = accepts("adamw", choices=tuple(OPTIMIZERS))
    #: optimiser of beta: "adamw" (paper) or "adam" (the authors' code)
    selection_optimizer: str = accepts("adamw", choices=tuple(OPTIMIZERS))
    lr_weights: float = accepts(1e-4, gt=0)
    lr_selection: float = accepts(1e-3, gt=0)
    #: the optimiser's own weight decay: decoupled for adamw, an L2 term in the gradient for adam
    weight_decay_weights: float = accepts(0.0, ge=0)
    weight_decay_selection: float = accepts(0.0, ge=0)
    #: (beta1, beta2) of beta's optimiser (the authors' code used (0.5, 0.999))
    selection_betas: tuple[float, float] = accepts((0.9, 0.999), min_items=2, max_items=2,
                                                   item=Accepts(ge=0, lt=1))
    #: 0 only with max_steps
    epochs: int = accepts(1, ge=0)
    max_steps: int | None = accepts(None, ge=1)
    #: share of the original training set held out as D_val (paper: 1:1 = 0.5; authors: 0.3)
    val_fraction: float = accepts(0.5, gt=0, lt=1)
    #: batch size of both search loaders; None: train.batch_size (the authors' GLUE search: 32)
    batch_size: int | None = accepts(None, ge=1)
    log_every: int = accepts(50, ge=1)
    #: convergence stop: end the search once the thresholded ranks have stayed within
    #: ``stop_tolerance`` of each other at ``patience`` + 1 consecutive alpha logs (every
    #: ``log_every`` iterations, step 0 excluded; see :func:`stop_reason`); None runs every epoch
    #: (the authors' fixed schedule)
    patience: int | None = accepts(None, ge=1)
    #: the stop's tolerance: largest mean |rank change| per layer between the first of the
    #: ``patience`` + 1 logs and each later one; 0 = identical ranks
    stop_tolerance: float = accepts(0.0, ge=0)
    #: share of D_tr the search trains W on, seeded (the iterations per epoch shrink with it); 1 = all
    subsample_tr: float = accepts(1.0, gt=0, le=1)
    #: share of D_val the hypergradient is taken on, seeded; 1 = all (one D_val batch per
    #: iteration either way: it narrows what beta sees, it does not cut compute)
    subsample_val: float = accepts(1.0, gt=0, le=1)
    #: finite-difference radius: eps = fd_eps / ||v||
    fd_eps: float = accepts(0.01, gt=0)
    #: darts' mixed term: "forward" (1 pass, from the look-ahead pass's own grad_beta L_tr(W);
    #: sgd look-ahead only) or "central" (DARTS' two-sided difference, 2 passes);
    #: None: forward with the sgd look-ahead, central with betty (as the authors' code)
    finite_difference: str | None = accepts(None, choices=hg.FINITE_DIFFERENCES)
    #: dropout masks of darts' perturbed passes: "replay" the look-ahead pass's (the difference
    #: then measures W's change, not mask noise) or "fresh" draws (the authors' code)
    fd_dropout_masks: str = accepts("replay", choices=FD_DROPOUT_MASKS)
    reuse_lookahead_grad: bool = False
    #: start value of every beta; None keeps the layers' init (the gate's default: 0 for softmax)
    selection_init: float | None = accepts(None)
    #: max global norm of grad_W in the inner step; None or 0: no clipping (the paper states none,
    #: the authors' code clips nothing: Betty's Config.gradient_clipping = 0.0)
    grad_clip: float | None = accepts(None, ge=0)
    #: train every backbone weight in the search except the frozen base weights of the LoRA
    #: targets (the authors' BioNLP search freezes nothing else); False: LoRA factors and head only
    train_backbone: bool = False

    def __post_init__(self) -> None:
        check_fields(self, "search.")  # the per-field rules above, then check_relations
        self.selection_betas = tuple(self.selection_betas)

    @staticmethod
    def check_relations(cfg: Any, prefix: str = "search.") -> None:
        """The rules that relate fields (``cfg``: this dataclass or its composed config node)."""
        if cfg.lookahead == "betty" and cfg.hypergrad != "darts":
            raise UserError(f"{prefix}lookahead='betty' works with hypergrad='darts' only (got {cfg.hypergrad!r})")
        if cfg.finite_difference is not None and cfg.hypergrad != "darts":
            raise UserError(f"{prefix}finite_difference={cfg.finite_difference!r} applies to hypergrad='darts' only "
                            f"(got {cfg.hypergrad!r}); leave it null")
        if cfg.finite_difference == "forward" and cfg.lookahead == "betty":
            raise UserError(f"{prefix}finite_difference='forward' needs lookahead='sgd': betty centres the "
                            "difference on the post-step weights, where no gradient is at hand; use "
                            "finite_difference='central'")
        if cfg.fd_dropout_masks == "fresh" and cfg.hypergrad != "darts":
            raise UserError(f"{prefix}fd_dropout_masks='fresh' applies to hypergrad='darts' only (got "
                            f"{cfg.hypergrad!r}); use 'replay'")
        if cfg.epochs < 1 and not cfg.max_steps:
            raise UserError(f"{prefix}epochs={cfg.epochs} is not accepted; use an integer >= 1 (0 only with "
                            f"{prefix}max_steps)")
        if cfg.selection_init is not None:
            check_selection_init(cfg.gate, cfg.selection_init)
        resolve_threshold(cfg.threshold, cfg.gate, cfg.k, cfg.selection_init)
        if cfg.min_rank > cfg.k:
            raise UserError(f"{prefix}min_rank={cfg.min_rank} is not accepted with {prefix}k={cfg.k}; use an integer "
                            f"in [0, {cfg.k}] (0: a layer may get rank 0, i.e. no LoRA)")

    @property
    def threshold_rule(self) -> str:
        """The beta -> rank rule: ``threshold``, or the gate's own when unset."""
        return resolve_threshold(self.threshold, self.gate, self.k, self.selection_init)

    @property
    def difference(self) -> str:
        """The finite difference darts uses: ``finite_difference``, or by look-ahead when unset."""
        if self.finite_difference is not None:
            return self.finite_difference
        return "central" if self.lookahead == "betty" else "forward"

    @property
    def look_ahead_eta(self) -> float:
        """eta of eq. 4: 0 for first_order, else ``eta`` or, when unset, the weights' learning rate."""
        if self.hypergrad == "first_order":
            return 0.0
        return self.lr_weights if self.eta is None else self.eta


@dataclass
class SearchResult:
    #: final alpha = gate(beta) per layer
    alphas: dict[str, list[float]]
    #: rank per layer (the threshold rule on the final beta)
    ranks: dict[str, int]
    steps: int
    #: forward+backward passes per iteration (see hypergrad's docstring for the counting)
    passes_per_iteration: int
    #: [{"step": s, "alphas": {layer: [alpha_j]}, "selection_logits": {layer: [beta_j]}, "train_loss": L_tr,
    #: "val_loss": L_val}] at step 0, every log_every steps and at the end; the losses are means over
    #: the iterations since the previous entry (see :attr:`BilevelSearch.losses`), None at step 0
    history: list[dict[str, Any]] = field(default_factory=list)
    wall_time_s: float = 0.0
    #: final beta per layer (what the threshold rule reads)
    selection_logits: dict[str, list[float]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    #: the iteration at which the ranks were found stable (``patience``); None: ran its schedule
    converged_at: int | None = None
    #: why the search stopped before its schedule (:func:`stop_reason`); None: ran its schedule
    stop_reason: str | None = None

    @property
    def mean_rank(self) -> float:
        return sum(self.ranks.values()) / max(len(self.ranks), 1)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"mean_rank": self.mean_rank}


class BilevelSearch:
    """One search iteration at a time (:meth:`step`); :func:`search` loops it over the loaders."""

    def __init__(self, model: nn.Module, config: SearchConfig, loss_fn: hg.LossFn = default_loss_fn,
                 precision: Precision | None = None) -> None:
        layers = selection_layers(model)
        if not layers:
            raise UserError("the model has no selection LoRA layers; call inject_selection_lora(model, ...) first")
        for name, layer in layers.items():
            if layer.k != config.k or layer.gate != config.gate:
                raise UserError(
                    f"layer {name!r} has k={layer.k}, gate={layer.gate!r} but the search config says "
                    f"k={config.k}, gate={config.gate!r}; inject and search with the same values"
                )
        if precision is not None:
            check_search_precision(precision.name)
            loss_fn = precision.loss_fn(loss_fn)  # forwards under autocast; fp32 where hypergrad says
        self.model, self.config = model, config
        self.loss_fn = self._recording(loss_fn)
        #: the iteration's first L_tr and L_val (see :meth:`step`), detached, on the device
        self.losses: dict[str, torch.Tensor] = {}
        self._val_batch: Any = None
        self.selection = selection_parameters(model)
        self.weights = weight_parameters(model)
        if not self.weights:
            raise UserError("the model has no trainable weights besides the selection logits")
        self.w_opt = OPTIMIZERS[config.weight_optimizer](self.weights, lr=config.lr_weights,
                                                         weight_decay=config.weight_decay_weights)
        self.s_opt = OPTIMIZERS[config.selection_optimizer](self.selection, lr=config.lr_selection,
                                                            weight_decay=config.weight_decay_selection,
                                                            betas=config.selection_betas)
        if config.hypergrad == "exact":
            hg.require_eager_attention(model)
        #: the hypergradient of the last :meth:`step` (diagnostics: its direct and second-order terms)
        self.last_hypergradient: hg.Hypergradient | None = None

    def _recording(self, loss_fn: hg.LossFn) -> hg.LossFn:
        """``loss_fn`` that also keeps the first loss of each batch of the iteration in :attr:`losses`."""

        def recorded(model: nn.Module, batch: Any) -> torch.Tensor:
            loss = loss_fn(model, batch)
            self.losses.setdefault("val_loss" if batch is self._val_batch else "train_loss", loss.detach())
            return loss

        return recorded

    def step(self, tr_batch: Any, val_batch: Any) -> int:
        """One iteration (look-ahead, outer step on beta, inner step on W); returns its passes.

        Afterwards :attr:`losses` holds the iteration's first loss on each batch:
        ``train_loss`` = L_tr(W, beta) at the weights before the inner step (first_order: with
        the updated beta) and ``val_loss`` = the upper-level objective of eq. 5 as evaluated,
        L_val(W_hat, beta) (first_order: at W; betty: at the post-step W').
        """
        cfg, counter = self.config, hg.PassCounter()
        self.losses, self._val_batch = {}, val_batch
        args = (self.model, self.loss_fn, tr_batch, val_batch, self.weights, self.selection)
        replay = cfg.fd_dropout_masks == "replay"
        if cfg.lookahead == "betty":
            h = self.last_hypergradient = hg.darts_betty(*args, self.w_opt, self._inner_update, cfg.fd_eps, counter,
                                                         replay)
            self._outer_update(h.selection_grads)
            if not cfg.reuse_lookahead_grad:
                # Betty redoes the inner step from the pre-look-ahead state with the new beta
                h.rollback()
                self._inner_update(hg.weight_grads(self.model, self.loss_fn, tr_batch, self.weights, counter))
            return counter.passes

        if cfg.hypergrad == "first_order":
            h = hg.first_order(self.model, self.loss_fn, val_batch, self.selection, counter)
        elif cfg.hypergrad == "exact":
            h = hg.exact_sgd(*args, cfg.look_ahead_eta, counter)
        else:
            h = hg.darts_sgd(*args, cfg.look_ahead_eta, cfg.fd_eps, counter, cfg.difference, replay)
        self.last_hypergradient = h
        self._outer_update(h.selection_grads)
        if cfg.reuse_lookahead_grad and h.lookahead_grads is not None:
            grads = h.lookahead_grads
        else:
            grads = hg.weight_grads(self.model, self.loss_fn, tr_batch, self.weights, counter)
        self._inner_update(grads)
        return counter.passes

    def _outer_update(self, grads: list[torch.Tensor]) -> None:
        """beta <- optimiser step on the hypergradient (eq. 5)."""
        for p, g in zip(self.selection, grads):
            p.grad = g.detach()
        self.s_opt.step()
        self.s_opt.zero_grad(set_to_none=True)

    def _inner_update(self, grads: list[torch.Tensor]) -> None:
        """W <- optimiser step on grad_W L_tr, clipped to ``grad_clip`` in global norm when set."""
        for p, g in zip(self.weights, grads):
            p.grad = g.detach()
        if self.config.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.weights, self.config.grad_clip)
        self.w_opt.step()
        self.w_opt.zero_grad(set_to_none=True)


def search(
    model: nn.Module,
    d_tr_loader: Iterable[Any],
    d_val_loader: Iterable[Any],
    config: SearchConfig | None = None,
    loss_fn: hg.LossFn = default_loss_fn,
    on_log: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    checkpointer: Checkpointer | None = None,
    stop: StopSignal | None = None,
    precision: Precision | None = None,
) -> SearchResult:
    """Run the bilevel search on a model prepared by ``inject_selection_lora``.

    W learns only from ``d_tr_loader`` batches, beta only from the hypergradient on
    ``d_val_loader`` batches. Runs ``epochs`` passes over D_tr (or ``max_steps`` iterations if
    fewer), or stops earlier once the thresholded ranks are stable (``patience``, see
    :func:`stop_reason`). Batches (dicts of tensors) are moved to the model's device.
    ``on_log`` receives every history entry as it is made (step, alphas, mean losses).

    With a ``checkpointer``, the state (W, beta, both optimisers, step, alpha history, RNG and
    both loaders' positions) is saved every N steps and at the end, and a new call resumes from
    it; a finished search returns its stored result at once. ``stop`` (SIGTERM) saves and stops.

    ``precision``: the forwards' autocast (see :mod:`~autolora_exp.precision`). W and beta are
    checked for NaN/inf after every iteration on the device (one fused test, no host sync); the
    flag is read back at every alpha log, checkpoint and at the end, naming the first bad step.
    """
    config = config or SearchConfig()
    engine = BilevelSearch(model, config, loss_fn, precision)
    rule = config.threshold_rule
    if config.selection_init is not None:
        for layer in selection_layers(model).values():
            layer.reset_selection(config.selection_init)
    total = _planned_steps(d_tr_loader, config)
    n_tr = len(d_tr_loader)  # type: ignore[arg-type]
    device = engine.weights[0].device
    history: list[dict[str, Any]] = []
    step, passes, val_used, elapsed = 0, 0, 0, 0.0
    converged_at: int | None = None
    reason: str | None = None
    window = LossWindow()  # (L_tr, L_val) since the last history entry

    state = checkpointer.load() if checkpointer else None
    if state is not None:
        if state.get("done"):
            return SearchResult(**state["result"])
        load_trainable_state(model, state["model"])
        engine.w_opt.load_state_dict(state["w_opt"])
        engine.s_opt.load_state_dict(state["s_opt"])
        step, passes, val_used, elapsed, history = (state["step"], state["passes"], state["val_used"],
                                                    state["elapsed"], state["history"])
        set_rng_state(state["rng"])
        window.load_state(state.get("loss_window"), device)
        if config.patience and history[-1]["step"] == step:
            reason = stop_reason(history, rule, config.patience, config.stop_tolerance, config.min_rank)
            converged_at = step if reason else None  # stopped right after the convergence test passed

    def log(at: int) -> None:
        means = window.take()
        entry = {"step": at, "alphas": alphas(model), "selection_logits": selection_logits(model),
                 "train_loss": means[0] if means else None, "val_loss": means[1] if means else None}
        history.append(entry)
        if on_log is not None:
            on_log(entry)

    watch = _NonFiniteWatch(engine, first_step=step + 1)

    def save() -> None:
        if checkpointer is not None:
            watch.read(step)  # never save non-finite weights
            checkpointer.save({"model": trainable_state(model), "w_opt": engine.w_opt.state_dict(),
                               "s_opt": engine.s_opt.state_dict(), "step": step, "passes": passes,
                               "val_used": val_used, "elapsed": time.perf_counter() - start,
                               "history": history, "rng": rng_state(), "loss_window": window.state()})

    was_training = model.training
    model.train()
    if step == 0:
        log(0)
    val_batches = _cycle(d_val_loader, skip=val_used)
    start = time.perf_counter() - elapsed
    with progress_bar(total=total, initial=step, desc="autolora search", disable=not progress, dynamic_ncols=True) as bar:
        while step < total and converged_at is None:
            epoch = step // n_tr + 1
            for tr_batch in epoch_batches(d_tr_loader, epoch, skip=step - (epoch - 1) * n_tr):
                if step >= total or converged_at is not None:
                    break
                passes = engine.step(_to_device(tr_batch, device), _to_device(next(val_batches), device))
                window.add(engine.losses["train_loss"], engine.losses["val_loss"])
                step += 1
                val_used += 1
                watch.update(step)
                bar.update(1)
                if step % config.log_every == 0 or step == total:
                    watch.read(step)
                    log(step)
                    ranks = threshold_ranks(history[-1]["selection_logits"], rule, config.min_rank)
                    bar.set_postfix(mean_rank=f"{sum(ranks.values()) / len(ranks):.2f}")
                    if config.patience:
                        reason = stop_reason(history, rule, config.patience, config.stop_tolerance,
                                             config.min_rank)
                        if reason:
                            converged_at = step
                            bar.write(f"autolora search: stopped at step {step} of {total}: {reason}")
                if checkpointer is not None and checkpointer.due(step):
                    save()
                if stop is not None:
                    stop.check("search", step, save)
    watch.read(step)
    wall = time.perf_counter() - start
    model.train(was_training)

    final = selection_logits(model)
    result = SearchResult(
        alphas=alphas(model),
        ranks=threshold_ranks(final, rule, config.min_rank),
        steps=step,
        passes_per_iteration=passes,
        history=history,
        wall_time_s=wall,
        selection_logits=final,
        config=asdict(config),
        converged_at=converged_at,
        stop_reason=reason,
    )
    if checkpointer is not None:
        checkpointer.save({"done": True, "result": asdict(result), "step": step})
    return result


def ranks_stable(history: list[dict[str, Any]], rule: str, patience: int) -> bool:
    """The ranks (threshold ``rule`` on the logged beta) of the last ``patience`` + 1 logs are
    identical: :func:`stop_reason` with tolerance 0."""
    return stop_reason(history, rule, patience, 0.0) is not None


def stop_reason(history: list[dict[str, Any]], rule: str, patience: int, tolerance: float = 0.0,
                min_rank: int = 0) -> str | None:
    """The convergence test of ``patience``: why the search may stop now, or None.

    Over the last ``patience`` + 1 alpha logs (step 0, beta = init, excluded), with r_l(t) the
    rank of layer l (threshold ``rule`` and floor ``min_rank`` on the logged beta) at log t and t_0
    the window's first log,

        max_t  (1/L) sum_l |r_l(t) - r_l(t_0)|  <=  tolerance         (L layers)

    tolerance 0: the ranks are identical at every log of the window.
    """
    logs = [h for h in history if h["step"] > 0][-(patience + 1):]
    if len(logs) < patience + 1:
        return None
    first = threshold_ranks(logs[0]["selection_logits"], rule, min_rank)
    change = max(rank_distance(first, threshold_ranks(h["selection_logits"], rule, min_rank)) for h in logs[1:])
    if change > tolerance:
        return None
    return (f"ranks stable: mean |rank change| per layer {change:.3g} <= {tolerance:g} over {patience + 1} alpha "
            f"logs (steps {logs[0]['step']}-{logs[-1]['step']})")


def rank_distance(a: Mapping[str, int], b: Mapping[str, int]) -> float:
    """Mean absolute rank difference per layer, (1/L) sum_l |a_l - b_l|, over the same layers."""
    if a.keys() != b.keys():
        raise ValueError(f"rank patterns over different layers: {sorted(a.keys() ^ b.keys())[:3]} ...")
    return sum(abs(a[k] - b[k]) for k in a) / max(len(a), 1)


class _NonFiniteWatch:
    """NaN/inf in W or beta, tested on the device after every iteration and read back rarely.

    :meth:`update` takes the per-tensor norms of all of W and beta in one fused call
    (``torch._foreach_norm``): a norm is finite exactly when its tensor is (or for entries beyond
    ~1e19, which overflow the squared sum: such weights are lost anyway), and records the first
    step whose norms are not all finite (``torch.where``: no host branch). :meth:`read` (one
    sync) raises :class:`NonFiniteLossError` naming that step and the window it was found in.
    """

    def __init__(self, engine: BilevelSearch, first_step: int) -> None:
        self.params = [*engine.selection, *engine.weights]
        self.first_bad = torch.zeros((), dtype=torch.long, device=self.params[0].device)
        self.window_start = first_step

    def update(self, step: int) -> None:
        finite = torch.isfinite(torch.stack(torch._foreach_norm(self.params))).all()
        self.first_bad = torch.where(~finite & (self.first_bad == 0), torch.full_like(self.first_bad, step),
                                     self.first_bad)

    def read(self, step: int) -> None:
        bad = int(self.first_bad)
        if bad:
            raise NonFiniteLossError(f"search: non-finite weights or selection logits after step {bad} (found at "
                                     f"the check after steps {self.window_start}..{step}); the last good checkpoint "
                                     "is kept (lower lr_weights/lr_selection or check the data)")
        self.window_start = step + 1


def _planned_steps(d_tr_loader: Iterable[Any], config: SearchConfig) -> int:
    try:
        n = len(d_tr_loader)  # type: ignore[arg-type]
    except TypeError:
        if not config.max_steps:
            raise UserError("the D_tr loader has no length; set max_steps for the search") from None
        return config.max_steps
    if n == 0:
        raise UserError("the D_tr loader is empty; the search needs at least one training batch")
    total = n * config.epochs
    return min(total, config.max_steps) if config.max_steps else total


def _cycle(loader: Iterable[Any], skip: int = 0) -> Iterator[Any]:
    """D_val batches forever, epoch after epoch (D_val may be shorter than D_tr); ``skip`` drops
    the first batches (a resumed search continues where it was)."""
    n = len(loader)  # type: ignore[arg-type]
    if n == 0:
        raise UserError("the D_val loader is empty; the search needs at least one validation batch")
    epoch, offset = skip // n + 1, skip % n
    while True:
        yield from epoch_batches(loader, epoch, skip=offset)
        epoch, offset = epoch + 1, 0


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch
