"""Structured-config schemas: every YAML under ``conf/`` is merged into these dataclasses.

Hydra validates names and types at composition time, so ``method.rr=4`` (a misspelt key) or
``train.epochs=three`` (a wrong type) fails before any model loads, with the config path
named. A method's options live in its own schema (``conf/method/*.yaml`` start from
``/schema/method/<kind>``), so each method only accepts its own keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import II, MISSING

from autolora_exp.methods.autolora.search import SearchConfig


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
    #: modules LoRA-style methods adapt (matched as a suffix of the full module name)
    target_modules: list[str] = field(default_factory=lambda: ["query", "value"])
    #: the task head, trained by every method
    head_modules: list[str] = field(default_factory=lambda: ["classifier"])
    #: ``None`` = the library default (sdpa); ``eager`` is needed for the exact hypergradient
    attn_implementation: Optional[str] = None


@dataclass
class DecodingConfig:
    """Decoding of the generation tasks (E2E, WebNLG): microsoft/LoRA's GPT-2 beam search."""

    num_beams: int = 10
    length_penalty: float = 0.8
    no_repeat_ngram_size: int = 4
    max_new_tokens: int = 64
    #: cut each hypothesis at its first blank line (the recipe stops at GPT-2's "\n\n" token);
    #: it is always cut at the end-of-text token
    stop_at_blank_line: bool = True
    #: inputs per ``generate`` call
    batch_size: int = 16
    #: inputs decoded on the per-epoch eval splits (``None`` = all); the test split is always
    #: decoded whole. Per-epoch decoding only selects the best epoch: a cap keeps it cheap.
    max_eval_inputs: Optional[int] = None


@dataclass
class TaskConfig:
    """A task: where its data comes from, how it is encoded, and how it is scored."""

    name: str = MISSING
    #: classification | regression | token_classification | generation
    kind: str = "classification"
    #: ``_target_`` of the loader returning a ``datasets.DatasetDict``
    loader: dict[str, Any] = MISSING
    #: local folder in the official format; ``None`` = the hub dataset
    data_dir: Optional[str] = None
    text_fields: list[str] = field(default_factory=lambda: ["text"])
    num_labels: int = 2
    #: ``_target_`` (``_partial_: true``) of ``f(predictions, references) -> dict``
    metric: dict[str, Any] = MISSING
    #: the paper's metric; selects the best epoch
    primary_metric: str = "accuracy"
    #: splits evaluated every epoch; the first one selects the best epoch
    eval_splits: list[str] = field(default_factory=lambda: ["validation"])
    #: a held-out split scored once at the end (``None`` where labels are not public)
    test_split: Optional[str] = None
    max_length: int = 128
    #: AutoLoRA's search epochs for this task (the authors: GLUE 20, BioNLP 50); default: train.epochs
    search_epochs: int = II("train.epochs")
    #: sub-tokens shared by consecutive windows of a long sentence (token classification)
    stride: int = 32
    #: seeded subsample sizes (``None`` = the whole split)
    max_train_samples: Optional[int] = None
    max_eval_samples: Optional[int] = None
    #: decoding settings (``kind: generation`` only)
    generation: DecodingConfig = field(default_factory=DecodingConfig)


@dataclass
class TrainConfig:
    """The shared training loop (every method, and AutoLoRA's retrain)."""

    epochs: int = 3
    batch_size: int = 16
    eval_batch_size: int = 64
    weight_decay: float = 0.1
    warmup_ratio: float = 0.06
    max_grad_norm: float = 1.0
    #: stop after this many optimiser steps (``None`` = the epochs); the debug preset uses it
    max_steps: Optional[int] = None
    #: fp32 | bf16 | fp16: autocast of every forward (training, search, evaluation, decoding);
    #: fp16 adds a dynamic loss scale (training loop only; see autolora_exp.precision)
    precision: str = "fp32"
    #: fp32 matmuls on TF32 units where the GPU has them (compute capability >= 8.0)
    tf32: bool = True
    #: DataLoader worker processes (0 = collate in the training process)
    num_workers: int = 0
    #: pinned host memory for the batches; ``None`` = on when the device is a GPU
    pin_memory: Optional[bool] = None
    #: batches of similar lengths (HF Trainer's group_by_length), seeded and resumable
    group_by_length: bool = False
    #: read the loss back (progress bar, NaN check) every N steps
    log_every: int = 50
    #: progress of training, search and decoding: a tqdm bar on a terminal, else (a SLURM file)
    #: one plain line every ``log_every_s`` seconds (:mod:`autolora_exp.progress`), showing the
    #: loss last read back (``log_every``)
    progress: bool = True
    log_every_s: float = 30.0
    #: save a checkpoint every N steps (search and retrain); 0 = off (see checkpoint_every_s)
    checkpoint_every: int = 0
    #: save a checkpoint once this many seconds have passed since the last one (checked at every
    #: step and epoch boundary); 0/null = off. A stop signal always saves, and each phase saves at
    #: its end (autolora_exp.checkpoint)
    checkpoint_every_s: Optional[float] = 1800.0
    #: keep the checkpoints once result.json is written (they are deleted by default)
    keep_checkpoints: bool = False


