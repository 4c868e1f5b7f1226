"""Baselines on tiny models through the shared loop: LoRA, AdaLoRA, Houlsby adapters, full FT.

Each method trains a few steps with :func:`autolora_exp.train.fit` and may change only its
own parameters; AdaLoRA's budget schedule, its orthogonality penalty, and the adapters'
identity at initialisation are checked against independent computations.
"""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from transformers import GPT2Config, GPT2ForSequenceClassification, RobertaConfig, RobertaForSequenceClassification

from autolora_exp.errors import UserError
from autolora_exp.methods.adalora import AdaLoRA, adalora_ranks, orthogonality_penalty
from autolora_exp.methods.adapter import Adapter, HoulsbyAdapter, adapter_parameter_count, adapter_sites
from autolora_exp.methods.full_ft import FullFineTuning
from autolora_exp.methods.lora import LoRA
from autolora_exp.models import count_parameters
from autolora_exp.train import fit

VOCAB, SEQ, LABELS, HIDDEN, LAYERS = 100, 12, 3, 32, 2
TARGETS, HEADS = ["query", "value"], ["classifier"]
QV_LAYERS = [f"roberta.encoder.layer.{i}.attention.self.{m}" for i in range(LAYERS) for m in ("query", "value")]


def tiny_roberta(seed: int = 0, dropout: float = 0.1) -> RobertaForSequenceClassification:
    torch.manual_seed(seed)
    cfg = RobertaConfig(vocab_size=VOCAB, hidden_size=HIDDEN, num_hidden_layers=LAYERS, num_attention_heads=2,
                        intermediate_size=37, max_position_embeddings=SEQ + 4, num_labels=LABELS,
                        hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout)
    return RobertaForSequenceClassification(cfg)


def tiny_loader(n_batches: int, seed: int = 0, size: int = 4) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"input_ids": torch.randint(3, VOCAB, (size, SEQ), generator=g),
             "attention_mask": torch.ones(size, SEQ, dtype=torch.long),
             "labels": torch.randint(0, LABELS, (size,), generator=g)} for _ in range(n_batches)]


def train_cfg(epochs: int = 1, max_steps: int | None = None) -> SimpleNamespace:
    return SimpleNamespace(epochs=epochs, max_steps=max_steps, weight_decay=0.1, warmup_ratio=0.0,
                           max_grad_norm=1.0, progress=False)


def run_fit(model, method, n_batches: int, epochs: int = 1, lr: float = 1e-2):
    return fit(model, method, tiny_loader(n_batches), lambda m: {"validation": {"accuracy": 0.0}},
               train_cfg(epochs), lr, "accuracy", torch.device("cpu"))


def head_param_count(hidden: int, labels: int) -> int:
    """RoBERTa's classification head: dense hidden->hidden and out_proj hidden->labels, with biases."""
    return hidden * hidden + hidden + hidden * labels + labels


# ---- every method changes only its own parameters -------------------------------------------

def _is_layer_norm_param(model, name: str) -> bool:
    module = model.get_submodule(name.rsplit(".", 1)[0])
    return isinstance(module, torch.nn.LayerNorm)


METHODS = {
    # name: (factory, predicate: does the prepared model's parameter `name` belong to the method?)
    "lora": (lambda: LoRA(r=2), lambda model, n: "lora_" in n or ".modules_to_save." in n),
    "adalora": (lambda: AdaLoRA(init_r=3, target_r=2, deltaT=1),
                lambda model, n: "lora_" in n or ".modules_to_save." in n),
    "adapter": (lambda: HoulsbyAdapter(bottleneck=4),
                lambda model, n: ".adapter." in n or n.startswith("classifier.") or _is_layer_norm_param(model, n)),
    "full_ft": (lambda: FullFineTuning(), lambda model, n: True),
}


@pytest.mark.parametrize("method_name", sorted(METHODS))
def test_method_trains_only_its_own_parameters(method_name):
    factory, own = METHODS[method_name]
    method = factory()
    base = tiny_roberta()
    # The backbone's parameter objects survive wrapping (peft and the adapters modify in place),
    # so their values before and after training can be compared directly.
    backbone = dict(base.named_parameters())
    before = {n: p.detach().clone() for n, p in backbone.items()}
    model = method.prepare(base, TARGETS, HEADS)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if own(model, n)}
    prepared_before = {n: p.detach().clone() for n, p in model.named_parameters()}

    result = run_fit(model, method, n_batches=4)
    assert result.steps == 4

    trainable_ids = {id(p) for p in model.parameters() if p.requires_grad}
    for name, p in backbone.items():
        if id(p) not in trainable_ids:
            assert torch.equal(p, before[name]), f"{method_name} changed frozen backbone weight {name}"
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert torch.equal(p, prepared_before[name]), f"{method_name} changed frozen {name}"
        elif ".lora_E." not in name:  # a singular-value vector may be pruned back to all zeros
            assert not torch.equal(p, prepared_before[name]), f"{method_name} did not train {name}"
    if method_name in ("lora", "adalora"):  # the head trains as peft's copy; the original stays
        assert all(torch.equal(p, before[n]) for n, p in backbone.items())
    if method_name == "full_ft":
        assert count_parameters(model)["trainable"] == count_parameters(model)["total"]


