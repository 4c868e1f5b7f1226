"""Structured-config schemas: every YAML under ``conf/`` is merged into these dataclasses.

Hydra validates names and types at composition time, so ``method.rr=4`` (a misspelt key) or
``train.epochs=three`` (a wrong type) fails before any model loads, with the config path
named. A method's options live in its own schema, defined and registered beside the method
(:func:`autolora_exp.contract.register_method`); :func:`register` stores each one under
``schema/method/<schema_name>`` (``conf/method/*.yaml`` start from it), so each method only
accepts its own keys. This module imports no method.

Values are checked too: each field declares what it accepts (``accepts(default, ge=1)``, see
:mod:`autolora_exp.validation`), and ``check_relations`` holds the rules that relate fields.
The pipeline checks the composed config before anything loads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from autolora_exp.contract import COUNT, discover_methods
from autolora_exp.errors import UserError
from autolora_exp.precision import PRECISIONS
from autolora_exp.task_types import KINDS
from autolora_exp.tracking import MODES as LOGGER_MODES
from autolora_exp.validation import accepts


@dataclass
class ModelConfig:
    """A backbone: hub id / local folder / packaged model (``packaged:<module>``), or random from config."""

    name: str = MISSING
    #: hub id, local folder in Hugging Face format, or ``packaged:<python module>``
    pretrained: Optional[str] = None
    #: build with random weights from this config (``model_type`` + fields); tests use it
    from_config: Optional[dict[str, Any]] = None
    #: tokenizer source when it differs from ``pretrained`` (random models borrow one)
    tokenizer: Optional[str] = None
    #: modules LoRA-style methods adapt (matched as a suffix of the full module name), or the
    #: name of one of ``target_presets`` (``all_linear``); models.target_modules resolves it
    target_modules: Any = field(default_factory=lambda: ["query", "value"])
    #: named target lists of this model: ``all_linear`` = every linear layer of the blocks
    target_presets: dict[str, list[str]] = field(default_factory=dict)
    #: the task head, trained by every method
    head_modules: list[str] = field(default_factory=lambda: ["classifier"])
    #: what a BERT-style sequence head pools: ``cls`` (the model's own pooler on [CLS]) or
    #: ``mean`` (the pooler's dense + tanh on the masked mean of the tokens; models.MeanPooler)
    pooling: str = "cls"
    #: ``None`` = the library default (sdpa); ``eager`` is needed for the exact hypergradient
    attn_implementation: Optional[str] = None

    @staticmethod
    def check_relations(model: Any, prefix: str = "model.") -> None:
        from autolora_exp.models import target_modules

        targets = target_modules(model)  # a preset name is one of the model's presets
        if not targets or not all(targets):
            shown = OmegaConf.to_container(model.target_modules) if OmegaConf.is_config(model.target_modules) \
                else model.target_modules
            raise UserError(f"{prefix}target_modules={shown} is not accepted; use a non-empty list of module "
                            f"names or a preset of the model ({', '.join(model.target_presets or {})})")


@dataclass
class DecodingConfig:
    """Decoding of the generation tasks (E2E, WebNLG): microsoft/LoRA's GPT-2 beam search."""

    num_beams: int = accepts(10, **COUNT)
    length_penalty: float = accepts(0.8)
    #: 0 = no n-gram blocking
    no_repeat_ngram_size: int = accepts(4, ge=0)
    max_new_tokens: int = accepts(64, **COUNT)
    #: cut each hypothesis at its first blank line (the recipe stops at GPT-2's "\n\n" token);
    #: it is always cut at the end-of-text token
    stop_at_blank_line: bool = True
    #: inputs per ``generate`` call
    batch_size: int = accepts(16, **COUNT)
    #: inputs decoded on the per-epoch eval splits (``None`` = all); the test split is always
    #: decoded whole. Per-epoch decoding only selects the best epoch: a cap keeps it cheap.
    max_eval_inputs: Optional[int] = accepts(None, **COUNT)


