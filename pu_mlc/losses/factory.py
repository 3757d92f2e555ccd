"""``build_loss``: the one place that turns a loss name from the config into a loss module.

The engine only calls ``build_loss(config.loss, alpha=..., gamma=...)`` and then
``loss(logits, targets)``; whether the MixUp regulariser's second forward pass runs is read from
the module's ``uses_mixup_regulariser`` attribute (True only for ``'pu'``).
"""

from __future__ import annotations

from typing import Callable, Dict

from torch import nn

from .baselines import AssumeNegativeBCELoss, AsymmetricLoss, BCELoss, PartialBCELoss
from .pu import PULoss

_BUILDERS: Dict[str, Callable[[float, float], nn.Module]] = {
    "pu": lambda alpha, gamma: PULoss(alpha=alpha, gamma=gamma),
    "bce": lambda alpha, gamma: BCELoss(),
    "partial_bce": lambda alpha, gamma: PartialBCELoss(),
    "assume_negative_bce": lambda alpha, gamma: AssumeNegativeBCELoss(),
    "asl": lambda alpha, gamma: AsymmetricLoss(),
}

#: Loss names accepted by :func:`build_loss` (and by the ``loss`` field of ``TrainConfig``).
LOSS_NAMES = tuple(_BUILDERS)


def build_loss(name: str, *, alpha: float = 1.0, gamma: float = 0.55) -> nn.Module:
    """Build the loss called ``name``; ``alpha`` and ``gamma`` are used by ``'pu'`` only.

    Returns a module whose ``forward(logits, targets)`` gives a scalar and which has the
    attribute ``uses_mixup_regulariser``. An unknown name raises ``ValueError``.
    """
    try:
        builder = _BUILDERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSS_NAMES)}") \
            from None
    return builder(alpha, gamma)
