"""DyLoRA (issue 18 item 2): the layer's math, the rank draws, the D_val choice, truncation."""

from __future__ import annotations

import io
import json
import os
import signal
from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import RobertaConfig, RobertaForSequenceClassification

from autolora_exp.checkpoint import Checkpointer
from autolora_exp.contract import SearchContext, discover_methods
from autolora_exp.errors import UserError
from autolora_exp.methods.dylora import DyLoRA
from autolora_exp.methods.dylora.layer import DyLoRALinear, dylora_layers, inject_dylora, set_rank
from autolora_exp.methods.dylora.method import RankSampler, select_rank
from autolora_exp.models import count_parameters
from autolora_exp.pipeline import run
from autolora_exp.preemption import Preempted, StopSignal
from autolora_exp.tables import make_tables
from conftest import SHARED_DATA, compose

#: tiny RoBERTa (hidden 32, q and v of 2 layers) on 32 BBC News rows: D_tr 25 rows, 4 steps of 8 per epoch
TINY = ["debug=default", "model=tiny-roberta", "method=dylora"]


def layer_with_trained_b(r_max=5, alpha=16.0, seed=0) -> DyLoRALinear:
    """A DyLoRA layer on a random 6 -> 4 linear map, B random (as after training; B = 0 at init)."""
    torch.manual_seed(seed)
    layer = DyLoRALinear(nn.Linear(6, 4), r_max, lora_alpha=alpha, lora_dropout=0.0)
    with torch.no_grad():
        layer.lora_B.normal_()
    return layer


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    cfg = RobertaConfig(vocab_size=50, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=40, num_labels=2)
    return RobertaForSequenceClassification(cfg)


def batches(n=3, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(3, 50, (4, 8), generator=g), "labels": torch.randint(0, 2, (4,), generator=g)}
            for _ in range(n)]


# ---- the layer -----------------------------------------------------------------------------


@pytest.mark.parametrize("b", [1, 3, 5])
def test_the_rank_b_forward_is_lora_of_rank_b_on_the_first_b_components(b):
    layer = layer_with_trained_b()
    x = torch.randn(3, 6)
    set_rank(layer, b)  # a bare layer works too: it is its own only DyLoRA layer
    a, bb = layer.lora_A[:b], layer.lora_B[:, :b]
    expected = layer.base(x) + (16.0 / b) * x @ a.T @ bb.T
    torch.testing.assert_close(layer(x), expected)  # float32 tolerance: the products are summed in another order

    # ... and what peft's LoRA of rank b computes with those factors (the project's method=lora)
    from peft import LoraConfig, inject_adapter_in_model

    holder = nn.Module()
    holder.proj = nn.Linear(6, 4)
    holder.proj.load_state_dict(layer.base.state_dict())
    holder = inject_adapter_in_model(LoraConfig(r=b, lora_alpha=16.0, target_modules=["proj"]), holder)
    with torch.no_grad():
        holder.proj.lora_A["default"].weight.copy_(a)
        holder.proj.lora_B["default"].weight.copy_(bb)
    torch.testing.assert_close(layer(x), holder.proj(x))  # float32 tolerance: the products are summed in another order


def test_frozen_mode_sends_the_gradient_to_the_b_th_component_only():
    x = torch.randn(3, 6)
    grads = {}
    for frozen in (True, False):
        layer = layer_with_trained_b()
        layer.set_rank(3, frozen=frozen)
        out = layer(x)
        out.square().sum().backward()
        grads[frozen] = (layer.lora_A.grad.abs().sum(1), layer.lora_B.grad.abs().sum(0), out.detach())
    a_rows, b_cols, out_frozen = grads[True]
    assert a_rows[2] > 0 and b_cols[2] > 0
    assert a_rows[[0, 1, 3, 4]].eq(0).all() and b_cols[[0, 1, 3, 4]].eq(0).all()
    a_rows, b_cols, out_free = grads[False]
    assert a_rows[:3].gt(0).all() and b_cols[:3].gt(0).all()  # all b components when not frozen
    assert a_rows[3:].eq(0).all() and b_cols[3:].eq(0).all()  # never beyond b
    assert torch.equal(out_frozen, out_free)  # frozen changes the gradient, not the forward


