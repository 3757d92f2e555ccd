"""Input handling shared by every loss: dtype promotion and shape checks.

Logits arrive in bf16/fp16 under autocast; every loss of this package computes in float32 (or in
float64 when given float64, which the tests use to check formulas tightly), because the
``+ 1e-10`` offsets of the published formulas vanish in half precision.
"""

from __future__ import annotations

import torch


def promote_logits(logits: torch.Tensor) -> torch.Tensor:
    """Return ``logits`` as float32, or unchanged if already float32/float64."""
    if not torch.is_tensor(logits) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got {type(logits).__name__} "
                        f"{getattr(logits, 'dtype', '')}")
    return logits.to(torch.promote_types(logits.dtype, torch.float32))


def check_logits_targets(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Raise ``ValueError`` unless logits and targets are equal-shaped (N, C) with N >= 1."""
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(f"targets shape {tuple(targets.shape)} differs from logits shape "
                         f"{tuple(logits.shape)}; both must be (N, C)")
    if logits.shape[0] == 0:
        raise ValueError("empty batch: the losses need at least one image (N >= 1)")
