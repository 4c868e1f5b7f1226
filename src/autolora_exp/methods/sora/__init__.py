"""SoRA (Ding et al., EMNLP 2023): gated LoRA whose gates a proximal L1 step drives to zero.

``layer``: the gated layer, its injection, ranks and pruning; ``proximal``: the thresholding;
``method``: the method (training hooks) and its schema, registered on import.
"""

from autolora_exp.methods.sora.method import SoRA, SoRAConfig

__all__ = ["SoRA", "SoRAConfig"]
