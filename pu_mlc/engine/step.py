"""One optimisation step of PU-MLC, in the published two-pass form and in our fused form.

The published step runs the network twice: once on the batch (PU loss) and once on a MixUp of
the batch's two halves (regulariser), then back-propagates the sum. The mixed *inputs* do not
depend on the first pass (only the mixed *targets* do: they use sigmoid of the first-pass
logits), and every BatchNorm is in eval mode, so the network is a per-image function. Running it
once on ``cat(x, x_mix)`` therefore gives exactly the same logits, loss and gradients with one
larger batch instead of two passes (fewer kernel launches, one DDP forward/backward pair, no
re-entrant graph). ``fused=False`` keeps the published form for benchmarks and checks.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from ..losses import mixup_regulariser, sample_mixup_plan
from .precision import Precision


def compute_loss(model: nn.Module, x: torch.Tensor, targets: torch.Tensor, criterion: nn.Module,
                 precision: Precision, *, mixup_alpha: float = 0.3,
                 generator: Optional[torch.Generator] = None,
                 fused: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward pass(es) and the loss (with the MixUp regulariser when the loss uses it)."""
    n = x.shape[0]
    if not getattr(criterion, "uses_mixup_regulariser", False):
        with precision.autocast():
            logits = model(x)
        return criterion(logits.float(), targets), logits
    plan = sample_mixup_plan(n, mixup_alpha, generator=generator, device=x.device)
    x_mix = plan.mix_inputs(x)
    if fused:
        with precision.autocast():
            all_logits = model(torch.cat([x, x_mix], dim=0))
        logits, mixed_logits = all_logits[:n], all_logits[n:]
    else:
        with precision.autocast():
            logits = model(x)
        with precision.autocast():
            mixed_logits = model(x_mix)
    logits, mixed_logits = logits.float(), mixed_logits.float()
    loss = criterion(logits, targets)
    loss = loss + mixup_regulariser(mixed_logits, plan.mix_targets(targets, logits), plan.h)
    return loss, logits


def optimizer_step(loss: torch.Tensor, optimizer: torch.optim.Optimizer,
                   scaler: Optional["torch.amp.GradScaler"]) -> None:
    """Backward and update; with fp16 the GradScaler skips steps whose gradients overflowed."""
    optimizer.zero_grad(set_to_none=True)
    if scaler is None:
        loss.backward()
        optimizer.step()
    else:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
