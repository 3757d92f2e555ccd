"""Baseline losses to compare PU-MLC against on the same data and model.

All take ``(logits, targets)`` with targets +1 known positive, -1 known negative, 0 unknown, and
all are reduced to the same scale as :class:`~pu_mlc.losses.pu.PULoss`: **summed over classes,
averaged over images** (per image, per class summed). When some entries are ignored, the sum over
the kept entries is divided by their number and multiplied by C, so that the value equals the
full-label one when nothing is ignored, and does not shrink when only 10% of the labels are kept.

- ``bce``: binary cross-entropy on full labels; refuses unknown (0) entries.
- ``partial_bce``: BCE over the known (+1/-1) entries only, ``C * mean over known entries``
  (a *global* mean over the batch's known entries, not a per-image one: with the random
  keep-mask of MLC-PL every image keeps about the same fraction, and a global mean does not
  blow up images with one or two known labels). This is Durand et al. (2019)'s partial-BCE with
  the label-proportion normalisation ``g(p) = 1/p`` taken over the batch instead of per image.
  A batch without known entries gives 0.
- ``assume_negative_bce``: the common naive baseline, every entry that is not a known positive
  (unknown or known negative) is a negative.
- ``asl``: timm's ``AsymmetricLossMultiLabel`` with the ASL paper's defaults (gamma_neg=4,
  gamma_pos=1, clip=0.05), *masked* like ``partial_bce``: computed on known entries only and
  normalised the same way. Masking, rather than unknown -> negative, keeps ``asl`` a loss on the
  same information as ``partial_bce``; ``assume_negative_bce`` covers the unknown -> negative
  assumption. (ASL's own training script uses gamma_pos=0 and detached focusing weights; pass
  those to :class:`AsymmetricLoss` to reproduce it.)

None of them uses the MixUp regulariser (``uses_mixup_regulariser = False``).
"""

from __future__ import annotations

import inspect
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ._utils import check_logits_targets, promote_logits


def _masked_class_sum_mean(per_entry: torch.Tensor, known: torch.Tensor) -> torch.Tensor:
    """``C * sum(per_entry[known]) / count(known)``: per-image class sum on the known entries."""
    num_known = known.sum()
    total = (per_entry * known.to(per_entry.dtype)).sum()
    return total * per_entry.shape[1] / num_known.clamp(min=1).to(per_entry.dtype)


class BCELoss(nn.Module):
    """Full-label binary cross-entropy, summed over classes and averaged over images.

    Exists as the reference point of full-label MLC (``prob == 1``); it refuses partial labels
    with a ``ValueError`` rather than guessing what unknown entries mean (use ``partial_bce`` or
    ``assume_negative_bce`` for those). Checking the targets costs one host sync per call.
    """

    uses_mixup_regulariser: bool = False
    #: What this loss computes at full labels (``pu_mlc.choices.FULL_LABEL_EQUIVALENT``).
    full_label_equivalent: str = "bce"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        if bool((targets == 0).any()):
            num_unknown = int((targets == 0).sum())
            raise ValueError(
                f"bce loss needs full labels, but {num_unknown} of {targets.numel()} target "
                f"entries are 0 (unknown); use 'partial_bce' (ignore unknown entries) or "
                f"'assume_negative_bce' (unknown = negative), or train with prob = 1")
        z = promote_logits(logits)
        y = (targets == 1).to(z.dtype)
        per_entry = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        return per_entry.sum() / z.shape[0]


class PartialBCELoss(nn.Module):
    """BCE over known entries only (+1 and -1), ``C * mean over the batch's known entries``.

    The standard MLC-PL baseline: unknown entries contribute neither value nor gradient. At full
    labels every entry is known, the count of known entries is N x C, and the loss is exactly
    :class:`BCELoss` (``full_label_equivalent``).
    """

    uses_mixup_regulariser: bool = False
    full_label_equivalent: str = "bce"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        z = promote_logits(logits)
        known = targets != 0
        y = (targets == 1).to(z.dtype)
        per_entry = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        return _masked_class_sum_mean(per_entry, known)


class AssumeNegativeBCELoss(nn.Module):
    """BCE with every entry that is not a known positive taken as negative (the naive baseline).

    Shows what treating unknown labels as absent costs; summed over classes, averaged over images.
    At full labels nothing is unknown, so it is exactly :class:`BCELoss`
    (``full_label_equivalent``).
    """

    uses_mixup_regulariser: bool = False
    full_label_equivalent: str = "bce"

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        z = promote_logits(logits)
        y = (targets == 1).to(z.dtype)
        per_entry = F.binary_cross_entropy_with_logits(z, y, reduction="none")
        return per_entry.sum() / z.shape[0]


class AsymmetricLoss(nn.Module):
    """ASL (Ridnik et al., 2021) on known entries, via timm's ``AsymmetricLossMultiLabel``.

    Reuses timm's implementation for the per-entry loss (asymmetric clipping of negatives, one
    focusing exponent per sign) and applies the same known-entry masking and normalisation as
    :class:`PartialBCELoss`. Defaults are the ASL paper's: gamma_neg=4, gamma_pos=1, clip=0.05.
    """

    uses_mixup_regulariser: bool = False
    full_label_equivalent: str = "asl"

    def __init__(self, gamma_neg: float = 4.0, gamma_pos: float = 1.0,
                 clip: Optional[float] = 0.05, eps: float = 1e-8,
                 disable_torch_grad_focal_loss: bool = False) -> None:
        super().__init__()
        from timm.loss import AsymmetricLossMultiLabel

        kwargs = dict(gamma_neg=gamma_neg, gamma_pos=gamma_pos, clip=clip, eps=eps,
                      disable_torch_grad_focal_loss=disable_torch_grad_focal_loss)
        # timm >= 1.0.2x has a `reduction` argument (default 'batchmean'); older versions always
        # return the sum. Ask for the sum explicitly where the argument exists.
        if "reduction" in inspect.signature(AsymmetricLossMultiLabel.__init__).parameters:
            kwargs["reduction"] = "sum"
        self.asl = AsymmetricLossMultiLabel(**kwargs)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        check_logits_targets(logits, targets)
        z = promote_logits(logits)
        known = targets != 0
        num_classes = z.shape[1]
        # timm's loss is elementwise before its sum: feed it the known entries only, as one row.
        z_known = z[known].unsqueeze(0)
        y_known = (targets[known] == 1).to(z.dtype).unsqueeze(0)
        total = self.asl(z_known, y_known).to(z.dtype)
        return total * num_classes / known.sum().clamp(min=1).to(z.dtype)
