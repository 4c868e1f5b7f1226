"""Shared fixtures: offline environment, config composition, the shared data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Never touch the network: the hub is unreachable here and tests must not depend on it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ["WANDB_MODE"] = "disabled"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
CONF_DIR = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"../shared/data not found at {SHARED_DATA}")
    return SHARED_DATA


def compose(overrides: list[str] | None = None, output_dir: str | os.PathLike | None = None):
    """Compose the real app config (as run.py would) with Hydra's compose API."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from autolora_exp.schema import register

    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=list(overrides or []))
    with open_dict(cfg):
        cfg.output_dir = str(output_dir or "unused")
    return cfg


@pytest.fixture
def make_cfg(tmp_path):
    def _make(*overrides: str):
        return compose(list(overrides), tmp_path / "run")

    return _make
