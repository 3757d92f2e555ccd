"""PU-MLC's MixUp regulariser: a second forward pass on mixed images, fitted to mixed soft targets.

The PU loss alone only sees each image once per step. The regulariser (from VPU, kept with
weight 1 in PU-MLC) mixes the first half of the batch (A, shuffled) with the second half (B) and
asks the prediction on the mixed image to match the same mixture of *targets*, where the target
of an entry is 1 for a known positive and the model's own first-pass probability otherwise::

    h = floor(N/2); A = first h samples; B = last h samples (odd N: the middle one is unused)
    t_ic = 1 if partial_ic == +1 else sigmoid(z_ic)          not detached
    lam ~ Beta(0.3, 0.3) one scalar per step; perm = random permutation of A
    x_mix = lam * x[A][perm] + (1-lam) * x[B];  t_mix = lam * t[A][perm] + (1-lam) * t[B]
    L_reg = sum_c (1/h) * sum_k (log(t_mix + 1e-10) - log(sigmoid(model(x_mix)) + 1e-10))^2

If ``h == 0`` (one image) A is mixed with itself: A = B = the one image, and the divisor is 1.
(The official code divides by ``h`` and fails there with a ZeroDivisionError.)

The randomness of one step is drawn once into a :class:`MixupPlan`, so that the engine can mix
inputs before the second forward pass (under its own autocast and DDP context) and mix targets
after it, and so that tests can fix ``lam`` and ``perm``. :func:`published_mixup_loss` composes the
pieces the way the official code does.

Why the targets are not detached: the official code builds them from the raw first-pass logits
with gradient, so the regulariser also pulls the first-pass probabilities of unlabeled entries
towards the prediction on the mixed image (a consistency term in both directions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Union

import numpy as np
import torch

from ._utils import check_logits_targets, promote_logits


@dataclass
class MixupPlan:
    """One draw of the regulariser's randomness for a batch of ``n`` images.

    Attributes:
        lam: mixing weight of the (permuted) first half A, ``lam ~ Beta(a, a)``.
        perm: permutation of A, a long tensor of length ``max(h, 1)``.
        h: ``floor(n / 2)``, the size of A and B (A and B are the one image when ``h == 0``).
        n: batch size the plan was drawn for.
    """

    lam: float
    perm: torch.Tensor
    h: int
    n: int

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"MixupPlan needs a batch of at least one image, got n={self.n}")
        if self.h != self.n // 2:
            raise ValueError(f"MixupPlan: h must be floor(n/2) = {self.n // 2}, got h={self.h}")
        if tuple(self.perm.shape) != (self.size,):
            raise ValueError(f"MixupPlan: perm must have shape ({self.size},), "
                             f"got {tuple(self.perm.shape)}")

    @property
    def size(self) -> int:
        """Number of mixed samples: ``h``, or 1 when ``h == 0`` (A mixed with itself)."""
        return max(self.h, 1)

    def _mix(self, values: torch.Tensor) -> torch.Tensor:
        if values.shape[0] != self.n:
            raise ValueError(f"MixupPlan was drawn for a batch of {self.n}, got a tensor with "
                             f"{values.shape[0]} rows")
        size = self.size
        first = values[:size][self.perm.to(values.device)]
        second = values[self.n - size:]
        return self.lam * first + (1.0 - self.lam) * second

    def mix_inputs(self, x: torch.Tensor) -> torch.Tensor:
        """Mixed inputs ``lam * x[A][perm] + (1 - lam) * x[B]``, shape ``(max(h, 1), ...)``."""
        return self._mix(x)

    def mix_targets(self, targets: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """Mixed soft targets: ``t = 1`` for a known positive else ``sigmoid(z)`` (not detached),
        mixed like the inputs. Computed in float32 (float64 if the logits are float64)."""
        check_logits_targets(logits, targets)
        z = promote_logits(logits)
        soft = torch.where(targets == 1, torch.ones_like(z), torch.sigmoid(z))
        return self._mix(soft)


def sample_mixup_plan(n: int, mixup_alpha: float = 0.3,
                      generator: Optional[torch.Generator] = None,
                      device: Optional[Union[torch.device, str]] = None) -> MixupPlan:
    """Draw ``lam ~ Beta(mixup_alpha, mixup_alpha)`` and a permutation of A for a batch of ``n``.

    Both draws come from ``generator`` (a ``torch.Generator`` on any device) or, without one,
    from torch's global CPU generator, so ``torch.manual_seed`` makes training reproducible.
    ``lam`` is drawn by numpy's Beta sampler from a seed taken out of that torch generator,
    because torch's Beta distribution cannot take a generator; it is a Python float in [0, 1]
    (in (0, 1) with probability 1; float64 rounds it to exactly 1.0 about once in 10^5 draws at
    alpha 0.3, which mixing handles like any other value). ``perm`` is placed on ``device``
    (default: the generator's device, CPU without one). One host sync per call (the seed).
    """
    if n < 1:
        raise ValueError(f"the MixUp regulariser needs a batch of at least one image, got n={n}")
    if not (math.isfinite(mixup_alpha) and mixup_alpha > 0):
        raise ValueError(f"mixup_alpha must be a finite number > 0 (Beta parameter), "
                          f"got {mixup_alpha!r}; the paper uses 0.3")
    h = n // 2
    draw_on = generator.device if generator is not None else None
    seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=draw_on).item())
    lam = float(np.random.default_rng(seed).beta(mixup_alpha, mixup_alpha))
    perm = torch.randperm(max(h, 1), generator=generator, device=draw_on)
    if device is not None:
        perm = perm.to(device, non_blocking=True)
    return MixupPlan(lam=lam, perm=perm, h=h, n=n)


def mixup_regulariser(mixed_logits: torch.Tensor, mixed_targets: torch.Tensor,
                      h: int) -> torch.Tensor:
    """``sum_c (1/h) sum_k (log(t_mix + 1e-10) - log(sigmoid(z_mix) + 1e-10))^2`` (a scalar).

    ``h`` is the plan's ``h``; like the official code the sum is divided by the size of A, which
    is ``h`` (1 when ``h == 0``). ``mixed_logits`` may be half precision (second forward pass under
    autocast); they are cast to float32.
    """
    check_logits_targets(mixed_logits, mixed_targets)
    size = max(int(h), 1)
    if mixed_logits.shape[0] != size:
        raise ValueError(f"mixed batch has {mixed_logits.shape[0]} rows but a plan with h={h} "
                         f"mixes {size}")
    z = promote_logits(mixed_logits)
    t = mixed_targets.to(torch.promote_types(mixed_targets.dtype, z.dtype))
    diff = torch.log(t + 1e-10) - torch.log(torch.sigmoid(z) + 1e-10)
    return diff.pow(2).sum() / size


def published_mixup_loss(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                         targets: torch.Tensor, logits: torch.Tensor, mixup_alpha: float = 0.3,
                         generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The published regulariser in one call: draw a plan, mix, run ``model(x_mix)``, compare.

    The second forward pass runs in the caller's context (autocast, DDP); under DDP two forward
    passes before one backward need ``static_graph=True`` or ``find_unused_parameters=True`` as
    in the official code.
    """
    plan = sample_mixup_plan(x.shape[0], mixup_alpha, generator=generator, device=x.device)
    x_mix = plan.mix_inputs(x)
    t_mix = plan.mix_targets(targets, logits)
    z_mix = model(x_mix)
    return mixup_regulariser(z_mix, t_mix, plan.h)
