"""The PU loss of PU-MLC: a variational positive-unlabeled loss per class, summed over classes.

PU-MLC trains a multi-label classifier from known positives alone. Every label entry that is not
a known positive (known negative or unknown) is treated as unlabeled, and each class is scored by
the variational PU objective of VPU (Chen et al., 2020) with two additions of the paper: a
per-class temperature taken from the spread of the logits, and a weight on the unlabeled term.
For one step with N images (the *local* batch of one process) and C classes::

    std_c = sqrt(mean_i (z_ic - mean_i z_ic)^2)            population std over the local batch
    T_c   = stopgrad(min(alpha * std_c, 1))
    s_ic  = sigmoid(z_ic / T_c)
    w_c   = stopgrad(mean_i(s_ic) ** gamma)
    L_pu  = sum_c [ w_c * log(mean_i(s_ic + 1e-10) + 1e-10)
                    - (1/|P_c|) * sum_{i in P_c} log(s_ic + 2e-10) ]

``P_c`` are the known positives of class c (the positive term is 0 when there are none). The
formulas and their ``1e-10`` offsets are those of the official code (``SPEC.md`` section 2), whose
``log(exp(log(s + 1e-10)) + 1e-10)`` and ``(1 - mean(1 - s)) ** gamma`` are written here in their
equal, simpler forms.

Why the statistics are per local batch: the temperature and the weight are properties of the
batch the process sees, so under data parallelism the per-GPU batch size is part of the method
(the published runs use 35 or 45 images per GPU). Nothing here is all-reduced on purpose.

Why the temperature and the weight are detached: they set the *scale* of the objective from the
current predictions; letting gradients through them would let the model lower the loss by
squeezing or spreading its logits instead of ranking positives higher. The official code computes
both without gradient.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ._utils import check_logits_targets, promote_logits


class PULoss(nn.Module):
    """PU-MLC's variational PU loss with per-class temperature (``SPEC.md`` section 2).

    Args:
        alpha: scale of the temperature, ``T_c = min(alpha * std_c, 1)`` (paper: 1.0 COCO, 2.0 VOC).
        gamma: exponent of the unlabeled-term weight ``mean_i(s_ic) ** gamma`` (0.55 COCO,
            0.85 VOC).
        zero_std_temperature: temperature used for a class whose logits are all equal in the
            batch. There the formula's ``T_c`` is 0 and the official code divides by zero (NaN or
            saturated sigmoids, NaN gradients). We use ``T_c = zero_std_temperature`` (default 1,
            the formula's own upper clamp, i.e. the plain sigmoid) for exactly those classes:
            the value and the gradient stay finite and bounded, the class still receives a
            gradient that can spread its logits again, and no other class is touched. It happens
            in practice with one image per process (every class then has zero std) or with a
            class whose logit does not depend on the input yet. A class with a tiny but non-zero
            std keeps the formula's tiny temperature: the guard is not an epsilon floor.

    ``forward(logits, targets)`` takes ``(N, C)`` logits (any float dtype; computed in float32,
    or float64 if given float64) and ``(N, C)`` targets with +1 known positive, -1 known negative,
    0 unknown, and returns the scalar ``L_pu``.
    """

    uses_mixup_regulariser: bool = True
    #: At full labels the PU loss is still itself: it never reads known negatives.
    full_label_equivalent: str = "pu"

    def __init__(self, alpha: float = 1.0, gamma: float = 0.55,
                 zero_std_temperature: float = 1.0) -> None:
        super().__init__()
        if not (math.isfinite(alpha) and alpha > 0):
            raise ValueError(f"PU loss: alpha must be a finite number > 0 (temperature scale), "
                              f"got {alpha!r}; the paper uses 1.0 (COCO) and 2.0 (VOC)")
        if not (math.isfinite(gamma) and gamma >= 0):
            raise ValueError(f"PU loss: gamma must be a finite number >= 0 (weight exponent), "
                              f"got {gamma!r}; the paper uses 0.55 (COCO) and 0.85 (VOC)")
        if not (math.isfinite(zero_std_temperature) and zero_std_temperature > 0):
            raise ValueError(f"PU loss: zero_std_temperature must be a finite number > 0, "
                              f"got {zero_std_temperature!r}")
        self.alpha = float(alpha)
        self.gamma = float(gamma)
        self.zero_std_temperature = float(zero_std_temperature)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, gamma={self.gamma}, "
                f"zero_std_temperature={self.zero_std_temperature}")

    def temperature(self, logits: torch.Tensor) -> torch.Tensor:
        """Per-class temperature ``T_c`` (detached, shape (C,)), with the zero-std guard applied.

        The guard applies where the formula's temperature is 0: all logits of the class are equal
        (checked exactly with max == min, since the float mean of equal values can round and
        leave a spurious std of 1e-9), or the std underflows to 0.
        """
        z = promote_logits(logits).detach()
        std = (z - z.mean(dim=0)).pow(2).mean(dim=0).sqrt()
        temp = torch.clamp(self.alpha * std, max=1.0)
        zero_spread = (z.amax(dim=0) == z.amin(dim=0)) | (temp == 0)
        return torch.where(zero_spread, torch.full_like(temp, self.zero_std_temperature), temp)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        z = promote_logits(logits)
        temp = self.temperature(z)
        s = torch.sigmoid(z / temp)
        with torch.no_grad():
            weight = s.mean(dim=0).pow(self.gamma)
        unlabeled_term = torch.log((s + 1e-10).mean(dim=0) + 1e-10)
        positive = (targets == 1).to(z.dtype)
        num_positive = positive.sum(dim=0)
        positive_term = (torch.log(s + 2e-10) * positive).sum(dim=0) / num_positive.clamp(min=1)
        return (weight * unlabeled_term - positive_term).sum()
