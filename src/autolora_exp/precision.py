"""Numeric precision of a run (``train.precision``): one place for autocast, loss scaling and TF32.

    fp32   no autocast; full-precision forward and backward
    bf16   ``torch.autocast(dtype=bfloat16)`` around every forward (training, search, evaluation,
           decoding); weights, gradients and optimiser states stay fp32. No loss scaling: bf16
           has fp32's exponent range. Works on CPU too (what the tests use).
    fp16   ``torch.autocast(dtype=float16)`` plus a dynamic loss scale (``torch.amp.GradScaler``)
           in the training loop: gradients are computed on loss * S, unscaled before clipping,
           and a step whose gradients overflow is skipped while S halves. The AutoLoRA search
           computes its gradients by hand (``torch.autograd.grad`` in several passes), which a
           GradScaler does not cover: it refuses fp16 (:func:`check_search_precision`).

TF32 (``train.tf32``, default on): fp32 matmuls and convolutions on GPUs with TF32 units
(compute capability >= 8.0: A100, H100, H200, ...) use TF32 (10-bit mantissa inputs, fp32
accumulation), as HF Trainer's ``tf32`` flag. It changes nothing on CPU or on older GPUs.

Passes kept in fp32 whatever the precision (:func:`full_precision`): the finite-difference
passes of the ``darts`` hypergradient (see :mod:`autolora_exp.methods.autolora.hypergrad`).
There the weights are perturbed by eps * v with ||eps * v|| = fd_eps = 0.01 spread over all
trainable weights, a relative change per element far below bf16's 2**-8 resolution: under
autocast the perturbed weights round back to the unperturbed bf16 values and the difference
grad_beta L_tr(W + eps v) - grad_beta L_tr(W) is rounding noise divided by eps.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from autolora_exp.errors import UserError

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}

_local = threading.local()


@contextlib.contextmanager
def full_precision() -> Iterator[None]:
    """Every :meth:`Precision.autocast` entered inside this block runs in fp32 (autocast off)."""
    depth = getattr(_local, "fp32_depth", 0)
    _local.fp32_depth = depth + 1
    try:
        with contextlib.ExitStack() as stack:  # also switches off an autocast entered outside
            stack.enter_context(torch.autocast(device_type="cpu", enabled=False))
            if torch.cuda.is_available():
                stack.enter_context(torch.autocast(device_type="cuda", enabled=False))
            yield
    finally:
        _local.fp32_depth = depth


def _in_full_precision() -> bool:
    return getattr(_local, "fp32_depth", 0) > 0


def check_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise UserError(f"train.precision={name!r} is not one of {', '.join(PRECISIONS)}")
    return name


def check_search_precision(name: str) -> None:
    """The AutoLoRA search runs in fp32 or bf16 (see the module docstring for fp16)."""
    if name == "fp16":
        raise UserError("train.precision='fp16' is not supported by the AutoLoRA search (its hand-made gradient "
                        "passes have no loss scaling); use train.precision=bf16 or fp32")


@dataclass
class Precision:
    """The run's precision on its device: :meth:`autocast` for forwards, :meth:`scaler` for fp16."""

    name: str = "fp32"
    device: torch.device = torch.device("cpu")

    def __post_init__(self) -> None:
        check_precision(self.name)
        self.device = torch.device(self.device)

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype; None for fp32."""
        return _DTYPES[self.name]

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast to :attr:`dtype` on the device (a no-op for fp32 and inside :func:`full_precision`)."""
        if self.dtype is None or _in_full_precision():
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """fp16's dynamic loss scale (None otherwise)."""
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(self.device.type)

    def loss_fn(self, loss_fn: Any) -> Any:
        """``loss_fn(model, batch)`` with its forward under :meth:`autocast`; the loss comes back fp32."""
        if self.dtype is None:
            return loss_fn

        def autocast_loss(model: Any, batch: Any) -> torch.Tensor:
            with self.autocast():
                return loss_fn(model, batch).float()

        return autocast_loss


def allow_tf32(device: torch.device, enabled: bool) -> bool:
    """Let fp32 matmuls use TF32 on a GPU that has it; returns whether TF32 is in use."""
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available():
        return False
    has_tf32 = torch.cuda.get_device_capability(device)[0] >= 8
    torch.backends.cuda.matmul.allow_tf32 = enabled and has_tf32
    torch.backends.cudnn.allow_tf32 = enabled and has_tf32
    return enabled and has_tf32
