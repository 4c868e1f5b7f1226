"""DyLoRA (Valipour et al., EACL 2023): nested-dropout LoRA, the rank chosen on D_val, no retrain.

``layer``: the DyLoRA linear layer (rank-b forward, frozen mode, truncation); ``method``: the
method (rank draws, the D_val choice); ``config``: its schema. Registered here, on import.
"""

from autolora_exp.contract import MethodSpec, register_method
from autolora_exp.methods.dylora.config import DyLoRAConfig
from autolora_exp.methods.dylora.method import DyLoRA

SPEC = register_method(MethodSpec("dylora", DyLoRAConfig, {"dylora": "DyLoRA"}))

__all__ = ["DyLoRA", "DyLoRAConfig", "SPEC"]
