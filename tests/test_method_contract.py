"""The method contract (autolora_exp.contract, issue 18): the central modules import no method,
the loop calls the hooks where the contract says, and a method defined here (its class and
schema registered at runtime, no edit anywhere else) runs through the pipeline end to end,
including a method whose search trains the final model (no retrain)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hydra.core.config_store import ConfigStore

from autolora_exp import results
from autolora_exp.contract import (LEARNING_RATE, Method, MethodConfig, MethodSpec, RankSearch, SearchContext,
                                   SearchPlan, TrainingHooks, discover_methods, register_method)
from autolora_exp.pipeline import run
from autolora_exp.validation import accepts
from conftest import REPO
from test_methods_baselines import tiny_loader, tiny_roberta, train_cfg

SRC = REPO / "src" / "autolora_exp"
METHODS = "autolora_exp.methods"


def method_imports(path: Path) -> list[str]:
    """Every ``autolora_exp.methods...`` module that ``path`` imports (anywhere in the file:
    top level, inside functions, under TYPE_CHECKING)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name == METHODS or a.name.startswith(METHODS + ".")]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == METHODS or node.module.startswith(METHODS + "."):
                found.append(node.module)
            elif node.module == "autolora_exp" and any(a.name == "methods" for a in node.names):
                found.append(METHODS)
    return found


def central_modules() -> list[Path]:
    """Every module of the package outside ``methods/``: pipeline, train, schema, validation,
    tables/*, task_types/*, data/*, tracking, results, bench, run_folder, contract, ..."""
    return sorted(p for p in SRC.rglob("*.py") if "methods" not in p.relative_to(SRC).parts)


def test_static_no_central_module_imports_a_method():
    modules = central_modules()
    names = {p.relative_to(SRC).as_posix() for p in modules}
    assert {"pipeline.py", "train.py", "schema.py", "validation.py", "contract.py", "tracking.py", "results.py",
            "bench.py", "run_folder.py"} <= names and any(n.startswith("tables/") for n in names)
    offenders = {p.relative_to(SRC).as_posix(): method_imports(p) for p in modules}
    assert {k: v for k, v in offenders.items() if v} == {}


def test_static_check_catches_an_import(tmp_path):
    """The check above can fail: each import form is seen."""
    for line in ("import autolora_exp.methods.lora", "from autolora_exp.methods.autolora import search",
                 "from autolora_exp import methods", "def f():\n    from autolora_exp.methods.lora import LoRA"):
        (tmp_path / "m.py").write_text(line + "\n")
        assert method_imports(tmp_path / "m.py"), line