# ---- AdaLoRA ---------------------------------------------------------------------------------

class RecordingAdaLoRA(AdaLoRA):
    """AdaLoRA that records the number of non-zero singular values after every allocation."""

    def on_train_begin(self, model, total_steps):
        super().on_train_begin(model, total_steps)
        self.kept: dict[int, int] = {}

    def on_step_end(self, model, global_step, optimizer):
        super().on_step_end(model, global_step, optimizer)
        self.kept[global_step] = sum(adalora_ranks(model).values())


def test_adalora_budget_reaches_target_after_total_step_minus_tfinal():
    method = RecordingAdaLoRA(init_r=6, target_r=4, tinit=0.1, tfinal=0.3, deltaT=2)
    model = method.prepare(tiny_roberta(), TARGETS, HEADS)
    run_fit(model, method, n_batches=10, epochs=2)  # total_step = 20, computed by the loop
    assert method.schedule == {"total_step": 20, "tinit": 2, "tfinal": 6}
    tuner = model.base_model
    # the allocator reads the schedule from the object on_train_begin wrote, not the placeholder
    assert tuner.rankallocator.peft_config.total_step == 20
    init_bgt, target_bgt = 6 * len(QV_LAYERS), 4 * len(QV_LAYERS)
    assert (tuner.rankallocator.init_bgt, tuner.rankallocator.target_bgt) == (init_bgt, target_bgt)
    assert tuner.rankallocator.budget_schedule(14) == (target_bgt, True)

    def budget(t: int) -> int:  # the cubic schedule, written out independently of peft
        return int((init_bgt - target_bgt) * (1 - (t - 2) / (20 - 6 - 2)) ** 3 + target_bgt)

    final_step = 20 - 6
    assert all(method.kept[t] == init_bgt for t in range(1, 3))  # warm-up: nothing pruned
    for t in range(4, final_step, 2):  # masking steps (every deltaT) keep exactly b(t) triplets
        assert method.kept[t] == budget(t), (t, method.kept)
    assert method.kept[4] < init_bgt and budget(4) > target_bgt
    for t in range(final_step, 21):  # the final allocation holds to the end
        assert method.kept[t] == target_bgt, (t, method.kept)
    ranks = method.ranks(model)
    assert sorted(ranks) == QV_LAYERS
    assert sum(ranks.values()) == target_bgt and all(0 <= r <= 6 for r in ranks.values())
    # the ranks are those of the allocator's final pattern
    pattern = tuner.peft_config["default"].rank_pattern
    assert sorted(sum(v) for v in pattern.values()) == sorted(ranks.values())


def test_adalora_total_step_comes_from_the_data_and_epochs():
    method = AdaLoRA(init_r=3, target_r=2)
    model = method.prepare(tiny_roberta(), TARGETS, HEADS)
    run_fit(model, method, n_batches=3, epochs=3)
    assert method.schedule["total_step"] == 9 == model.base_model.peft_config["default"].total_step


def reference_penalty(model) -> torch.Tensor:
    """The penalty from its definition, by parameter name: mean ||A A^T - I||_F, ||B^T B - I||_F."""
    terms = []
    for name, p in model.named_parameters():
        if ".lora_A." in name:
            terms.append(torch.linalg.norm(p @ p.T - torch.eye(p.shape[0])))
        elif ".lora_B." in name:
            terms.append(torch.linalg.norm(p.T @ p - torch.eye(p.shape[1])))
    return sum(terms) / len(terms)


