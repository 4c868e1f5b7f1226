"""The device a run uses (``device=auto | cpu | cuda | cuda:<n>``), chosen once and described.

``auto`` takes a GPU when torch sees one. In a sweep whose jobs all see several GPUs (Hydra's
basic launcher, or ``hydra/launcher=local``, whose submitit jobs see every GPU of the machine),
job ``j`` takes ``cuda:(j mod n_gpus)``: one job per GPU when ``hydra.sweeper.max_batch_size``
is the GPU count. Under SLURM each job sees only its own GPU(s) and takes ``cuda:0``.

``auto`` never falls back to CPU silently on a machine that has GPUs: when
``CUDA_VISIBLE_DEVICES`` is set but empty (what submitit does for a job given 0 GPUs) or NVIDIA
device files exist while torch sees none, it says so (a warning naming the cause) before
running on CPU.
"""

from __future__ import annotations

import glob
import logging
import os
from typing import Any

import torch

from autolora_exp.errors import UserError

log = logging.getLogger(__name__)


def move_to(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    """The batch on ``device``; asynchronous from pinned memory (``train.pin_memory``): no host sync."""
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def hidden_gpu_reason() -> str | None:
    """Why torch sees no GPU on a machine that seems to have some (None when nothing is hidden)."""
    if torch.cuda.is_available():
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return (f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU (a launcher gave this job 0 GPUs: with "
                "hydra/launcher=local set hydra.launcher.gpus_per_node, see conf/hydra/launcher/local.yaml)")
    if glob.glob("/dev/nvidia[0-9]*"):
        return ("this machine has NVIDIA devices (/dev/nvidia*) but torch sees none (a CPU-only torch build, "
                f"torch {torch.__version__}, or a driver problem)")
    return None


def resolve_device(spec: str, job_index: int | None = None) -> torch.device:
    """The torch device for ``device=<spec>``; ``job_index``: this job's number in a sweep."""
    if spec == "auto":
        if torch.cuda.is_available():
            n = torch.cuda.device_count()
            return torch.device(f"cuda:{job_index % n}" if job_index is not None and n > 1 else "cuda")
        reason = hidden_gpu_reason()
        if reason:
            log.warning("device=auto runs on CPU: %s", reason)
            print(f"warning: device=auto runs on CPU: {reason}", flush=True)
        return torch.device("cpu")
    if spec not in ("cpu", "cuda") and not spec.startswith("cuda:"):
        raise UserError(f"device '{spec}' is not one of auto, cpu, cuda, cuda:<n>")
    if spec.startswith("cuda") and not torch.cuda.is_available():
        reason = hidden_gpu_reason()
        raise UserError(f"device '{spec}' requested but no CUDA device is available"
                        + (f" ({reason})" if reason else "") + "; use device=cpu or auto")
    return torch.device(spec)


def sweep_job_index() -> int | None:
    """This job's number in a Hydra sweep (None outside a sweep)."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode
    except ImportError:
        return None
    if not HydraConfig.initialized() or HydraConfig.get().mode != RunMode.MULTIRUN:
        return None
    return int(HydraConfig.get().job.num)


def describe_device(device: torch.device, precision: str, attn_implementation: str | None,
                    tf32: bool = False) -> dict[str, Any]:
    """What result.json's ``env.device_info`` records and the run prints at start."""
    info: dict[str, Any] = {"device": str(device), "type": device.type, "precision": precision,
                            "attn_implementation": attn_implementation or "default (transformers: sdpa)"}
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(index)
        info.update(name=props.name, count=torch.cuda.device_count(), index=index,
                    capability=f"{props.major}.{props.minor}", memory_gib=round(props.total_memory / 2**30, 1),
                    tf32=tf32, cuda=torch.version.cuda,
                    cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    else:
        info.update(name=_cpu_name(), count=1, threads=torch.get_num_threads())
        reason = hidden_gpu_reason()
        if reason:
            info["hidden_gpus"] = reason
    return info


def device_line(info: dict[str, Any]) -> str:
    """One printed line: ``device: cuda:0 (NVIDIA H200, GPU 0 of 1 visible, TF32 on), precision bf16, attention sdpa``."""
    if info["type"] == "cuda":
        where = f"{info['name']}, GPU {info['index']} of {info['count']} visible, TF32 {'on' if info['tf32'] else 'off'}"
    else:
        where = f"{info['name']}, {info['threads']} threads"
    return (f"device: {info['device']} ({where}), precision {info['precision']}, "
            f"attention {info['attn_implementation']}")


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()
