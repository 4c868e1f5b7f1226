"""Entry point: ``python run.py [task=...] [model=...] [method=...] [key=value ...]``.

See README.md. Errors that are the user's to fix print as one line and exit with status 2. A stop
signal (SIGTERM, SIGUSR2, Ctrl-C) prints one line and exits 128 + signal after a checkpoint
(under submitit the job is requeued); a second Ctrl-C aborts at once with status 130.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import traceback

import hydra
from omegaconf import DictConfig

from autolora_exp.errors import UserError
from autolora_exp.hub_offline import configure_offline_mode
from autolora_exp.schema import register
from autolora_exp.sweeps import FailedJob, in_multirun, report_failed_jobs

configure_offline_mode()  # before transformers/datasets are imported: they read it at import
register()
# Hydra then raises composition errors (misspelt key, wrong type, unknown option) out of main()
# instead of printing them over several lines and exiting 1: composition_error() makes them one line, exit 2
os.environ["HYDRA_FULL_ERROR"] = "1"
log = logging.getLogger("autolora_exp")


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> float | FailedJob | None:
    from autolora_exp.pipeline import run
    from autolora_exp.preemption import Preempted, StopSignal
    from autolora_exp.train import NonFiniteLossError

    with StopSignal() as stop:
        try:
            result = run(cfg, stop)
        except Preempted as err:
            print(f"stopped: {err}", file=sys.stderr, flush=True)
            result = None
        except KeyboardInterrupt:  # a second Ctrl-C: the handler raises it wherever the run was
            print("aborted: interrupted again while stopping; the last checkpoint written is kept, run the "
                  "same command again to resume from it", file=sys.stderr, flush=True)
            sys.exit(128 + signal.SIGINT)
        except (UserError, NonFiniteLossError) as err:
            print(f"error: {err}", file=sys.stderr, flush=True)
            if in_multirun():  # failed.json is written; the sweep goes on with its other jobs
                return FailedJob(str(cfg.output_dir), str(err))
            sys.exit(2 if isinstance(err, UserError) else 1)
        except Exception as err:  # a bug: its traceback, and in a sweep the other jobs still run
            if not in_multirun():
                raise
            traceback.print_exc()
            return FailedJob(str(cfg.output_dir), f"{type(err).__name__}: {err}")
    if result is None:
        stop.finish()  # hands the signal on (submitit requeues the job) or exits 128 + signal
        return None
    first = next(iter(result["metrics"]["final"].values()))
    return first.get(result["metrics"]["primary"])


def composition_error(err: Exception) -> str | None:
    """Hydra's error for a command line that composes no valid config, as one line (None: not one).

    ``Error merging override train.epochs=three: Value 'three' of type 'str' could not be converted
    to Integer (full_key: train.epochs)``"""
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if not isinstance(err, (ConfigCompositionException, MissingConfigException, OverrideParseException)):
        return None  # anything else (a bug inside the run) keeps its traceback
    parts = [str(err).strip()]
    if isinstance(err.__cause__, OmegaConfBaseException):
        parts.append(str(err.__cause__).strip())
    lines = [line.strip() for part in parts for line in part.splitlines() if line.strip()]
    if "Config search path:" in lines:  # an unknown group option: its options list is enough
        lines = lines[:lines.index("Config search path:")]
    keys = [line for line in lines if line.startswith("full_key:")]
    text = [line for line in lines if not line.startswith(("full_key:", "reference_type", "object_type"))]
    # "Available options in 'method':" + one option per line -> "...: adalora, adapter, ..."
    heads = [i for i, line in enumerate(text) if line.endswith(":")]
    if heads:
        text = text[:heads[0]] + [text[heads[0]] + " " + ", ".join(text[heads[0] + 1:])]
    return " ".join(dict.fromkeys(line.rstrip(".") + ("" if line.endswith(":") else ".") for line in text)).rstrip(
        ".") + (f" ({keys[0]})" if keys else "")


if __name__ == "__main__":
    try:
        main()
    except Exception as err:  # noqa: BLE001 - a bad command line is the user's to fix: one line, exit 2
        message = composition_error(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr, flush=True)
        sys.exit(2)
    sys.exit(report_failed_jobs())  # after a sweep: 1 when any job failed (a single run exits in main)
