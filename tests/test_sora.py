"""SoRA (methods/sora): the gated layer, the proximal step, the ranks, the parameter counts.

The layer is checked against peft's LoRA (g = 1), the proximal step against its formula written
out element by element, the optimiser groups against the authors' separate gate optimiser's
settings, and the pruned LoRA against the gated layer's output.
"""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest
import torch
from torch import nn

from autolora_exp.checkpoint import load_trainable_state, trainable_state
from autolora_exp.errors import UserError
from autolora_exp.methods.sora import SoRA
from autolora_exp.methods.sora.layer import (SoRALinear, effective_parameters, prune_zero_components, pruned_lora,
                                             sora_layers)
from autolora_exp.methods.sora.proximal import authors_threshold, proximal_step, soft_threshold
from autolora_exp.pipeline import run
from conftest import REPO, compose
from test_methods_baselines import (HEADS, HIDDEN, LABELS, QV_LAYERS, TARGETS, head_param_count, tiny_loader,
                                    tiny_roberta)
from test_preemption import comparable, resume, run_until_stopped, signal_at_step


def sora_model(seed: int = 0, **settings) -> tuple[nn.Module, SoRA]:
    method = SoRA(**settings)
    model = method.prepare(tiny_roberta(seed, dropout=0.0), TARGETS, HEADS)
    return model, method


def train_steps(model: nn.Module, method: SoRA, n: int, lr: float = 1e-2) -> torch.optim.Optimizer:
    """The shared loop's order of hooks (contract.TrainingHooks), without its schedule."""
    optimizer = torch.optim.AdamW(method.param_groups(model, 0.1), lr=lr)
    method.on_train_begin(model, n)
    model.train()
    for step, batch in enumerate(tiny_loader(n)):
        method.on_step_begin(model, step)
        loss = method.training_loss(model, model(**batch))
        loss.backward()
        optimizer.step()
        method.on_step_end(model, step + 1, optimizer)
        optimizer.zero_grad(set_to_none=True)
    return optimizer


def logits(model: nn.Module, seed: int = 5) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        batch = tiny_loader(1, seed=seed)[0]
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


# ---- the layer ------------------------------------------------------------------------------


def test_forward_equals_peft_lora_when_every_gate_is_one():
    """h = W0 x + (alpha / r) B diag(g) A x is peft's LoRA at g = 1 (same A, B, alpha, r)."""
    from peft import LoraConfig, get_peft_model

    lora = get_peft_model(tiny_roberta(0, dropout=0.0),
                          LoraConfig(r=4, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS,
                                     modules_to_save=HEADS))
    sora, _ = sora_model(0, r_max=4, lora_alpha=16, gate_init="ones")
    torch.manual_seed(1)
    layers = sora_layers(sora)
    assert sorted(layers) == QV_LAYERS
    for name, layer in layers.items():
        peft_layer = lora.get_submodule(f"base_model.model.{name}")
        with torch.no_grad():
            peft_layer.lora_B["default"].weight.normal_()  # B = 0 at init: make the update visible
            layer.lora_A.copy_(peft_layer.lora_A["default"].weight)
            layer.lora_B.copy_(peft_layer.lora_B["default"].weight)
    out = logits(sora)
    assert not torch.allclose(out, logits(tiny_roberta(0, dropout=0.0)))  # the update does change the output
    torch.testing.assert_close(out, logits(lora), rtol=1e-5, atol=1e-6)


def test_gates_scale_their_components_and_a_zero_gate_removes_one():
    base = nn.Linear(6, 5)
    layer = SoRALinear(base, r_max=3, lora_alpha=6.0, lora_dropout=0.0, gate_init="normal")
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.gate.copy_(torch.tensor([0.5, 0.0, -2.0]))
    x = torch.randn(4, 6)
    a, b = layer.lora_A.detach(), layer.lora_B.detach()
    expected = base(x) + (6.0 / 3) * sum(g * torch.outer(b[:, j], a[j]) for j, g in ((0, 0.5), (2, -2.0))).matmul(x.T).T
    torch.testing.assert_close(layer(x), expected)
    assert layer.rank() == 2