def test_truncation_keeps_the_rank_b_outputs_and_counts_only_b_components():
    model = tiny_model()
    DyLoRA(r_max=4).prepare(model, ["query", "value"], ["classifier"])
    with torch.no_grad():
        for layer in dylora_layers(model).values():
            layer.lora_B.normal_()
    model.eval()
    batch = batches(1)[0]
    set_rank(model, 2)
    at_rank_2 = model(input_ids=batch["input_ids"]).logits
    full = count_parameters(model)["trainable"]
    for layer in dylora_layers(model).values():
        layer.truncate(2)
    assert torch.equal(model(input_ids=batch["input_ids"]).logits, at_rank_2)
    lora_per_rank = sum(16 + 16 for _ in dylora_layers(model))  # in + out features of each 16 x 16 layer
    assert full - count_parameters(model)["trainable"] == 2 * lora_per_rank  # ranks 3 and 4 are gone
    assert DyLoRA(r_max=4).ranks(model) == {name: 2 for name in dylora_layers(model)}


def test_the_adapted_model_is_the_backbone_at_init_at_every_rank():
    batch = batches(1)[0]
    model = tiny_model().eval()
    before = model(input_ids=batch["input_ids"]).logits
    DyLoRA(r_max=4).prepare(model, ["query", "value"], ["classifier"])
    for b in (1, 4):
        set_rank(model, b)
        assert torch.equal(model(input_ids=batch["input_ids"]).logits, before)  # B = 0: Delta W = 0


def test_injection_freezes_the_backbone_and_trains_the_factors_and_the_head():
    model = tiny_model()
    layers = inject_dylora(model, ["query", "value"], ["classifier"], r_max=4, lora_alpha=16, lora_dropout=0.0)
    assert sorted(layers) == sorted(f"roberta.encoder.layer.{i}.attention.self.{m}" for i in (0, 1)
                                    for m in ("query", "value"))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert all(".lora_" in n or n.startswith("classifier.") for n in trainable)
    assert any(n.startswith("classifier.") for n in trainable) and len(trainable) == 4 * 2 + 4
    with pytest.raises(UserError, match="already has a DyLoRA adapter"):
        inject_dylora(model, ["query"], ["classifier"], r_max=4, lora_alpha=16, lora_dropout=0.0)


def test_with_one_rank_and_no_freezing_dylora_trains_exactly_as_lora():
    """r_min = r_max = 3, frozen off: every step is LoRA r=3 (peft, method=lora) from the same
    start, through the shared loop: the same losses and factors after 8 steps."""
    from autolora_exp.methods.lora import LoRA
    from autolora_exp.train import fit
    from test_methods_baselines import tiny_loader, tiny_roberta, train_cfg

    dylora = DyLoRA(r_min=3, r_max=3, frozen=False)
    dylora.sampler = RankSampler(3, 3, seed=0)
    dy_model = dylora.prepare(tiny_roberta(), ["query", "value"], ["classifier"])
    lora = LoRA(r=3, lora_alpha=16.0, lora_dropout=0.0)
    lora_model = lora.prepare(tiny_roberta(), ["query", "value"], ["classifier"])
    inner = lora_model.base_model.model
    with torch.no_grad():  # the same start: DyLoRA's A (B = 0 in both) and head
        for name, layer in dylora_layers(dy_model).items():
            inner.get_submodule(name).lora_A["default"].weight.copy_(layer.lora_A)
        inner.classifier.modules_to_save["default"].load_state_dict(dy_model.classifier.state_dict())
    losses = {}
    for key, model, method in (("dylora", dy_model, dylora), ("lora", lora_model, lora)):
        torch.manual_seed(1)  # the same dropout masks of the backbone
        trained = fit(model, method, tiny_loader(4), lambda m: {"validation": {"accuracy": 0.0}},
                      train_cfg(epochs=2), 1e-2, "accuracy", torch.device("cpu"))
        losses[key] = [e["train_loss"] for e in trained.epochs]
    assert losses["dylora"] == pytest.approx(losses["lora"], rel=1e-5) and losses["lora"][1] != losses["lora"][0]
    for name, layer in dylora_layers(dy_model).items():
        torch.testing.assert_close(layer.lora_A, inner.get_submodule(name).lora_A["default"].weight)
        torch.testing.assert_close(layer.lora_B, inner.get_submodule(name).lora_B["default"].weight)
        assert layer.lora_B.abs().sum() > 0  # trained


