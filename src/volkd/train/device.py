"""Where and in which precision a run computes: ``device: auto|cpu|cuda[:N]``, ``precision: fp32|amp``.

- ``auto`` is CUDA when ``torch.cuda.is_available()``, else the CPU.
- ``amp`` on CUDA: autocast to bfloat16 where the GPU supports it (no loss scaling needed),
  else float16 with a :class:`torch.amp.GradScaler`. On the CPU ``amp`` is a no-op (fp32), so a
  config means the same arithmetic on every CPU (bf16 speed there varies with the CPU and the
  network: see docs/training.md).
- Inputs small enough (:data:`DEVICE_DATA_BYTES`) live on the device for the whole run; larger
  ones stay in pinned host memory and are copied batch by batch (non-blocking).

These speed-ups on a GPU are expected, not measured here (no GPU on the project's machines):
see docs/training.md.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch

from volkd.errors import ConfigError
from volkd.train.config import DEVICE_RE

#: Training inputs up to this size are kept on a CUDA device for the whole run.
DEVICE_DATA_BYTES = 2 * 2**30


def resolve_device(name: str) -> torch.device:
    """The torch device for a config value: ``auto`` → CUDA when present (``cuda:$LOCAL_RANK``
    under torchrun, so each process gets its own GPU), else the CPU."""
    if not DEVICE_RE.match(name):
        raise ConfigError(f"device {name!r} unknown; use auto (CUDA when present), cpu, cuda or cuda:N")
    if name == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        local = os.environ.get("LOCAL_RANK")
        return torch.device(f"cuda:{int(local)}" if local is not None else "cuda")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name!r}: CUDA is not available on this machine (torch {torch.__version__}); use device: auto or cpu")
    return dev


@dataclass(frozen=True)
class Precision:
    """The effective precision of a run on its device."""

    name: str  # "fp32", "bf16" or "fp16"
    device_type: str

    @property
    def dtype(self) -> torch.dtype | None:
        """The autocast dtype (None: no autocast)."""
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name)

    @property
    def needs_scaler(self) -> bool:
        """float16 gradients underflow without loss scaling; bfloat16 has fp32's range."""
        return self.name == "fp16"

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """Autocast for the forward pass and loss (a null context for fp32)."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def scaler(self) -> torch.amp.GradScaler | None:
        """A GradScaler for fp16, else None."""
        return torch.amp.GradScaler(self.device_type) if self.needs_scaler else None


def resolve_precision(precision: str, device: torch.device) -> Precision:
    """``fp32`` anywhere; ``amp`` → bf16 (or fp16 + scaler) on CUDA, fp32 on the CPU (a no-op)."""
    if precision not in ("fp32", "amp"):
        raise ConfigError(f"precision {precision!r} unknown; use fp32 or amp")
    if precision == "fp32" or device.type != "cuda":
        return Precision("fp32", device.type)
    return Precision("bf16" if torch.cuda.is_bf16_supported() else "fp16", device.type)


def place_inputs(x: torch.Tensor, device: torch.device, max_bytes: int = DEVICE_DATA_BYTES) -> torch.Tensor:
    """Training inputs where batches are cut from: on ``device`` when it is CUDA and ``x`` fits in
    ``max_bytes``, in pinned host memory when larger, unchanged on the CPU."""
    if device.type != "cuda":
        return x
    if x.numel() * x.element_size() <= max_bytes:
        return x.to(device)
    return x.pin_memory()