@dataclass
class TaskConfig:
    """A task: where its data comes from, how it is encoded, and how it is scored."""

    name: str = MISSING
    #: classification | regression | token_classification | generation
    kind: str = accepts("classification", choices=tuple(KINDS))
    #: ``_target_`` of the loader returning a ``datasets.DatasetDict``
    loader: dict[str, Any] = MISSING
    #: local folder in the official format; ``None`` = the hub dataset
    data_dir: Optional[str] = None
    #: one text, or a text pair (classification); the words column (token classification)
    text_fields: list[str] = accepts(factory=lambda: ["text"], min_items=1, max_items=2)
    #: classes (1 for regression); checked against the data's label set before training
    num_labels: int = accepts(2, **COUNT)
    #: ``_target_`` (``_partial_: true``) of ``f(predictions, references) -> dict``
    metric: dict[str, Any] = MISSING
    #: the paper's metric; selects the best epoch
    primary_metric: str = "accuracy"
    #: splits evaluated every epoch; the first one selects the best epoch
    eval_splits: list[str] = accepts(factory=lambda: ["validation"], min_items=1, distinct=True)
    #: a held-out split scored once at the end (``None`` where labels are not public)
    test_split: Optional[str] = None
    #: tokens per sequence, special tokens included (each kind checks it against its tokenizer)
    max_length: int = accepts(128, ge=2)
    #: sub-tokens shared by consecutive windows of a long sentence (token classification)
    stride: int = accepts(32, ge=0)
    #: seeded subsample sizes (``None`` = the whole split): training rows, and evaluation rows
    #: or, for generation, evaluation inputs (each kept with all its references)
    max_train_samples: Optional[int] = accepts(None, **COUNT)
    max_eval_samples: Optional[int] = accepts(None, **COUNT)
    #: decoding settings (``kind: generation`` only)
    generation: DecodingConfig = field(default_factory=DecodingConfig)

    @staticmethod
    def check_relations(task: Any, prefix: str = "task.") -> None:
        if task.kind == "regression" and task.num_labels != 1:
            raise UserError(f"{prefix}num_labels={task.num_labels} is not accepted with {prefix}kind=regression; "
                            "use 1 (one predicted score)")
        # the best epoch is chosen on eval_splits: never on the training rows, never on the test split
        if "train" in task.eval_splits or task.test_split == "train":
            raise UserError(f"{prefix}eval_splits={list(task.eval_splits)}, {prefix}test_split={task.test_split!r}: "
                            "the training split cannot be evaluated as dev or test data")
        if task.test_split is not None and task.test_split in task.eval_splits:
            raise UserError(f"{prefix}test_split={task.test_split!r} is also in {prefix}eval_splits, which choose the "
                            "best epoch: the test score would be selected on the test set; drop it from one of them")
        if task.kind in ("classification", "token_classification") and task.num_labels < 2:
            raise UserError(f"{prefix}num_labels={task.num_labels} is not accepted with {prefix}kind={task.kind}; "
                            "use the number of classes (>= 2), or kind=regression for one score")


