"""``build_loss``: the one place that turns a loss name from the config into a loss module.

The engine only calls ``build_loss(config.loss, alpha=..., gamma=..., asl_gamma_neg=...,
asl_gamma_pos=..., asl_clip=...)`` and then ``loss(logits, targets)``; each loss takes the
parameters it has and ignores the others. Whether the MixUp regulariser's second forward pass
runs is read from the module's ``uses_mixup_regulariser`` attribute (True only for ``'pu'``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict

from torch import nn

from ..choices import LOSS_NAMES as _CHOICES
from .baselines import AssumeNegativeBCELoss, AsymmetricLoss, BCELoss, PartialBCELoss
from .pu import PULoss


@dataclass(frozen=True)
class _LossParams:
    alpha: float
    gamma: float
    asl_gamma_neg: float
    asl_gamma_pos: float
    asl_clip: float


_BUILDERS: Dict[str, Callable[[_LossParams], nn.Module]] = {
    "pu": lambda p: PULoss(alpha=p.alpha, gamma=p.gamma),
    "bce": lambda p: BCELoss(),
    "partial_bce": lambda p: PartialBCELoss(),
    "assume_negative_bce": lambda p: AssumeNegativeBCELoss(),
    "asl": lambda p: AsymmetricLoss(gamma_neg=p.asl_gamma_neg, gamma_pos=p.asl_gamma_pos,
                                    clip=p.asl_clip),
}

#: Loss names accepted by :func:`build_loss` (and by the ``loss`` field of ``TrainConfig``).
LOSS_NAMES = _CHOICES
if tuple(_BUILDERS) != LOSS_NAMES:
    raise ImportError(f"pu_mlc.choices.LOSS_NAMES {LOSS_NAMES} != the losses built here "
                      f"{tuple(_BUILDERS)}: list a new loss in both")


def build_loss(name: str, *, alpha: float = 1.0, gamma: float = 0.55,
               asl_gamma_neg: float = 4.0, asl_gamma_pos: float = 1.0,
               asl_clip: float = 0.05) -> nn.Module:
    """Build the loss called ``name``.

    ``alpha`` and ``gamma`` are used by ``'pu'`` only; ``asl_gamma_neg``, ``asl_gamma_pos`` and
    ``asl_clip`` (defaults: the ASL paper's, as :class:`AsymmetricLoss`) by ``'asl'`` only.
    Returns a module whose ``forward(logits, targets)`` gives a scalar and which has the
    attribute ``uses_mixup_regulariser``. An unknown name raises ``ValueError``.
    """
    try:
        builder = _BUILDERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSS_NAMES)}") \
            from None
    return builder(_LossParams(alpha=alpha, gamma=gamma, asl_gamma_neg=asl_gamma_neg,
                               asl_gamma_pos=asl_gamma_pos, asl_clip=asl_clip))