def test_a_gpt2_conv1d_is_adapted_with_its_transposed_shape():
    """transformers' Conv1D (GPT-2's c_proj, c_fc) holds W as in x out: y = x W + b."""
    from transformers.pytorch_utils import Conv1D

    conv = Conv1D(5, 7)  # nf = 5 outputs, nx = 7 inputs
    layer = SoRALinear(conv, r_max=2, lora_alpha=4.0, lora_dropout=0.0, gate_init="normal")
    assert (layer.in_features, layer.out_features) == (7, 5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 7)
    expected = x @ conv.weight + conv.bias + 2.0 * ((x @ layer.lora_A.T) * layer.gate) @ layer.lora_B.T
    torch.testing.assert_close(layer(x), expected)


def test_pruned_lora_computes_the_gated_update():
    layer = SoRALinear(nn.Linear(7, 9), r_max=5, lora_alpha=10.0, lora_dropout=0.0, gate_init="normal")
    with torch.no_grad():
        layer.lora_B.normal_()
        layer.gate.copy_(torch.tensor([0.0, 1.5, 0.0, -0.25, 3.0]))
    a, b = pruned_lora(layer)
    assert a.shape == (3, 7) and b.shape == (9, 3)
    x = torch.randn(2, 7)
    torch.testing.assert_close(layer.scaling * (x @ a.T) @ b.T, layer.delta(x))


def test_pruning_the_zero_components_keeps_the_function_and_leaves_the_effective_parameters():
    model, method = sora_model(0, xi=0.5)
    train_steps(model, method, 2)
    ranks, out, effective = method.ranks(model), logits(model), effective_parameters(model)
    assert 0 < sum(ranks.values()) < 8 * len(QV_LAYERS)
    assert prune_zero_components(model) == ranks
    assert {n: layer.lora_A.shape[0] for n, layer in sora_layers(model).items()} == ranks
    torch.testing.assert_close(logits(model), out, rtol=0, atol=1e-6)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == effective + sum(ranks.values())  # what is left, plus the non-zero gates


def test_only_the_factors_gates_and_head_train():
    model, _ = sora_model()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    expected = {f"{layer}.{p}" for layer in QV_LAYERS for p in ("lora_A", "lora_B", "gate")}
    assert {n for n in trainable if not n.startswith("classifier.")} == expected
    assert sum(p.numel() for n, p in model.named_parameters() if n.startswith("classifier.")) == \
        head_param_count(HIDDEN, LABELS)
    assert all(p.requires_grad for n, p in model.named_parameters() if n.startswith("classifier."))


# ---- the proximal step ----------------------------------------------------------------------


def test_soft_threshold_is_the_formula():
    """T_xi(g) = g - xi if g > xi, g + xi if g < -xi, else 0 (values exact in binary)."""
    xi = 0.25
    g = torch.tensor([1.0, 0.375, 0.25, 0.125, 0.0, -0.125, -0.375, -1.0])
    expected = [x - xi if x > xi else x + xi if x < -xi else 0.0 for x in g.tolist()]
    assert soft_threshold(g, xi).tolist() == expected == [0.75, 0.125, 0.0, 0.0, 0.0, 0.0, -0.125, -0.75]


def test_authors_masks_also_zero_what_lies_between_xi_and_two_xi():
    """TsinghuaC3I/SoRA src/sparse_optimizer.py:116-119 applied in sequence."""
    g = torch.tensor([1.0, 0.375, 0.125, 0.0, -0.125, -0.375, -1.0])
    assert authors_threshold(g, 0.25).tolist() == [0.75, 0.0, 0.0, 0.0, 0.0, 0.0, -0.75]
    assert g.tolist()[1] == 0.375  # on a copy


def test_on_step_end_thresholds_the_gates_after_the_optimiser_step():
    """g_{t+1} = T_xi(AdamW step of g): the hook applies the formula to what the optimiser left."""
    model, method = sora_model(xi=0.05, l1_weight=0.0)
    optimizer = torch.optim.AdamW(method.param_groups(model, 0.1), lr=1e-2)
    loss = method.training_loss(model, model(**tiny_loader(1)[0]))
    loss.backward()
    optimizer.step()
    stepped = {n: layer.gate.detach().clone() for n, layer in sora_layers(model).items()}
    others = {n: p.detach().clone() for n, p in model.named_parameters() if not n.endswith(".gate")}
    method.on_step_end(model, 1, optimizer)
    for name, layer in sora_layers(model).items():
        assert torch.equal(layer.gate, soft_threshold(stepped[name], 0.05))
    assert all(torch.equal(p, others[n]) for n, p in model.named_parameters() if not n.endswith(".gate"))


