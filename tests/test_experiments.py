"""The paper's experiments as sweeps: every job count, every job composes to the intended run,
run folders never collide, launchers compose (and the local one really runs a sweep)."""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import contextmanager
from functools import lru_cache

import pytest
from hydra import compose as hydra_compose
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

from autolora_exp.sweeps import sweep_jobs
from conftest import CONF_DIR, REPO, compose

SEEDS, MINI_SEEDS = 5, 2
N_GLUE, N_BASELINES, N_ABLATIONS = 8, 5, 8  # ablations: 4 rows x 2 presets (paper, authors)
N_TABLE1 = N_BASELINES + 2  # Table 1 (and its mini variant) runs SoRA and DyLoRA too (issue 18)

#: experiment -> the number of runs its sweep must launch (factors: tasks x methods x seeds)
EXPECTED_JOBS = {
    "table1_glue": N_GLUE * N_TABLE1 * SEEDS,                       # 280
    "figure2_roberta_large": 3 * N_BASELINES * SEEDS,              # MRPC, QQP, SST-2: 75
    "table2_nlg": 2 * N_BASELINES * SEEDS,                         # E2E, WebNLG: 50
    "table3_bionlp": 1 * N_BASELINES * SEEDS,                      # 25
    "table4_ablations": N_GLUE * N_ABLATIONS * SEEDS,              # 320
    "table5_cost": 3 * 3 * SEEDS,                                  # SST-2, MNLI, QQP x AdaLoRA, grid, AutoLoRA: 45
    "figure3_ranks": 3 * 1 * SEEDS,                                # QQP, MNLI, E2E x AutoLoRA: 15
    "mini/table1_glue": 6 * N_TABLE1 * MINI_SEEDS,                 # GLUE less MNLI, QQP: 84
    "mini/figure2_roberta_large": 2 * N_BASELINES * MINI_SEEDS,    # MRPC, SST-2: 20
    "mini/table2_nlg": 2 * N_BASELINES * MINI_SEEDS,               # 20
    "mini/table3_bionlp": 1 * N_BASELINES * MINI_SEEDS,            # 10
    "mini/table4_ablations": 3 * N_ABLATIONS * MINI_SEEDS,         # CoLA, MRPC, RTE: 48
    "mini/table5_cost": 1 * 3 * MINI_SEEDS,                        # SST-2: 6
    "mini/figure3_ranks": 2 * 1 * MINI_SEEDS,                      # MRPC, RTE: 4
    "mini/figure3_ranks_nlg": 1 * 1 * MINI_SEEDS,                  # E2E: 2
}
#: the backbone every run of an experiment must use (None: each task's own paper model)
FORCED_MODEL = {"figure2_roberta_large": "roberta-large", "table1_glue": "roberta-base",
                "table4_ablations": "roberta-base", "table3_bionlp": "roberta-base"}


def group_options(group: str) -> set[str]:
    """Options of a group, nested ones included (``experiment`` -> ``mini/table1_glue``)."""
    from hydra import initialize_config_dir

    compose([])  # registers the schemas
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()

        def walk(g: str, prefix: str = "") -> set[str]:
            found = {prefix + o for o in loader.get_group_options(g)}
            for sub in loader.list_groups(g):
                found |= walk(f"{g}/{sub}", f"{prefix}{sub}/")
            return found

        return walk(group)


EXPERIMENTS = sorted(group_options("experiment"))
TASKS = group_options("task")


def needs_absent_task(experiment: str) -> set[str]:
    """Tasks an experiment sweeps that have no config file (yet): its test is skipped, named."""
    files = [CONF_DIR / "experiment" / f"{name}.yaml" for name in (experiment, experiment.removeprefix("mini/"))]
    text = " ".join(f.read_text() for f in files if f.is_file())
    return {t for t in ("e2e", "webnlg", "bionlp") if t in text and t not in TASKS}


def jobs_of(experiment: str) -> list[list[str]]:
    absent = needs_absent_task(experiment)
    if absent:
        pytest.skip(f"{experiment} sweeps task(s) {sorted(absent)} whose conf/task file does not exist yet")
    return [list(job) for job in _jobs(experiment)]


@lru_cache(maxsize=None)
def _jobs(experiment: str) -> tuple[tuple[str, ...], ...]:
    return tuple(map(tuple, sweep_jobs([f"experiment={experiment}"], config_dir=CONF_DIR)))


