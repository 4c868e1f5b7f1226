"""AutoLoRA (Zhang et al., NAACL 2024): per-layer LoRA ranks by meta-learned selection variables.

    layers = inject_selection_lora(model, ["query", "value"], k=8, gate="softmax", trainable_extra=["classifier"])
    result = search(model, d_tr_loader, d_val_loader, SearchConfig(...))   # bilevel search on beta
    kwargs = rank_pattern_config(result.ranks, lora_alpha=16)              # peft.LoraConfig(**kwargs)

Modules: gates (alpha = gate(beta), beta's init), layer (the selection LoRA layer), hypergrad
(dL_val/dbeta through the look-ahead), search (the bilevel loop), threshold (beta -> rank),
rank_pattern (ranks -> peft config for the retrain).
"""

from autolora_exp.methods.autolora.gates import GATES, apply_gate, default_selection_init
from autolora_exp.methods.autolora.hypergrad import HYPERGRAD_MODES, LOOKAHEADS
from autolora_exp.methods.autolora.layer import (
    SelectionLoRA,
    SelectionLoRALinear,
    alphas,
    inject_selection_lora,
    selection_layers,
    selection_logits,
    selection_parameters,
    weight_parameters,
)
from autolora_exp.methods.autolora.rank_pattern import (
    load_rank_pattern_json,
    rank_pattern_config,
    save_rank_pattern_json,
)
from autolora_exp.methods.autolora.search import BilevelSearch, SearchConfig, SearchResult, default_loss_fn, search
# the per-layer rule threshold.threshold is not re-exported: the name belongs to the module
from autolora_exp.methods.autolora.threshold import THRESHOLDS, threshold_ranks

__all__ = [
    "GATES",
    "HYPERGRAD_MODES",
    "LOOKAHEADS",
    "BilevelSearch",
    "SearchConfig",
    "SearchResult",
    "THRESHOLDS",
    "SelectionLoRA",
    "SelectionLoRALinear",
    "alphas",
    "apply_gate",
    "default_loss_fn",
    "default_selection_init",
    "inject_selection_lora",
    "load_rank_pattern_json",
    "rank_pattern_config",
    "save_rank_pattern_json",
    "search",
    "selection_layers",
    "selection_logits",
    "selection_parameters",
    "threshold_ranks",
    "weight_parameters",
]
