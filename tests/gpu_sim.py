"""A Python that has only what the GPU machine of scripts/gpu_check.sh has.

The GPU machine has torch, transformers, peft, accelerate, numpy, scipy, scikit-learn, pyarrow,
pandas, tqdm, matplotlib, xxhash, fsspec, huggingface-hub, tokenizers, requests (and what they
depend on, and pip), and nothing else: no hydra-core, omegaconf, datasets, wandb, the packaged
assets, ... :func:`make_python` builds a folder of links to exactly those distributions of this
venv and a ``python3`` that sees only that folder (``-S``: no site-packages) after PYTHONPATH.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

GPU_MACHINE = ("torch transformers peft accelerate numpy scipy scikit-learn pyarrow pandas tqdm matplotlib "
               "xxhash fsspec huggingface-hub tokenizers requests pip").split()


def _requires(dist: str) -> list[str]:
    out = []
    for req in metadata.requires(dist) or []:
        if "extra ==" in req:
            continue
        out.append(re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0])
    return out


def closure(names: list[str]) -> dict[str, metadata.Distribution]:
    """The installed distributions ``names`` need, themselves included (not installed: skipped)."""
    seen: dict[str, metadata.Distribution] = {}
    stack = list(names)
    while stack:
        name = stack.pop().lower().replace("_", "-")
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        stack += _requires(name)
    return seen


def make_python(root: Path) -> Path:
    """``root/bin/python3`` seeing only the GPU machine's packages (in ``root/site-packages``); returns bin/."""
    # named site-packages as on a real machine: dill pickles classes of modules outside such a
    # folder (or sys.prefix) by value, which fails for pyarrow's types
    site, bin_dir = root / "site-packages", root / "bin"
    site.mkdir(parents=True)
    bin_dir.mkdir()
    for dist in closure(list(GPU_MACHINE)).values():
        base = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or [] if not str(f).startswith("..")}:
            if not (site / top).exists() and (base / top).exists():
                (site / top).symlink_to(base / top)
    python = bin_dir / "python3"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}" exec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    return bin_dir