# ---- the rank draws ------------------------------------------------------------------------


def test_rank_draws_are_uniform_on_r_min_to_r_max_and_leave_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.get_rng_state()
    sampler = RankSampler(2, 5, seed=123)
    draws = [sampler.draw() for _ in range(4000)]
    assert torch.equal(torch.get_rng_state(), before)
    assert set(draws) == {2, 3, 4, 5} and sampler.draws == {b: draws.count(b) for b in (2, 3, 4, 5)}
    assert all(abs(n / 4000 - 0.25) < 0.03 for n in sampler.draws.values())
    again = RankSampler(2, 5, seed=123)
    assert [again.draw() for _ in range(20)] == draws[:20]  # the seed fixes them


def test_the_hooks_state_round_trips_through_a_checkpoint_file():
    method = DyLoRA(r_min=1, r_max=8)
    method.sampler = RankSampler(1, 8, seed=7)
    model = tiny_model()
    method.prepare(model, ["query", "value"], ["classifier"])
    for step in range(5):
        method.on_step_begin(model, step)
    buffer = io.BytesIO()
    torch.save(method.state_dict(model), buffer)  # as the loop's checkpoint holds it
    continued = []
    for step in range(5, 12):
        method.on_step_begin(model, step)
        continued.append(next(iter(dylora_layers(model).values())).rank)

    resumed = DyLoRA(r_min=1, r_max=8)
    resumed.sampler = RankSampler(1, 8, seed=999)  # a resume's fresh sampler: the state decides
    buffer.seek(0)
    resumed.load_state_dict(model, torch.load(buffer, weights_only=False))
    again = []
    for step in range(5, 12):
        resumed.on_step_begin(model, step)
        again.append(next(iter(dylora_layers(model).values())).rank)
    assert again == continued and resumed.sampler.draws == method.sampler.draws
    assert all(layer.frozen for layer in dylora_layers(model).values())  # the default mode


# ---- the choice on D_val -------------------------------------------------------------------


def test_select_rank_takes_the_best_finite_score_and_the_smaller_rank_on_ties():
    assert select_rank({1: 0.5, 2: 0.7, 3: 0.6}, greater_is_better=True) == 2
    assert select_rank({1: 0.5, 2: 0.7, 3: 0.6}, greater_is_better=False) == 1
    assert select_rank({1: 0.6, 2: float("nan"), 4: 0.6, 8: 0.6}, greater_is_better=True) == 1
    with pytest.raises(UserError, match="no rank of \\[1, 2\\] has a finite D_val score"):
        select_rank({1: float("nan"), 2: None}, greater_is_better=True)


def fit_in_contract_order(model, hooks, loader, evaluate, lr, phase="train", checkpointer=None, on_epoch=None):
    """One epoch of SGD calling the hooks in the order ``contract.TrainingHooks`` documents
    (a stand-in for the shared loop, which the pipeline binds into ``SearchContext.fit``)."""
    groups = hooks.param_groups(model, 0.0)
    optimizer = torch.optim.SGD(groups, lr=lr)
    hooks.on_train_begin(model, len(loader))
    model.train()
    for step, batch in enumerate(loader):
        hooks.on_step_begin(model, step)
        loss = hooks.training_loss(model, model(**batch))
        loss.backward()
        optimizer.step()
        hooks.on_step_end(model, step + 1, optimizer)
        optimizer.zero_grad(set_to_none=True)
    record = {"epoch": 1, "step": len(loader), "train_loss": float(loss.detach()), "eval": evaluate(model)}
    if on_epoch is not None:
        on_epoch(record)
    return SimpleNamespace(epochs=[record], best_epoch=1, best_value=None, steps=len(loader))