@dataclass
class TrainConfig:
    """The shared training loop (every method, and AutoLoRA's retrain)."""

    epochs: int = accepts(3, **COUNT)
    batch_size: int = accepts(16, **COUNT)
    eval_batch_size: int = accepts(64, **COUNT)
    weight_decay: float = accepts(0.1, ge=0)
    #: warm-up steps = ceil(warmup_ratio x planned steps)
    warmup_ratio: float = accepts(0.06, ge=0, le=1)
    #: 0 = no clipping
    max_grad_norm: float = accepts(1.0, ge=0)
    #: stop after this many optimiser steps (``None`` = the epochs); the debug preset uses it
    max_steps: Optional[int] = accepts(None, **COUNT)
    #: a scale preset's length of every rank search that reads it (AutoLoRA's
    #: ``method.search.epochs``): conf/debug/*.yaml search as many epochs as they retrain.
    #: ``None`` = the method's own per-task length (AutoLoRA: the authors' GLUE 20, BioNLP 50)
    search_epochs: Optional[int] = accepts(None, **COUNT)
    #: fp32 | bf16 | fp16: autocast of every forward (training, search, evaluation, decoding);
    #: fp16 adds a dynamic loss scale (training loop only; see autolora_exp.precision)
    precision: str = accepts("fp32", choices=PRECISIONS)
    #: fp32 matmuls on TF32 units where the GPU has them (compute capability >= 8.0)
    tf32: bool = True
    #: DataLoader worker processes (0 = collate in the training process)
    num_workers: int = accepts(0, ge=0)
    #: pinned host memory for the batches; ``None`` = on when the device is a GPU
    pin_memory: Optional[bool] = None
    #: batches of similar lengths (HF Trainer's group_by_length), seeded and resumable
    group_by_length: bool = False
    #: read the loss back to the host every N steps: the progress bar, the NaN check and W&B's
    #: ``train/loss``/``train/lr`` points (the loss is the mean over the N steps); one interval, so
    #: W&B adds no host synchronisation of its own
    log_every: int = accepts(50, **COUNT)
    #: progress of training, search and decoding: a tqdm bar on a terminal, else (a SLURM file)
    #: one plain line every ``log_every_s`` seconds (:mod:`autolora_exp.progress`), showing the
    #: loss last read back (``log_every``)
    progress: bool = True
    log_every_s: float = accepts(30.0, ge=0)
    #: save a checkpoint every N steps (search and retrain); 0 = off (see checkpoint_every_s)
    checkpoint_every: int = accepts(0, ge=0)
    #: save a checkpoint once this many seconds have passed since the last one (checked at every
    #: step and epoch boundary); 0/null = off. A stop signal always saves, and each phase saves at
    #: its end (autolora_exp.checkpoint)
    checkpoint_every_s: Optional[float] = accepts(1800.0, ge=0)
    #: keep the checkpoints once result.json is written (they are deleted by default)
    keep_checkpoints: bool = False


@dataclass
class LoggerConfig:
    """Weights & Biases. ``mode``: online | offline | disabled (``WANDB_MODE`` wins when set)."""

    mode: str = accepts("offline", choices=LOGGER_MODES)
    project: str = "autolora-exp"
    entity: Optional[str] = None
    #: W&B group; None = the experiment (``name``)
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)


@dataclass
class PathsConfig:
    """Folders the configs refer to."""

    #: local copies of the paper's benchmark data in their official layouts (``<root>/glue``,
    #: ``<root>/e2e``, ``<root>/jnlpba``, ...): the mini experiments read their data here.
    #: ``AUTOLORA_SHARED_DATA`` overrides it; a relative path is relative to the directory
    #: run.py is launched from (the repository root: ``../shared/data`` lies beside it).
    shared_data: str = "${oc.env:AUTOLORA_SHARED_DATA,../shared/data}"


@dataclass
class Config:
    """The whole run."""

    task: TaskConfig = MISSING
    model: ModelConfig = MISSING
    method: Any = MISSING
    train: TrainConfig = field(default_factory=TrainConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    paths: PathsConfig = field(default_factory=PathsConfig)
    #: experiment name: groups runs in W&B and in ``outputs/runs``
    name: str = "default"
    #: numpy's seeds are 32-bit
    seed: int = accepts(0, ge=0, le=2**32 - 1)
    #: auto | cpu | cuda
    device: str = "auto"
    output_dir: str = MISSING


def gpu_count() -> int:
    """GPUs torch sees here (``${autolora_gpus:}``: what hydra/launcher=local gives each job)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def register() -> None:
    """Register the schemas with Hydra's ConfigStore (the methods' from the method registry), the
    run folder's ``${run_digest:}`` resolver and ``${autolora_gpus:}`` (idempotent): before any
    config is composed."""
    from omegaconf import OmegaConf

    from autolora_exp.run_folder import register_resolver

    register_resolver()
    OmegaConf.register_new_resolver("autolora_gpus", gpu_count, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name, spec in discover_methods().items():  # each method registers its schema beside it
        cs.store(group="schema/method", name=name, node=spec.schema)
