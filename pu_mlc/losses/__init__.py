"""Losses: PU-MLC's PU loss and MixUp regulariser, and the baselines compared against it.

``loss_from_config(cfg)`` (the engine) and ``build_loss(name, alpha=, gamma=, ...)`` (library
callers) are the entry points; every loss takes ``(logits, targets)``
with targets +1 known positive, -1 known negative, 0 unknown, and returns a scalar summed over
classes and averaged over images. The regulariser is separate (it needs a second forward pass):
see :mod:`pu_mlc.losses.mixup`.
"""

from .baselines import AssumeNegativeBCELoss, AsymmetricLoss, BCELoss, PartialBCELoss
from .factory import LOSS_NAMES, build_loss, loss_from_config
from .mixup import MixupPlan, mixup_regulariser, published_mixup_loss, sample_mixup_plan
from .pu import PULoss

__all__ = [
    "AssumeNegativeBCELoss", "AsymmetricLoss", "BCELoss", "LOSS_NAMES", "MixupPlan",
    "PULoss", "PartialBCELoss", "build_loss", "loss_from_config", "mixup_regulariser", "published_mixup_loss",
    "sample_mixup_plan",
]
