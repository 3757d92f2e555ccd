"""Mixed precision: which autocast dtype a run uses and whether it needs a gradient scaler.

The published recipe runs fp16 autocast with a GradScaler. bf16 has fp32's exponent range, so it
needs no scaler (no skipped steps, no scale bookkeeping) and is the default on GPUs that support
it. On CPU the default is fp32: CPU autocast is slower than fp32 on most CPUs without AMX.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import torch

from ..choices import PRECISIONS


@dataclass(frozen=True)
class Precision:
    name: str                      # 'bf16' | 'fp16' | 'fp32'
    dtype: Optional[torch.dtype]   # autocast dtype, None for fp32
    device_type: str

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def grad_scaler(self) -> Optional["torch.amp.GradScaler"]:
        if self.name != "fp16":
            return None
        return torch.amp.GradScaler(self.device_type)


def resolve_precision(name: str, device: torch.device) -> Precision:
    """The concrete precision of ``name`` on ``device``; impossible pairs raise ``ValueError``."""
    dev = device.type
    if name == "auto":
        if dev == "cuda":
            name = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            name = "fp32"
    if name == "fp32":
        return Precision("fp32", None, dev)
    if name == "bf16":
        if dev == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("'bf16' but this GPU has no bf16 support; use fp16 or auto")
        return Precision("bf16", torch.bfloat16, dev)
    if name == "fp16":
        if dev == "cpu":
            raise ValueError("'fp16' needs CUDA (CPU autocast is bf16 only; the paper preset's "
                             "fp16 + GradScaler is a GPU recipe); use bf16 or fp32 on CPU")
        return Precision("fp16", torch.float16, dev)
    raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}")
