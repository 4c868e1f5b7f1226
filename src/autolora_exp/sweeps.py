"""The jobs a multirun launches, computed the way Hydra's basic sweeper computes them.

``sweep_jobs(["experiment=table1_glue"])`` composes the config, reads its
``hydra.sweeper.params``, appends the given overrides (which win over the params for the same
key) and expands them with Hydra's own override parser and ``BasicSweeper.split_arguments``:
exactly the list ``python run.py -m experiment=table1_glue`` would launch. A sweep whose lists
are wrong shows here before it reaches a cluster (e.g. ``task=glob(glue/*)``, which does not
descend into nested groups and launches nothing).

    python -m autolora_exp.sweeps experiment=table1_glue      # count and list the jobs

Also here: how a sweep reports its failed jobs. A job that fails writes its failed.json,
prints its error and returns a :class:`FailedJob`, so the sweep goes on with the others; once
the sweep is over, run.py lists the failed jobs and exits 1 (:func:`report_failed_jobs`).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from autolora_exp.errors import UserError


def sweep_jobs(overrides: list[str], config_dir: str | Path = "conf", config_name: str = "config") -> list[list[str]]:
    """The override list of every job of ``python run.py -m <overrides>``, in launch order."""
    from hydra import compose, initialize_config_dir
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from autolora_exp.schema import register

    config_dir = Path(config_dir).resolve()
    if not (config_dir / f"{config_name}.yaml").is_file():
        raise UserError(f"no {config_name}.yaml in {str(config_dir)!r}; pass the app's conf/ folder")
    register()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        base = [o for o in overrides if not _is_sweep(o)]  # compose once without the sweep values
        cfg = compose(config_name=config_name, overrides=base, return_hydra_config=True)
        params = [f"{key}={value}" for key, value in (cfg.hydra.sweeper.params or {}).items()]
        loader = GlobalHydra.instance().config_loader()
        parsed = OverridesParser.create(config_loader=loader).parse_overrides(params + list(overrides))
        return BasicSweeper.split_arguments(parsed, max_batch_size=None)[0]


def _is_sweep(override: str) -> bool:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_override(override).is_sweep_override()


def in_multirun() -> bool:
    """Whether this process runs a job of a Hydra sweep (``-m``; under submitit, the job's own process)."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


#: output folder -> error of every job of this process's sweep that failed (see FailedJob)
FAILED_JOBS: dict[str, str] = {}


@dataclass(frozen=True)
class FailedJob:
    """The return value of a sweep job that failed; it records itself in :data:`FAILED_JOBS`
    wherever it is created or unpickled. Hydra's basic launcher runs the jobs in the launching
    process (created there); submitit's launchers unpickle each job's return value in the
    launching process (``__reduce__`` re-creates it there)."""

    output_dir: str
    error: str

    def __post_init__(self) -> None:
        FAILED_JOBS[self.output_dir] = self.error

    def __reduce__(self) -> tuple[type, tuple[str, str]]:
        return (FailedJob, (self.output_dir, self.error))


def report_failed_jobs() -> int:
    """After a sweep: list its failed jobs on stderr; the exit status (1 if any failed, else 0)."""
    if not FAILED_JOBS:
        return 0
    lines = [f"sweep: {len(FAILED_JOBS)} job(s) failed (each folder holds its failed.json; `make tables` lists them):"]
    lines += [f"  {folder}: {error}" for folder, error in sorted(FAILED_JOBS.items())]
    print("\n".join(lines), file=sys.stderr, flush=True)
    return 1


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    try:
        jobs = sweep_jobs(args)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for i, job in enumerate(jobs):
        print(f"#{i}: {' '.join(job)}")
    print(f"{len(jobs)} job(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