def test_every_experiment_has_an_expected_job_count():
    # a new experiment file must state its size here; a removed one must leave
    assert set(EXPERIMENTS) == set(EXPECTED_JOBS)


@pytest.mark.parametrize("experiment", sorted(EXPECTED_JOBS))
def test_sweep_job_count(experiment):
    jobs = jobs_of(experiment)
    assert len(jobs) == EXPECTED_JOBS[experiment]
    assert len({tuple(sorted(j)) for j in jobs}) == len(jobs)  # no job twice


@pytest.mark.parametrize("experiment", ["table1_glue", "table4_ablations"])
def test_glue_sweeps_list_the_glue_tasks_in_their_order(experiment):
    """The YAML sweeps cannot import the one list of the GLUE tasks: they must equal it."""
    from autolora_exp.glue_tasks import GLUE_TASK_NAMES

    swept = OmegaConf.load(CONF_DIR / "experiment" / f"{experiment}.yaml").hydra.sweeper.params.task
    assert swept.split(",") == [f"glue/{name}" for name in GLUE_TASK_NAMES]


def test_glob_pitfall_is_caught():
    # what the explicit lists avoid: glob does not descend into task/glue/ and yields nothing
    assert sweep_jobs(["experiment=table1_glue", "task=glob(glue/*)"], config_dir=CONF_DIR) == []


def test_command_line_overrides_a_sweep_dimension():
    jobs = sweep_jobs(["experiment=table1_glue", "seed=0"], config_dir=CONF_DIR)
    assert len(jobs) == N_GLUE * N_TABLE1 and all("seed=0" in j for j in jobs)


def _value(job: list[str], key: str) -> str | None:
    return next((o.split("=", 1)[1] for o in job if o.split("=", 1)[0] == key), None)


@contextmanager
def hydra_session():
    """One Hydra initialisation for many compositions (initialising is the slow part)."""
    from hydra import initialize_config_dir

    compose([])  # registers the schemas
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield lambda overrides: hydra_compose(config_name="config", overrides=list(overrides), return_hydra_config=True)


def run_folder(cfg) -> str:
    """The job's run folder, from the sweep's own dir and subdir templates."""
    template = OmegaConf.to_container(cfg.hydra.sweep, resolve=False)["subdir"]
    assert "seed${seed}-${run_digest:}" in template  # seeds (and configs) never share a folder
    return f"{cfg.hydra.sweep.dir}/{cfg.hydra.sweep.subdir}"


def covering(jobs: list[list[str]]) -> list[list[str]]:
    """A few jobs in which every value of every sweep dimension occurs at least once."""
    chosen, seen = [], set()
    for job in jobs:
        if not set(job) <= seen:
            chosen.append(job)
            seen |= set(job)
    return chosen


CASES = [pytest.param(e, False, id=e) for e in sorted(EXPECTED_JOBS)] + [
    pytest.param(e, True, id=f"{e}-every-job", marks=pytest.mark.slow) for e in sorted(EXPECTED_JOBS)]


@pytest.mark.parametrize("experiment,every_job", CASES)
def test_jobs_compose_to_their_runs(experiment, every_job):
    """Jobs (one seed) compose; task, method, model, name and data are the intended ones and no two
    share a run folder. The fast case composes jobs covering every swept value; the slow one all."""
    jobs = [j for j in jobs_of(experiment) if _value(j, "seed") in ("0", None)]
    jobs = jobs if every_job else covering(jobs)
    base = experiment.removeprefix("mini/")
    dirs = set()
    with hydra_session() as compose_job:
        for job in jobs:
            cfg = compose_job(job)
            assert cfg.task.name == _value(job, "task") or _value(job, "task") is None
            if _value(job, "method"):
                assert cfg.method.name == _value(job, "method")
            if experiment.startswith("mini/"):
                assert cfg.name.startswith("mini/")
                assert cfg.model.name in ("minilm", "tiny-gpt2", "smollm2")  # runs here, offline
                assert cfg.train.epochs <= 3 and cfg.task.max_train_samples is not None
                assert cfg.task.data_dir is not None
            else:
                assert cfg.name == base
                assert cfg.task.max_train_samples is None  # the full data
                if base in FORCED_MODEL:
                    assert cfg.model.name == FORCED_MODEL[base]
            dirs.add(run_folder(cfg))
    assert len(dirs) == len(jobs), "two jobs of the sweep would write into one run folder"