def search_context(evaluate_val, greater_is_better=True, fit=fit_in_contract_order, **kwargs) -> SearchContext:
    return SearchContext(new_model=tiny_model, target_modules=["query", "value"], head_modules=["classifier"],
                         d_tr_loader=batches(6), d_val_loader=batches(1), evaluate_val=evaluate_val, fit=fit,
                         train_cfg=None, primary_metric="accuracy", greater_is_better=greater_is_better,
                         device=torch.device("cpu"), progress=False, **kwargs)


@pytest.mark.parametrize("greater_is_better,chosen", [(True, 3), (False, 1)])
def test_the_search_chooses_the_best_d_val_rank_and_returns_the_truncated_model(greater_is_better, chosen):
    scored = []

    def evaluate_val(model):  # a D_val metric of the active rank, peaking at 3 (lowest at 1 and 5)
        rank = next(iter(dylora_layers(model).values())).rank
        scored.append(rank)
        return {"accuracy": -abs(rank - 3) - 0.1 * (rank == 1)}

    logged = []
    method = DyLoRA(r_min=1, r_max=5)
    found = method.search_ranks(search_context(evaluate_val, greater_is_better, on_log=logged.append, seed=3))
    assert scored == [5, 1, 2, 3, 4, 5]  # the epoch's curve at r_max, then every candidate rank
    assert found.record["chosen_rank"] == chosen and sorted(found.record["per_rank"]) == [1, 2, 3, 4, 5]
    assert found.ranks == {name: chosen for name in dylora_layers(found.model)} and len(found.ranks) == 4
    assert all(layer.r_max == chosen for layer in dylora_layers(found.model).values())
    assert sum(found.record["rank_draws"].values()) == found.steps == 6
    assert logged == [{"step": 6, "train_loss": found.epochs[0]["train_loss"], "d_val": {"accuracy": -2}}]
    assert method.after_search(found) is None  # no retrain: the pipeline evaluates found.model


def test_the_training_steps_use_the_drawn_ranks_and_only_the_b_th_components_move():
    """With plain SGD (no momentum, no decay) a frozen step moves exactly the drawn component."""
    seen = []

    def fit(model, hooks, loader, evaluate, lr, **kwargs):
        before = {n: l.lora_A.detach().clone() for n, l in dylora_layers(model).items()}
        with torch.no_grad():
            for layer in dylora_layers(model).values():
                layer.lora_B.normal_()  # B = 0 at init: A would get no gradient at the first step
        hooks.on_train_begin(model, 1)
        hooks.on_step_begin(model, 0)
        b = next(iter(dylora_layers(model).values())).rank
        optimizer = torch.optim.SGD(hooks.param_groups(model, 0.0), lr=lr)
        hooks.training_loss(model, model(**loader[0])).backward()
        optimizer.step()
        for name, layer in dylora_layers(model).items():
            moved = (layer.lora_A.detach() != before[name]).any(dim=1)
            seen.append((b, moved.nonzero().flatten().tolist()))
        return SimpleNamespace(epochs=[], best_epoch=None, best_value=None, steps=1)

    DyLoRA(r_min=1, r_max=6, lr=0.1).search_ranks(search_context(lambda m: {"accuracy": 0.5}, fit=fit))
    assert seen and all(moved == [b - 1] for b, moved in seen)


# ---- bad values ------------------------------------------------------------------------------