def test_adalora_penalty_is_in_the_backpropagated_loss_exactly_once():
    weight = 0.7
    method = AdaLoRA(init_r=3, target_r=2, orth_reg_weight=weight, lora_dropout=0.0)
    model = method.prepare(tiny_roberta(dropout=0.0), TARGETS, HEADS)
    batch = tiny_loader(1)[0]
    outputs = model(**batch)  # labels passed: the model computes the task loss
    task = F.cross_entropy(outputs.logits, batch["labels"])
    assert torch.allclose(outputs.loss, task), "peft must not add the penalty inside forward"
    penalty = reference_penalty(model)
    assert penalty.item() > 0.1  # random A, B at init are far from orthonormal
    assert torch.allclose(orthogonality_penalty(model), penalty)

    loss = method.training_loss(model, outputs)
    assert torch.allclose(loss, task + weight * penalty)
    params = [p for n, p in model.named_parameters() if ".lora_A." in n or ".lora_B." in n]
    got = torch.autograd.grad(loss, params)

    def reference_grads(times: int):  # a fresh graph with the penalty counted `times` times
        ref = F.cross_entropy(model(**batch).logits, batch["labels"]) + times * weight * reference_penalty(model)
        return torch.autograd.grad(ref, params)

    def same(a, b):
        return all(torch.allclose(x, y, atol=1e-6) for x, y in zip(a, b))

    assert same(got, reference_grads(1))
    assert not same(got, reference_grads(0)) and not same(got, reference_grads(2))


def test_adalora_zero_weight_leaves_the_task_loss():
    method = AdaLoRA(init_r=3, target_r=2, orth_reg_weight=0.0)
    model = method.prepare(tiny_roberta(), TARGETS, HEADS)
    outputs = model(**tiny_loader(1)[0])
    assert method.training_loss(model, outputs) is outputs.loss


def test_adalora_trainable_parameter_count():
    method = AdaLoRA(init_r=6, target_r=4)
    model = method.prepare(tiny_roberta(), TARGETS, HEADS)
    # per layer: A (r x in), E (r x 1), B (out x r)
    expected = len(QV_LAYERS) * 6 * (HIDDEN + HIDDEN + 1) + head_param_count(HIDDEN, LABELS)
    assert count_parameters(model)["trainable"] == expected


@pytest.mark.parametrize("kwargs", [{"init_r": 4, "target_r": 4}, {"target_r": 0}, {"beta1": 1.0},
                                    {"deltaT": 0}, {"orth_reg_weight": -1.0}, {"total_step": 0}])
def test_adalora_rejects_bad_config(kwargs):
    with pytest.raises(UserError):
        AdaLoRA(**kwargs)


def test_adalora_rejects_schedules_that_cannot_reach_the_target():
    method = AdaLoRA(init_r=3, target_r=2, total_step=50)
    model = method.prepare(tiny_roberta(), TARGETS, HEADS)
    with pytest.raises(UserError, match="total_step=50 exceeds"):
        method.on_train_begin(model, 10)
    method = AdaLoRA(init_r=3, target_r=2, tinit=5, tfinal=5)
    with pytest.raises(UserError, match="no budgeting phase"):
        method.on_train_begin(method.prepare(tiny_roberta(), TARGETS, HEADS), 10)
    with pytest.raises(UserError, match="tinit=2.5"):
        AdaLoRA(init_r=3, target_r=2, tinit=2.5).on_train_begin(model, 10)


# ---- Houlsby adapters ------------------------------------------------------------------------

def test_adapter_module_is_identity_at_init():
    adapter = Adapter(16, 4)
    x = torch.randn(2, 5, 16)
    assert torch.equal(adapter(x), x)
    assert torch.count_nonzero(adapter.up.weight) == 0 and adapter.down.weight.abs().sum() > 0


def _adapted_model_is_identity_then_differs(base, heads):
    base.eval()
    batch = {k: v for k, v in tiny_loader(1)[0].items() if k != "labels"}
    with torch.no_grad():
        expected = base(**batch).logits
    model = HoulsbyAdapter(bottleneck=4).prepare(copy.deepcopy(base), [], heads)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(**batch).logits, expected)  # bit-identical: W_up = 0, b_up = 0
        # the adapters are really on the forward path: a non-zero W_up changes the output
        for module in model.modules():
            if isinstance(module, Adapter):
                module.up.weight.normal_(std=0.5)
        assert not torch.allclose(model(**batch).logits, expected)
    return model


def test_adapted_roberta_is_identity_at_init():
    model = _adapted_model_is_identity_then_differs(tiny_roberta(), HEADS)
    sites = [n for n, m in model.named_modules() if isinstance(m, Adapter)]
    assert sites == [f"roberta.encoder.layer.{i}.{s}.dropout.adapter"
                     for i in range(LAYERS) for s in ("attention.output", "output")]


