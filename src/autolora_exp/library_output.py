"""What the libraries print during a run, cut to what a user needs to read.

A plain run (``python run.py debug=default``) used to print, besides its own lines:

- transformers' "Loading weights" tqdm bar (carriage returns in a SLURM file, for a load that
  takes a fraction of a second): turned off (:func:`quiet_libraries`);
- transformers' LOAD REPORT table listing the freshly initialised task head as MISSING keys, on
  every load of a pretrained backbone: replaced by one line, ``head initialised fresh:
  classifier.*``, from the loading info (:func:`load_quietly`); missing weights outside the
  declared head still get a warning, as they mean the checkpoint does not fit the model;
- ``FutureWarning: `is_gradient_checkpointing` is deprecated`` on every ``get_peft_model``: it
  comes from peft, not from this project (peft 0.21.2, ``peft/peft_model.py`` line 184,
  ``getattr(model, "is_gradient_checkpointing", True)`` in ``PeftModel.__init__``, reads the
  property that transformers 5 deprecated), so it cannot be fixed at its cause here; that one
  warning is filtered by its message.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Callable

log = logging.getLogger(__name__)

#: peft's read of transformers' deprecated property (module docstring)
PEFT_GRADIENT_CHECKPOINTING_WARNING = r"`is_gradient_checkpointing` is deprecated"


def quiet_libraries() -> None:
    """Switch off the library output listed in the module docstring (idempotent)."""
    import datasets
    import transformers

    transformers.utils.logging.disable_progress_bar()
    datasets.disable_progress_bars()  # per-split "Map" bars
    warnings.filterwarnings("ignore", message=PEFT_GRADIENT_CHECKPOINTING_WARNING, category=FutureWarning)


def module_patterns(keys: Iterable[str]) -> list[str]:
    """Parameter names grouped by module: ``classifier.weight``, ``classifier.bias`` -> ``classifier.*``."""
    return sorted({f"{key.rsplit('.', 1)[0]}.*" if "." in key else key for key in keys})


def _in_head(key: str, head_modules: Iterable[str]) -> bool:
    parts = key.split(".")
    return any(head in parts or key.startswith(head + ".") for head in head_modules)


class _DropLoadReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "LOAD REPORT" not in str(record.msg)


@contextmanager
def _transformers_load_report_off() -> Iterator[None]:
    """transformers logs its LOAD REPORT through the ``transformers.modeling_utils`` logger at
    WARNING; this drops that one record (a filter, not the logger's level: transformers 5 runs
    an extra tensor-parallel check, with its own warning, when that level is WARNING or above).
    Errors (size mismatches, conversion failures) still raise."""
    logger = logging.getLogger("transformers.modeling_utils")
    drop = _DropLoadReport()
    logger.addFilter(drop)
    try:
        yield
    finally:
        logger.removeFilter(drop)


def load_quietly(load: Callable[..., Any], head_modules: Iterable[str], what: str, **kwargs: Any) -> Any:
    """``load(**kwargs, output_loading_info=True)`` (a ``from_pretrained``) without transformers'
    LOAD REPORT; instead one line per kind of key: the fresh head (INFO), weights missing outside
    ``head_modules`` (WARNING: randomly initialised backbone weights), checkpoint weights the
    model does not use (INFO)."""
    with _transformers_load_report_off():
        model, info = load(**kwargs, output_loading_info=True)
    head_modules = list(head_modules)
    missing = sorted(info.get("missing_keys") or ())
    fresh_head = [k for k in missing if _in_head(k, head_modules)]
    fresh_other = [k for k in missing if not _in_head(k, head_modules)]
    if fresh_head:
        log.info("%s: head initialised fresh: %s", what, ", ".join(module_patterns(fresh_head)))
    if fresh_other:
        log.warning("%s: weights missing from the checkpoint, initialised at random: %s", what,
                    ", ".join(module_patterns(fresh_other)))
    unused = sorted(info.get("unexpected_keys") or ())
    if unused:
        log.info("%s: checkpoint weights not used by this model: %s", what, ", ".join(module_patterns(unused)))
    return model