@pytest.mark.parametrize("kwargs,message", [
    ({"r_min": 5, "r_max": 2}, "method.r_min=5, method.r_max=2: DyLoRA samples the rank from r_min..r_max"),
    ({"r_max": 0}, "method.r_max=0 is not accepted; use an integer >= 1"),
    ({"r_min": 0}, "method.r_min=0 is not accepted; use an integer >= 1"),
    ({"val_fraction": 1.0}, "method.val_fraction=1.0 is not accepted; use a number in (0, 1)"),
    ({"lora_dropout": 1.0}, "method.lora_dropout=1.0 is not accepted"),
    ({"lr": 0.0}, "method.lr=0.0 is not accepted"),
])
def test_bad_values_are_one_line_errors_naming_the_key(kwargs, message):
    with pytest.raises(UserError) as err:
        DyLoRA(**kwargs)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_bad_targets_name_what_the_model_has():
    with pytest.raises(UserError, match="target module 'nope' is not in the model"):
        DyLoRA().prepare(tiny_model(), ["nope"], ["classifier"])
    with pytest.raises(UserError, match="'roberta.encoder.layer.0.attention.self' is a RobertaSelfAttention, not a "
                                        "linear layer"):
        DyLoRA().prepare(tiny_model(), ["self"], ["classifier"])
    with pytest.raises(UserError, match="'classifier.out_proj' is part of the task head 'classifier'"):
        DyLoRA().prepare(tiny_model(), ["query", "out_proj"], ["classifier"])
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=16))
    with pytest.raises(UserError, match="'transformer.h.0.mlp.c_fc' is a Conv1D; DyLoRA adapts nn.Linear layers"):
        DyLoRA().prepare(gpt2, ["c_fc"], [])
    with pytest.raises(UserError, match="model.head_modules: 'head' is not in the model"):
        DyLoRA().prepare(tiny_model(), ["query"], ["head"])


# ---- through the pipeline (run.py's path) --------------------------------------------------


def test_dylora_runs_end_to_end_without_a_training_phase(tmp_path):
    assert discover_methods()["dylora"].table_labels == {"dylora": "DyLoRA"}
    result = run(compose([*TINY, "method.r_max=4"], tmp_path))
    search = result["search"]
    chosen = search["chosen_rank"]
    assert sorted(search["per_rank"]) == [1, 2, 3, 4]
    scores = {int(b): m["accuracy"] for b, m in search["per_rank"].items()}
    assert scores[chosen] == max(scores.values()) and chosen == min(b for b, v in scores.items() if v == scores[chosen])
    assert set(result["ranks"].values()) == {chosen} and len(result["ranks"]) == 4 and result["ranks"] == search["ranks"]
    assert sum(search["rank_draws"].values()) == search["steps"] == 4  # debug: 4 steps, one draw each
    assert search["split"]["d_val"]["rows"] == 7  # method.val_fraction = 0.2 of 32 rows
    assert "train" not in result["phases"] and result["phases"]["search"]["steps"] == 4  # no retrain
    head = 32 * 32 + 32 + 32 * 5 + 5  # RobertaClassificationHead: dense + out_proj (5 BBC News classes)
    assert result["params"]["trainable"] == head + 4 * chosen * (32 + 32)  # the truncated LoRA factors
    assert result["metrics"]["test"] is not None and result["metrics"]["final"]["validation"]["n"] == 16
    on_disk = json.loads((tmp_path / "search.json").read_text())
    assert on_disk["chosen_rank"] == chosen and len(on_disk["epochs"]) == len(result["metrics"]["per_epoch"])
    assert json.loads((tmp_path / "rank_pattern.json").read_text()) and (tmp_path / "rank_heatmap.png").exists()


