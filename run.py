"""Entry point: ``python run.py [task=...] [model=...] [method=...] [key=value ...]``.

See README.md. Errors that are the user's to fix print as one line and exit with status 2.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from autolora_exp.errors import UserError
from autolora_exp.hub import configure_offline_mode
from autolora_exp.schema import register

configure_offline_mode()  # before transformers/datasets are imported: they read it at import
register()
log = logging.getLogger("autolora_exp")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    from autolora_exp.pipeline import run

    try:
        result = run(cfg)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    first = next(iter(result["metrics"]["final"].values()))
    return first.get(result["metrics"]["primary"])


if __name__ == "__main__":
    main()
