"""scripts/gpu_check.sh --quick on CPU, in a Python that has only the GPU machine's packages
(tests/gpu_sim.py) plus the wheels scripts/gpu_wheels.sh downloads: the check the lead runs once
on a GPU machine without network must not fail on a missing package or file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpu_sim import make_python

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_gpu_check_quick_runs_with_only_the_gpu_machines_packages(tmp_path, shared_data):
    version = f"{sys.version_info.major}.{sys.version_info.minor}"  # wheels for this Python (the GPU: 3.12)
    wheels, data, out = tmp_path / "whl", tmp_path / "gpu_data", tmp_path / "out"
    env = {**os.environ, "PYTHON_VERSION": version, "WHEEL_DIR": str(wheels), "GPU_DATA_DIR": str(data),
           "PYTHON": sys.executable, "AUTOLORA_SHARED_DATA": str(shared_data)}
    prep = subprocess.run(["bash", "scripts/gpu_wheels.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert prep.returncode == 0, prep.stderr[-2000:]
    assert sum(f.stat().st_size for f in wheels.iterdir()) < 40 * 2**20
    bin_dir = make_python(tmp_path / "gpu_python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PATH=f"{bin_dir}:/usr/bin:/bin", GPU_CHECK_SITE=str(tmp_path / "site"), GPU_CHECK_WHEELS=str(wheels),
               GPU_DATA_DIR=str(data), OUT=str(out), OMP_NUM_THREADS="1")
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--device", "cpu", "--quick"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["step"]["bf16_speedup"]) == {"lora", "darts", "first_order"}
    for precision in ("bf16", "fp32"):
        run = summary["runs"][precision]
        assert run["device_info"]["precision"] == precision and run["search_steps"] > 0 and run["ranks"]
    assert summary["bf16_vs_fp32_train_loss_rel_diff"] < 0.05
    assert "skipped" in summary["sync"]  # the sync count needs a GPU