def test_xi_times_lr_thresholds_by_the_steps_learning_rate():
    """The paper's g <- T_{eta_t xi}(AdamW step of g) with eta_t the gates' scheduled rate of step t
    (linear warm-up then decay: a different eta_t at every step, 0 at the first)."""
    from transformers import get_linear_schedule_with_warmup

    xi = 2.0
    model, method = sora_model(xi=xi, xi_times_lr=True, l1_weight=0.0, gate_lr=0.05)
    optimizer = torch.optim.AdamW(method.param_groups(model, 0.1), lr=1e-2)
    scheduler = get_linear_schedule_with_warmup(optimizer, 2, 5)
    method.on_train_begin(model, 5)
    etas = []
    for step, batch in enumerate(tiny_loader(4)):
        method.on_step_begin(model, step)
        method.training_loss(model, model(**batch)).backward()
        eta = optimizer.param_groups[-1]["lr"]
        optimizer.step()
        scheduler.step()
        stepped = {n: layer.gate.detach().clone() for n, layer in sora_layers(model).items()}
        method.on_step_end(model, step + 1, optimizer)
        optimizer.zero_grad(set_to_none=True)
        for name, layer in sora_layers(model).items():
            assert torch.equal(layer.gate, soft_threshold(stepped[name], xi * eta))
        etas.append(eta)
    assert etas == [0.0, 0.025, 0.05, 0.05 * 2 / 3]


def test_proximal_rule_authors_is_applied_when_chosen():
    g = torch.tensor([1.0, 0.375, 0.125])
    proximal_step([g], 0.25, "authors")
    assert g.tolist() == [0.75, 0.0, 0.0]


def test_gates_reach_zero_under_a_large_threshold_and_ranks_count_them():
    model, method = sora_model(xi=0.5, gate_init="normal")
    r_max = 8
    assert method.ranks(model) == {name: r_max for name in QV_LAYERS}  # N(0, 1) draws are not 0
    before = {n: layer.gate.detach().abs() for n, layer in sora_layers(model).items()}
    train_steps(model, method, 3)
    ranks = method.ranks(model)
    gates = {n: layer.gate.detach() for n, layer in sora_layers(model).items()}
    assert ranks == {n: int((g != 0).sum()) for n, g in gates.items()}
    assert sum(ranks.values()) < r_max * len(QV_LAYERS)  # some went to exactly zero
    # 3 AdamW steps at the gates' rate (the method's lr, 8e-4) move a gate by ~2.4e-3 at most; 3 thresholds take 1.5 off
    assert all((gates[n][before[n] < 1.4] == 0).all() for n in gates)

    train_steps(model, SoRA(xi=100.0), 1)
    assert set(method.ranks(model).values()) == {0}
    assert effective_parameters(model) == head_param_count(HIDDEN, LABELS)


def test_effective_parameters_count_the_surviving_components():
    model, method = sora_model(r_max=4)
    wanted = dict(zip(QV_LAYERS, (4, 0, 1, 3)))
    with torch.no_grad():
        for name, layer in sora_layers(model).items():
            layer.gate.copy_(torch.tensor([1.0] * wanted[name] + [0.0] * (4 - wanted[name])))
    assert method.ranks(model) == wanted
    counts = method.parameter_counts(model)
    assert counts == {"effective": head_param_count(HIDDEN, LABELS) + sum(wanted.values()) * (HIDDEN + HIDDEN)}


# ---- the optimiser groups and the loss ------------------------------------------------------