def test_runtime_importing_the_central_modules_loads_no_method():
    code = ("import sys\n"
            "import autolora_exp.pipeline, autolora_exp.train, autolora_exp.schema, autolora_exp.validation\n"
            "import autolora_exp.tables.make, autolora_exp.tracking, autolora_exp.results, autolora_exp.bench\n"
            "print(sorted(m for m in sys.modules if m.startswith('autolora_exp.methods')))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO / "src")})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_every_method_registers_its_schema_and_labels():
    specs = discover_methods()
    assert {"full_ft", "lora", "adalora", "adapter", "lora_grid", "autolora"} <= set(specs)
    for name, spec in specs.items():
        assert issubclass(spec.schema, MethodConfig) and spec.table_labels, name


# ---- the loop's view of a method --------------------------------------------------------------


class RecordingHooks(TrainingHooks):
    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def param_groups(self, model, weight_decay):
        self.calls.append(("param_groups", weight_decay))
        return super().param_groups(model, weight_decay)

    def on_train_begin(self, model, total_steps):
        self.calls.append(("on_train_begin", total_steps))

    def on_step_begin(self, model, step):
        self.calls.append(("on_step_begin", step))

    def training_loss(self, model, outputs):
        self.calls.append(("training_loss",))
        return outputs.loss

    def on_step_end(self, model, global_step, optimizer):
        assert isinstance(optimizer, torch.optim.Optimizer)
        assert any(p.grad is not None for g in optimizer.param_groups for p in g["params"])  # not yet zeroed
        self.calls.append(("on_step_end", global_step))


def test_the_loop_calls_the_hooks_in_the_contracts_order():
    from autolora_exp.train import fit

    hooks = RecordingHooks()
    fit(tiny_roberta(), hooks, tiny_loader(3), lambda m: {"validation": {"accuracy": 0.0}}, train_cfg(epochs=1),
        1e-3, "accuracy", torch.device("cpu"))
    assert hooks.calls == [("param_groups", 0.1), ("on_train_begin", 3),
                           *[c for s in range(3) for c in (("on_step_begin", s), ("training_loss",),
                                                           ("on_step_end", s + 1))]]


# ---- a method defined here runs through the pipeline ------------------------------------------


@dataclass
class SelfTrainedConfig(MethodConfig):
    """A rank-searching method whose search trains the final model (no retrain)."""

    _target_: str = "test_method_contract.SelfTrained"
    name: str = "self_trained"
    lr: float = accepts(1e-3, **LEARNING_RATE)


class SelfTrained(Method):
    """Trains the whole backbone on D_tr through ``ctx.fit`` (scored on D_val every epoch),
    reports rank 1 for every target layer, and keeps that model: ``after_search`` -> None."""

    name = "self_trained"
    search_plan = SearchPlan(val_fraction=0.25)

    def __init__(self, name: str = SelfTrainedConfig.name, lr: float = SelfTrainedConfig.lr) -> None:
        self.name, self.lr = name, lr

    def search_ranks(self, ctx: SearchContext) -> RankSearch:
        model = ctx.new_model()
        trained = ctx.fit(model, self, ctx.d_tr_loader, lambda m: {"d_val": ctx.evaluate_val(m)}, self.lr,
                          phase="self-trained search")
        ranks = {n: 1 for n, _ in model.named_modules() if n.endswith(tuple(ctx.target_modules))}
        return RankSearch(ranks=ranks, steps=trained.steps, passes_per_iteration=1,
                          record={"d_val_best": trained.best_value},
                          artifacts={"self_trained.json": {"best_epoch": trained.best_epoch}},
                          model=model, epochs=trained.epochs)

    def after_search(self, found: RankSearch) -> None:
        return None


@pytest.fixture
def registered_method():
    register_method(MethodSpec("self_trained", SelfTrainedConfig, table_labels={"self_trained": "Self-trained"}))
    # what a conf/method/self_trained.yaml would be: the registered schema as it stands
    ConfigStore.instance().store(group="method", name="self_trained_test", node=SelfTrainedConfig)


def test_a_method_defined_outside_the_package_runs_end_to_end_without_retrain(make_cfg, registered_method, tmp_path):
    from autolora_exp.tables.layout import method_label

    cfg = make_cfg("debug=default", "model=tiny-roberta", "method=self_trained_test")
    result = run(cfg)
    results.validate_result(result)
    out = Path(cfg.output_dir)
    assert result["method"] == "self_trained" and method_label("self_trained") == "Self-trained"
    assert set(result["phases"]) >= {"search", "eval"} and "train" not in result["phases"]  # no retrain
    metrics = result["metrics"]
    # per_epoch: the search's epochs (scored on D_val); best = final = the one evaluation of the eval splits
    assert [e["epoch"] for e in metrics["per_epoch"]] == [1, 2] and set(metrics["per_epoch"][0]["eval"]) == {"d_val"}
    assert metrics["final"] == metrics["best"] and set(metrics["final"]) == {"validation"}
    assert metrics["best_epoch"] is None and 0.0 <= metrics["test"]["accuracy"] <= 1.0
    assert result["search"]["steps"] == result["phases"]["search"]["steps"] == 4  # debug: max_steps 4
    assert result["search"]["d_val_best"] == max(e["eval"]["d_val"]["accuracy"] for e in metrics["per_epoch"])
    d_tr, d_val = result["search"]["split"]["d_tr"]["n"], result["search"]["split"]["d_val"]["n"]
    assert d_tr + d_val == result["data"]["train"]["n"] and d_val == 8  # the plan's val_fraction 0.25 of 32
    assert result["params"]["trainable"] == result["params"]["total"]
    ranks = json.loads((out / "rank_pattern.json").read_text())
    assert ranks == result["ranks"] == result["search"]["ranks"] and len(ranks) == 4  # 2 layers x query, value
    assert json.loads((out / "self_trained.json").read_text())["best_epoch"] in (1, 2)  # the method's artifact
    assert (out / "rank_heatmap.png").is_file()


@pytest.mark.parametrize("overrides, epochs", [
    (["task=glue/rte", "method=autolora"], 20),                      # the authors' glue_search.sh:13
    (["task=glue/cola", "method=autolora_authors"], 20),
    (["task=bionlp", "method=autolora_authors_bionlp"], 50),         # run_bionlp_search.py:66
    (["task=bbc_news", "method=autolora", "train.epochs=7"], 7),    # other tasks: the retrain's epochs
    (["task=glue/rte", "method=autolora", "debug=mini"], 2),         # a scale preset: train.search_epochs
    (["task=glue/rte", "method=autolora", "train.search_epochs=3"], 3),
    (["task=glue/rte", "method=autolora_fast"], 1),                  # a preset's own value wins
])
def test_autolora_search_epochs_per_task_live_with_the_method(overrides, epochs):
    from conftest import compose

    cfg = compose(overrides)
    assert cfg.method.search.epochs == epochs and "search_epochs" not in cfg.task