def test_bad_ranks_stop_the_run_in_one_line_before_anything_loads(tmp_path):
    with pytest.raises(UserError, match="method.r_min=6, method.r_max=4"):
        run(compose([*TINY, "method.r_min=6", "method.r_max=4"], tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_a_run_stopped_mid_training_resumes_to_the_same_result(tmp_path, monkeypatch):
    """SIGTERM after step 3 of 8 (2 epochs): the resumed run redraws the same ranks (the
    sampler's state is in the checkpoint) and gives the same numbers, bit for bit on CPU."""
    overrides = [*TINY, "train.max_steps=null"]
    uninterrupted = run(compose(overrides, tmp_path / "uninterrupted"))

    sent: list[int] = []
    real_due = Checkpointer.due

    def due(self, at):
        if not sent and self.phase == "search" and at == 3:
            sent.append(at)
            os.kill(os.getpid(), signal.SIGTERM)
        return real_due(self, at)

    monkeypatch.setattr(Checkpointer, "due", due)
    cfg = compose(overrides, tmp_path / "stopped")
    with StopSignal() as stop, pytest.raises(Preempted) as stopped:
        run(cfg, stop)
    assert (stopped.value.phase, stopped.value.step) == ("dylora", 3)
    state = torch.load(tmp_path / "stopped" / "checkpoints" / "search.pt", weights_only=False)
    assert state["step"] == 3 and sum(state["method"]["sampler"]["draws"].values()) == 3
    with StopSignal() as stop:
        resumed = run(cfg, stop)

    def numbers(result):
        return {"search": result["search"], "ranks": result["ranks"],
                "per_epoch": result["metrics"]["per_epoch"], "final": result["metrics"]["final"],
                "test": result["metrics"]["test"], "params": result["params"]}

    assert numbers(resumed) == numbers(uninterrupted)
    assert sum(resumed["search"]["rank_draws"].values()) == 8


def test_table1_shows_dylora_with_its_parameters_beside_lora(tmp_path, shared_data):
    """Real runs (tiny RoBERTa, 32 RTE rows) in a Table 1 folder: DyLoRA gets its own row, label
    from its registration, and its trainable count is that of the truncated model."""
    counts = {}
    for method in ("lora", "dylora"):
        folder = tmp_path / "runs" / "table1_glue" / "glue" / "rte" / "tiny-roberta" / method / "seed0"
        result = run(compose(["debug=default", "model=tiny-roberta", "task=glue/rte", f"method={method}",
                              f"task.data_dir={shared_data}/glue", "name=table1_glue"], folder))
        counts[method] = result["params"]["trainable"]
    chosen = next(iter(result["ranks"].values()))
    assert counts["dylora"] == 32 * 32 + 32 + 32 * 2 + 2 + 4 * chosen * (32 + 32)  # head + truncated factors
    make_tables(tmp_path / "runs", tmp_path / "tables")
    md = (tmp_path / "tables" / "table1_glue" / "tables.md").read_text()
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]] for line in md.splitlines()
            if line.startswith("| ")}
    assert "DyLoRA" in rows and "LoRA (r=4)" in rows
    header = rows["Method"]
    assert rows["DyLoRA"][header.index("Params")] not in ("", "–")
    assert rows["DyLoRA"][header.index("RTE")] not in ("", "–")
    assert list(rows).index("DyLoRA") > list(rows).index("LoRA (r=4)")


def test_dylora_on_e2e_with_gpt2s_fused_attention(tmp_path):
    """A generation task: GPT-2's c_attn is split into q/k/v linears (model.target_modules
    c_attn.q, c_attn.v), every candidate rank is scored by decoding D_val."""
    from test_nlg_pipeline import QV_LAYERS, tiny

    result = run(compose(tiny("e2e", "method=dylora", "method.r_max=3"), tmp_path))
    assert sorted(result["ranks"]) == sorted(QV_LAYERS) and len(set(result["ranks"].values())) == 1
    assert sorted(result["search"]["per_rank"]) == [1, 2, 3]
    assert all("bleu" in m for m in result["search"]["per_rank"].values()) and result["metrics"]["test"]["n_inputs"]


def test_dylora_on_every_linear_layer(tmp_path):
    """model.target_modules=all_linear: q, k, v, o and both feed-forward layers of each block."""
    result = run(compose([*TINY, "model.target_modules=all_linear", "method.r_max=3"], tmp_path))
    chosen = result["search"]["chosen_rank"]
    assert len(result["ranks"]) == 2 * 6 and set(result["ranks"].values()) == {chosen}
    in_plus_out = 4 * (32 + 32) + (32 + 64) + (64 + 32)  # q, k, v, o: 32 -> 32; intermediate 32 -> 64; output 64 -> 32
    head = 32 * 32 + 32 + 32 * 5 + 5
    assert result["params"]["trainable"] == head + 2 * chosen * in_plus_out