def test_gates_have_their_own_group_without_weight_decay():
    model, method = sora_model(lr=1e-3, gate_lr=5e-2, gate_eps=1e-6)
    groups = method.param_groups(model, 0.1)
    gates = {id(layer.gate) for layer in sora_layers(model).values()}
    gate_group = groups[-1]
    assert {id(p) for p in gate_group["params"]} == gates
    assert (gate_group["weight_decay"], gate_group["lr"], gate_group["eps"]) == (0.0, 5e-2, 1e-6)
    grouped = [id(p) for g in groups for p in g["params"]]
    assert sorted(grouped) == sorted(id(p) for p in model.parameters() if p.requires_grad)  # each once
    assert not gates & {id(p) for g in groups[:-1] for p in g["params"]}
    assert SoRA(lr=1e-3).param_groups(model, 0.1)[-1]["lr"] == 1e-3  # gate_lr null: the method's lr


def test_training_loss_adds_the_mean_absolute_gate():
    model, method = sora_model(l1_weight=10.0)
    outputs = model(**tiny_loader(1)[0])
    gates = torch.cat([layer.gate.detach() for layer in sora_layers(model).values()])
    expected = outputs.loss + 10.0 * gates.abs().sum() / gates.numel()
    torch.testing.assert_close(method.training_loss(model, outputs), expected)
    assert SoRA(l1_weight=0.0).training_loss(model, outputs) is outputs.loss


# ---- state ----------------------------------------------------------------------------------


def test_trained_state_round_trips_into_a_fresh_model():
    model, method = sora_model(0, xi=0.2)
    train_steps(model, method, 3)
    state = trainable_state(model)
    assert {n for n in state if n.endswith(".gate")} == {f"{layer}.gate" for layer in QV_LAYERS}

    fresh, _ = sora_model(0, xi=0.2)  # same backbone, new random A and g
    assert not torch.equal(logits(fresh), logits(model))
    load_trainable_state(fresh, state)
    assert torch.equal(logits(fresh), logits(model))
    assert method.ranks(fresh) == method.ranks(model)
    assert method.state_dict(model) == {"gate_updates": 3, "next_lr": 8e-4}  # the gates: the method's lr
    resumed = SoRA(xi=0.2)
    resumed.load_state_dict(fresh, method.state_dict(model))
    assert (resumed.gate_updates, resumed.next_lr) == (3, 8e-4)


def test_a_step_the_loss_scaler_skipped_is_not_thresholded():
    """fp16: GradScaler.step skips the optimiser when a gradient overflowed; the authors'
    threshold is inside their optimiser's step, so it is skipped with it."""
    model, method = sora_model(xi=0.05, l1_weight=0.0)
    optimizer = train_steps(model, method, 1)
    gates = {n: layer.gate.detach().clone() for n, layer in sora_layers(model).items()}
    method.on_step_end(model, 2, optimizer)  # no optimiser step since the last call
    assert all(torch.equal(layer.gate, gates[n]) for n, layer in sora_layers(model).items())
    assert method.gate_updates == 1


# ---- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize("setting,message", [
    ({"r_max": 0}, "method.r_max=0 is not accepted; use an integer >= 1"),
    ({"xi": -0.1}, "method.xi=-0.1 is not accepted; use a number >= 0"),
    ({"l1_weight": -1.0}, "method.l1_weight=-1.0 is not accepted; use a number >= 0"),
    ({"gate_init": "zeros"}, "method.gate_init='zeros' is not accepted; use one of normal, ones"),
    ({"proximal": "hard"}, "method.proximal='hard' is not accepted; use one of soft, authors"),
    ({"lora_dropout": 1.0}, "method.lora_dropout=1.0 is not accepted"),
    ({"gate_lr": 0.0}, "method.gate_lr=0.0 is not accepted; use null or a number > 0"),
    ({"gate_eps": 0.0}, "method.gate_eps=0.0 is not accepted; use a number > 0"),
    ({"xi": float("nan")}, "method.xi=nan is not accepted"),
])
def test_bad_values_are_one_line_errors(setting, message):
    with pytest.raises(UserError) as err:
        SoRA(**setting)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_targets_that_are_missing_or_not_linear_are_refused():
    with pytest.raises(UserError, match="target module 'nope' is not in the model"):
        SoRA().prepare(tiny_roberta(0), ["nope"], HEADS)
    with pytest.raises(UserError, match="is a RobertaSelfAttention; SoRA adapts nn.Linear / Conv1D"):
        SoRA().prepare(tiny_roberta(0), ["attention.self"], HEADS)
    model, method = sora_model()
    with pytest.raises(UserError, match="already has a SoRA layer"):
        method.prepare(model, TARGETS, HEADS)


