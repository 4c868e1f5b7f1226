"""peft's rule for which modules a target names: the one place this project writes it.

A module named ``name`` (as ``model.named_modules()`` gives it) is matched by a list of targets
when, for some target ``t``::

    name == t  or  name.endswith("." + t)

i.e. a target is a full module name or a suffix of one on a '.' boundary. This is peft's list
form of ``target_modules`` (peft 0.21.2 as pinned, ``tuners/tuners_utils.py`` lines 2372-2376,
``check_target_module_exists``: ``key in config.target_modules`` or ``any(key.endswith(f".{target_key}")
...)``), which the project's own injections (AutoLoRA's search layers, the Houlsby adapters'
head, GPT-2's fused q/k/v split and its Conv1D -> Linear conversion) and its config checks
follow, so that a target names the same modules under every method.
"""

from __future__ import annotations

from collections.abc import Iterable


def matches(name: str, targets: Iterable[str]) -> bool:
    """True when ``name`` equals a target or ends with ``"." + target``."""
    return any(name == t or name.endswith("." + t) for t in targets)
