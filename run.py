"""Entry point: ``python run.py [task=...] [model=...] [method=...] [key=value ...]``.

See README.md. Errors that are the user's to fix print as one line and exit with status 2. A stop
signal (SIGTERM, SIGUSR2, Ctrl-C) prints one line and exits 128 + signal after a checkpoint
(under submitit the job is requeued); a second Ctrl-C aborts at once with status 130.
"""

from __future__ import annotations

import logging
import signal
import sys
import traceback

import hydra
from omegaconf import DictConfig

from autolora_exp.errors import UserError
from autolora_exp.hub import configure_offline_mode
from autolora_exp.schema import register
from autolora_exp.sweeps import FailedJob, in_multirun, report_failed_jobs

configure_offline_mode()  # before transformers/datasets are imported: they read it at import
register()
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


if __name__ == "__main__":
    main()
    sys.exit(report_failed_jobs())  # after a sweep: 1 when any job failed (a single run exits in main)