# ---- end to end: run.py's pipeline, resume, the command line ---------------------------------

TINY_SORA = ["debug=default", "model=tiny-roberta", "method=sora"]


def expected_trainable(r_max: int, n_labels: int) -> int:
    """A, B and g of the 4 q/v layers of tiny-roberta (hidden 32) plus the head."""
    return 4 * (r_max * 32 + 32 * r_max + r_max) + head_param_count(32, n_labels)


def test_pipeline_run_records_ranks_and_trainable_parameters(tmp_path):

    result = run(compose(TINY_SORA, tmp_path / "run"))
    assert result["method"] == "sora" and result["search"] is None  # one phase: no search, no retrain
    assert list(result["phases"]) == ["data", "train", "test"]
    layers = [f"roberta.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")]
    assert result["ranks"] == dict.fromkeys(layers, 8)  # 4 steps at xi = 3e-4: no N(0, 1) gate reaches 0
    assert result["params"]["trainable"] == expected_trainable(8, result["config"]["task"]["num_labels"])
    # the count after pruning: no gate is zero, so everything but the 8 gates of each layer stays
    assert result["params"]["effective"] == result["params"]["trainable"] - 4 * 8
    assert (tmp_path / "run" / "rank_heatmap.png").is_file()


def test_pipeline_run_with_a_large_threshold_prunes_every_gate(tmp_path):

    result = run(compose([*TINY_SORA, "method.xi=5", "method.r_max=2"], tmp_path / "run"))
    assert set(result["ranks"].values()) == {0}
    assert result["params"]["trainable"] == expected_trainable(2, result["config"]["task"]["num_labels"])
    assert result["params"]["effective"] == head_param_count(32, result["config"]["task"]["num_labels"])
    assert all(isinstance(e["train_loss"], float) for e in result["metrics"]["per_epoch"])


def test_all_linear_targets_put_a_gate_on_every_linear_layer_of_the_blocks(tmp_path):
    """The authors' layer choice (q, k, v, attention output, both feed-forward layers; their
    src/lora.py:109) through the model's all_linear preset."""
    result = run(compose([*TINY_SORA, "model.target_modules=all_linear"], tmp_path / "run"))
    kinds = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
             "intermediate.dense", "output.dense")
    layers = {f"roberta.encoder.layer.{i}.{k}" for i in range(2) for k in kinds}
    assert set(result["ranks"]) == layers and set(result["ranks"].values()) == {8}


@pytest.mark.parametrize("threshold", [["method.xi=0.1"], ["method.xi=5", "method.xi_times_lr=true"]],
                         ids=["xi", "eta_t-xi"])
def test_stopped_mid_training_resumes_bit_identically(threshold, tmp_path, monkeypatch):
    """A threshold that zeroes gates within the run, so the resumed steps must prune the same."""
    overrides = [*TINY_SORA, "train.max_steps=null", "method.lr=0.05", *threshold]
    uninterrupted = run(compose(overrides, tmp_path / "uninterrupted"))
    assert 0 < sum(uninterrupted["ranks"].values()) < 4 * 8  # some gates went to zero, some did not

    cfg = compose(overrides, tmp_path / "stopped")
    sent = signal_at_step(monkeypatch, "train", 3, signal.SIGTERM)
    stopped = run_until_stopped(cfg)
    assert sent == [3] and (stopped.phase, stopped.step) == ("train", 3)
    state = torch.load(tmp_path / "stopped" / "checkpoints" / "train.pt", weights_only=False)
    assert state["method"]["gate_updates"] == 3 and state["method"]["next_lr"] > 0
    assert comparable(resume(cfg)) == comparable(uninterrupted)


def test_a_bad_value_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    proc = subprocess.run([sys.executable, "run.py", *TINY_SORA, "method.xi=-1", f"output_dir={tmp_path / 'run'}"],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == "error: method.xi=-1.0 is not accepted; use a number >= 0"
