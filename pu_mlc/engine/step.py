"""One optimisation step of PU-MLC, in the published two-pass form and in our fused form.

The published step runs the network twice: once on the batch (PU loss) and once on a MixUp of
the batch's two halves (regulariser), then back-propagates the sum. The mixed *inputs* do not
depend on the first pass (only the mixed *targets* do: they use sigmoid of the first-pass
logits), and every BatchNorm is in eval mode, so the network is a per-image function. Running it
once on ``cat(x, x_mix)`` therefore gives exactly the same logits, loss and gradients with one
larger batch instead of two passes (fewer kernel launches, one DDP forward/backward pair, no
re-entrant graph). ``fused=False`` keeps the published form for benchmarks and checks.

:class:`DivergenceWatch` watches every step for a non-finite loss or gradient without a per-step
device->host synchronisation; ``fit`` reads it at its sync points and applies the loss-rise rule
(:func:`loss_rise_limit`).
"""

from __future__ import annotations

from typing import Optional, Sequence

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


# ------------------------------------------------------------------------------------------------
#: The loss-rise rule: a run has diverged when its mean training loss over a whole epoch, or over
#: a window of :data:`LOSS_WINDOW_STEPS` steps, exceeds ``LOSS_RISE_FACTOR * |L0| + C`` (L0: the
#: loss of the run's first step, computed from the initial weights, the only loss value that does
#: not depend on the learning rate; C: the number of classes).
LOSS_RISE_FACTOR = 10.0
LOSS_WINDOW_STEPS = 50


def loss_rise_limit(first_loss: float, num_classes: int) -> float:
    """The mean training loss above which a run counts as diverged (see ``LOSS_RISE_FACTOR``).

    Why this form: every loss of pu_mlc is a per-image *sum over the classes* (PU loss and MixUp
    regulariser, BCE/ASL baselines), so its natural unit is the class count ``C``; the margin of
    one unit per class keeps a start loss that happens to be near zero (the PU loss has terms of
    both signs) from making the limit tight. A healthy run's loss falls from its start; a too-high
    learning rate saturates the logits within a few steps and the loss jumps by orders of
    magnitude (lr 1e6 on the test dataset: first step 1.06, epoch means 132 and 450, limit 20.6).
    Averaged over a whole epoch (or 50 steps), batch-to-batch noise (a single step may be several
    times the start) cannot trip it.
    """
    return LOSS_RISE_FACTOR * abs(float(first_loss)) + float(num_classes)


class DivergenceWatch:
    """A non-finite loss or gradient, noticed from the step where it happens.

    :meth:`observe` runs inside every training step and only queues a few tiny device kernels
    (no device->host sync): whether the loss is finite and, without a GradScaler, whether the
    gradients are (their total 2-norm: one fused pass), and the first step (within the epoch)
    where each failed. :meth:`poll` reads that (one sync) and is called by ``fit`` on the first
    step of every epoch and at the sync points it already has (every 50 steps on CUDA, every step
    on a single CPU process where reading costs nothing, the end of the epoch).

    With fp16 the GradScaler skips steps whose scaled gradients overflowed and lowers its scale;
    that is the scaler working, not divergence, so gradients are not watched then (the loss is).
    ``first_loss`` (the run's first loss, the reference of :func:`loss_rise_limit`) is part of
    the recipe state saved in ``last.pt``.
    """

    def __init__(self, params: Sequence[torch.Tensor], device: torch.device,
                 check_gradients: bool = True):
        self.params = list(params)
        self.device = torch.device(device)
        self.check_gradients = bool(check_gradients)
        self.first_loss: Optional[float] = None
        self.start_epoch()

    def start_epoch(self) -> None:
        self._step = torch.zeros((), dtype=torch.int64, device=self.device)
        self._first_bad = torch.zeros(2, dtype=torch.int64, device=self.device)  # loss, grads
        self._bad_value = torch.zeros(2, dtype=torch.float32, device=self.device)

    @torch.no_grad()
    def observe(self, loss: torch.Tensor) -> None:
        """After the optimizer step of one training step (the gradients are still there)."""
        self._step += 1
        values = [loss.detach().float().reshape(())]
        grads = [p.grad for p in self.params if p.grad is not None] if self.check_gradients else []
        if grads:
            values.append(torch.nn.utils.get_total_norm(grads).float().reshape(()))
        else:
            values.append(torch.zeros((), dtype=torch.float32, device=loss.device))
        v = torch.stack(values)
        new = ~torch.isfinite(v) & (self._first_bad == 0)
        self._first_bad = torch.where(new, self._step, self._first_bad)
        self._bad_value = torch.where(new, v, self._bad_value)

    def poll(self) -> Optional[tuple[str, int]]:
        """``(reason, step)`` of the first non-finite loss or gradient this epoch, else None."""
        (loss_step, grad_step), (loss_value, grad_norm) = (self._first_bad.tolist(),
                                                           self._bad_value.tolist())
        if not loss_step and not grad_step:
            return None
        if loss_step and (not grad_step or loss_step <= grad_step):
            return f"the training loss is {loss_value} (non-finite)", loss_step
        return (f"the gradients are non-finite (total norm {grad_norm}) while the loss is "
                f"finite"), grad_step

    def state_dict(self) -> dict:
        return {"first_loss": self.first_loss}

    def load_state_dict(self, state: Optional[dict]) -> None:
        if state and state.get("first_loss") is not None:
            self.first_loss = float(state["first_loss"])