def test_adapted_gpt2_is_identity_at_init():
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=VOCAB, n_embd=HIDDEN, n_layer=LAYERS, n_head=2, n_positions=SEQ + 4,
                     num_labels=LABELS, pad_token_id=0)
    model = _adapted_model_is_identity_then_differs(GPT2ForSequenceClassification(cfg), ["score"])
    sites = [n for n, m in model.named_modules() if isinstance(m, Adapter)]
    assert sites == [f"transformer.h.{i}.{s}.adapter" for i in range(LAYERS) for s in ("attn.resid_dropout",
                                                                                        "mlp.dropout")]


@pytest.mark.parametrize("train_layer_norms", [True, False])
def test_adapter_trainable_count_is_analytic(train_layer_norms):
    method = HoulsbyAdapter(bottleneck=5, train_layer_norms=train_layer_norms)
    model = method.prepare(tiny_roberta(), TARGETS, HEADS)
    adapters = adapter_parameter_count(HIDDEN, 5, 2 * LAYERS)
    assert adapters == 2 * LAYERS * (2 * HIDDEN * 5 + HIDDEN + 5) == method.adapter_parameter_count(model)
    # LayerNorms: the embeddings' and two per block, gain and bias each
    layer_norms = (1 + 2 * LAYERS) * 2 * HIDDEN if train_layer_norms else 0
    assert count_parameters(model)["trainable"] == adapters + layer_norms + head_param_count(HIDDEN, LABELS)


def test_adapter_frozen_layer_norms_leave_the_backbone_bit_identical():
    method = HoulsbyAdapter(bottleneck=4, train_layer_norms=False)
    base = tiny_roberta()
    backbone = {n: (p, p.detach().clone()) for n, p in base.named_parameters() if not n.startswith("classifier.")}
    model = method.prepare(base, TARGETS, HEADS)
    run_fit(model, method, n_batches=3)
    assert all(torch.equal(p, old) for p, old in backbone.values())
    # the backbone's state-dict keys are unchanged: only adapter keys are added
    keys = set(model.state_dict())
    assert {n for n in backbone} <= keys and all(".adapter." in k for k in keys - set(backbone)
                                                 if not k.startswith("classifier."))


def test_adapter_rejects_bad_config():
    with pytest.raises(UserError, match="nonlinearity 'swishy'"):
        HoulsbyAdapter(nonlinearity="swishy")
    with pytest.raises(UserError, match="bottleneck=0"):
        HoulsbyAdapter(bottleneck=0)
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    other = DistilBertForSequenceClassification(DistilBertConfig(vocab_size=VOCAB, dim=HIDDEN, n_layers=1,
                                                                 n_heads=2, hidden_dim=37))
    with pytest.raises(UserError, match="model type 'distilbert' is not supported"):
        adapter_sites(other)


def test_adalora_schedule_too_short_to_budget_is_refused(make_cfg):
    from autolora_exp.errors import UserError
    from autolora_exp.pipeline import run

    with pytest.raises(UserError, match="no budgeting phase"):
        run(make_cfg("debug=default", "model=tiny-roberta", "method=adalora", "train.max_steps=2"))


def test_adalora_final_ranks_in_result_and_heatmap(make_cfg, tmp_path):
    from autolora_exp.pipeline import run

    result = run(make_cfg("debug=default", "model=tiny-roberta", "method=adalora"))
    assert len(result["ranks"]) == 4 and all(0 <= r <= 6 for r in result["ranks"].values())
    assert (tmp_path / "run" / "rank_heatmap.png").stat().st_size > 0


def test_adalora_takes_its_authors_learning_rate_per_glue_task(tmp_path):
    """Issue 15 item 3: at LoRA's 5e-4 AdaLoRA undertrains (its update starts from E = 0); the
    config takes the AdaLoRA authors' per-task GLUE rate, LoRA's elsewhere; method.lr= wins."""
    from omegaconf import OmegaConf

    from autolora_exp import bench
    from autolora_exp.methods.adalora import AUTHORS_GLUE_LR
    from autolora_exp.glue_tasks import GLUE_TASK_NAMES
    from conftest import REPO

    def lr(*overrides: str) -> float:
        config = bench.compose_config(["method=adalora", *overrides], tmp_path, REPO / "conf")
        return OmegaConf.to_container(config, resolve=True)["method"]["lr"]

    assert sorted(AUTHORS_GLUE_LR) == sorted(f"glue/{t}" for t in GLUE_TASK_NAMES)
    assert lr("task=glue/stsb") == 2.2e-3 and lr("task=glue/rte") == 1.2e-3 and lr("task=glue/sst2") == 8e-4
    assert lr() == 5e-4  # the offline default task (BBC News): LoRA's rate
    assert lr("task=glue/stsb", "method.lr=1e-4") == 1e-4