@dataclass
class LoggerConfig:
    """Weights & Biases. ``mode``: online | offline | disabled (``WANDB_MODE`` wins when set)."""

    mode: str = "offline"
    project: str = "autolora-exp"
    entity: Optional[str] = None
    #: W&B group; None = the experiment (``name``)
    group: Optional[str] = None
    tags: list[str] = field(default_factory=list)
    #: optimiser steps between two ``train/loss``/``train/lr`` points (the loss is their mean)
    log_every_steps: int = 50


# ---- methods -------------------------------------------------------------------------------


@dataclass
class MethodConfig:
    _target_: str = MISSING
    name: str = MISSING
    #: learning rate of the trained weights (AdamW)
    lr: float = 1e-4


@dataclass
class FullFTConfig(MethodConfig):
    _target_: str = "autolora_exp.methods.full_ft.FullFineTuning"
    name: str = "full_ft"
    lr: float = 2e-5


@dataclass
class LoRAConfig(MethodConfig):
    _target_: str = "autolora_exp.methods.lora.LoRA"
    name: str = "lora"
    lr: float = 5e-4
    r: int = 4
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    #: per-module ranks (exact module name -> rank); empty = ``r`` everywhere
    rank_pattern: dict[str, int] = field(default_factory=dict)


@dataclass
class AdaLoRAConfig(MethodConfig):
    """peft's AdaLoRA; defaults and their sources are in conf/method/adalora.yaml."""

    _target_: str = "autolora_exp.methods.adalora.AdaLoRA"
    name: str = "adalora"
    lr: float = 5e-4
    init_r: int = 6
    target_r: int = 4
    #: warm-up without pruning / final phase with the allocation frozen: a fraction of
    #: total_step when below 1, else a number of steps
    tinit: float = 0.1
    tfinal: float = 0.5
    deltaT: int = 10
    beta1: float = 0.85
    beta2: float = 0.85
    orth_reg_weight: float = 0.1
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    #: ``None`` = the optimiser steps the training loop plans (data size x epochs)
    total_step: Optional[int] = None


@dataclass
class AdapterConfig(MethodConfig):
    """Houlsby bottleneck adapters; defaults and their sources are in conf/method/adapter.yaml."""

    _target_: str = "autolora_exp.methods.adapter.HoulsbyAdapter"
    name: str = "adapter"
    lr: float = 3e-4
    bottleneck: int = 8
    #: gelu | relu | tanh | silu
    nonlinearity: str = "gelu"
    train_layer_norms: bool = True


@dataclass
class LoRAGridConfig(MethodConfig):
    """LoRA trained at each rank of ``ranks`` on D_tr, the best on D_val retrained (Table 5)."""

    _target_: str = "autolora_exp.methods.lora_grid.LoRAGrid"
    name: str = "lora_grid"
    lr: float = 5e-4
    ranks: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16])
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1


@dataclass
class AutoLoRAConfig(MethodConfig):
    """AutoLoRA: ``search`` holds the bilevel search (k, gate, hypergradient, optimisers); ``lr``,
    ``lora_alpha``, ``lora_dropout`` and ``scaling`` are the retrain's LoRA settings."""

    _target_: str = "autolora_exp.methods.autolora.method.AutoLoRA"
    name: str = "autolora"
    lr: float = 5e-4
    lora_alpha: float = 16.0
    lora_dropout: float = 0.1
    #: per_layer (peft: lora_alpha / r_l) | fixed (lora_alpha / k for every layer)
    scaling: str = "per_layer"
    search: SearchConfig = field(default_factory=SearchConfig)


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
    seed: int = 0
    #: auto | cpu | cuda
    device: str = "auto"
    output_dir: str = MISSING


def gpu_count() -> int:
    """GPUs torch sees here (``${autolora_gpus:}``: what hydra/launcher=local gives each job)."""
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def register() -> None:
    """Register the schemas with Hydra's ConfigStore, the run folder's ``${run_digest:}`` resolver
    and ``${autolora_gpus:}`` (idempotent): before any config is composed."""
    from omegaconf import OmegaConf

    from autolora_exp.run_folder import register_resolver

    register_resolver()
    OmegaConf.register_new_resolver("autolora_gpus", gpu_count, replace=True)
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)
    for name, node in METHOD_SCHEMAS.items():
        cs.store(group="schema/method", name=name, node=node)


#: method schema name -> dataclass; method modules add theirs here
METHOD_SCHEMAS: dict[str, type] = {"full_ft": FullFTConfig, "lora": LoRAConfig,
                                   "adalora": AdaLoRAConfig, "adapter": AdapterConfig, "autolora": AutoLoRAConfig, "lora_grid": LoRAGridConfig}