def test_forced_model_wins_over_the_task_default():
    # GLUE task files select roberta-base; Figure 2's override must win for every swept task
    for task in ("glue/mrpc", "glue/qqp", "glue/sst2"):
        assert compose(["experiment=figure2_roberta_large", f"task={task}"]).model.name == "roberta-large"
    assert compose(["experiment=table1_glue", "task=glue/qqp"]).model.name == "roberta-base"
    assert compose(["experiment=mini/figure2_roberta_large", "task=glue/sst2"]).model.name == "minilm"


def test_mini_data_dirs_exist(shared_data, monkeypatch):
    monkeypatch.delenv("AUTOLORA_SHARED_DATA", raising=False)
    monkeypatch.chdir(REPO)  # paths.shared_data is relative to where run.py starts
    for experiment in EXPERIMENTS:
        if experiment.startswith("mini/") and not needs_absent_task(experiment):
            for job in sweep_jobs([f"experiment={experiment}", "seed=0"], config_dir=CONF_DIR)[:1]:
                data_dir = compose(job).task.data_dir
                assert os.path.isdir(data_dir), (experiment, data_dir)


def test_shared_data_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AUTOLORA_SHARED_DATA", str(tmp_path))
    cfg = compose(["experiment=mini/table1_glue"])
    assert cfg.task.data_dir == f"{tmp_path}/glue"
    monkeypatch.delenv("AUTOLORA_SHARED_DATA")
    assert compose(["experiment=mini/table1_glue"]).task.data_dir == "../shared/data/glue"


# ---- launchers ----------------------------------------------------------------------------


def hydra_cfg(*overrides: str):
    with hydra_session() as compose_job:
        return compose_job(overrides)


def test_slurm_launcher_composes_to_an_sbatch_script(tmp_path, monkeypatch):
    """The slurm launcher's settings reach submitit and come out as #SBATCH lines."""
    import submitit
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher

    monkeypatch.setenv("AUTOLORA_SLURM_PARTITION", "gpu-a100")
    # no SLURM on this machine: let submitit build its executor as if srun were installed
    monkeypatch.setattr(submitit.SlurmExecutor, "affinity", classmethod(lambda cls: 1))
    cfg = hydra_cfg("hydra/launcher=slurm", "experiment=table1_glue", f"hydra.sweep.dir={tmp_path}")
    launcher = instantiate(cfg.hydra.launcher)
    assert isinstance(launcher, SlurmLauncher)
    params = dict(launcher.params)
    assert params["gpus_per_node"] == 1 and params["partition"] == "gpu-a100" and params["timeout_min"] > 60
    # the mapping BaseSubmititLauncher.launch applies before update_parameters
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    folder = params.pop("submitit_folder")
    executor = submitit.AutoExecutor(folder=folder, cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout"))
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = executor._executor._make_submission_file_text("python run.py", "uid")
    assert "#SBATCH --partition=gpu-a100" in script
    assert "#SBATCH --gpus-per-node=1" in script
    assert f"#SBATCH --time={params['timeout_min']}" in script
    assert "#SBATCH --cpus-per-task=8" in script


def test_local_launcher_composes_and_gives_jobs_every_gpu(monkeypatch):
    import torch
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher

    cfg = hydra_cfg("hydra/launcher=local", "experiment=mini/table5_cost")
    assert isinstance(instantiate(cfg.hydra.launcher), LocalLauncher)
    assert cfg.hydra.launcher.gpus_per_node == (torch.cuda.device_count() if torch.cuda.is_available() else 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    cfg = hydra_cfg("hydra/launcher=local", "experiment=mini/table5_cost")
    assert cfg.hydra.launcher.gpus_per_node == 4  # a GPU workstation: the jobs see its GPUs


@pytest.mark.slow
def test_local_launcher_runs_a_two_job_sweep(tmp_path, shared_data):
    """submitit's local launcher: two jobs, each in its own process, each writes its result."""
    env = {**os.environ, "AUTOLORA_SHARED_DATA": str(shared_data), "WANDB_MODE": "disabled"}
    proc = subprocess.run(
        [sys.executable, "run.py", "-m", "experiment=mini/table1_glue", "debug=default", "model=tiny-roberta",
         "task=glue/rte", "method=lora", "seed=0,1", "hydra/launcher=local", f"hydra.sweep.dir={tmp_path}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = sorted(tmp_path.rglob("result.json"))
    assert [p.parent.name.split("-")[0] for p in results] == ["seed0", "seed1"]
    assert len(list((tmp_path / ".submitit").rglob("*_result.pkl"))) == 2  # ran through submitit
