"""The one place that turns a loss name into a loss module.

The engine builds its loss straight from the run's config: ``loss_from_config(cfg)`` hands the
config itself to the named loss's builder, which reads the fields it has (``alpha`` and
``gamma`` for ``'pu'``, the ``asl_*`` fields for ``'asl'``) with no re-packing in between.
``build_loss(name, alpha=..., gamma=...)`` is the same table for library callers, with keyword
arguments (defaults: the config's). Whether the MixUp regulariser's second forward pass runs is
read from the module's ``uses_mixup_regulariser`` attribute (True only for ``'pu'``).

What a loss equals at full labels is a property of its class (``full_label_equivalent``: partial
BCE and assume-negative BCE are BCE when no entry is unknown). The search reads the same fact
from ``pu_mlc.choices.FULL_LABEL_EQUIVALENT`` without importing torch; this module refuses to
import when the two disagree, as it does when ``LOSS_NAMES`` and the builders disagree.
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, Callable, Dict

from torch import nn

from ..choices import FULL_LABEL_EQUIVALENT
from ..choices import LOSS_NAMES as _CHOICES
from .baselines import AssumeNegativeBCELoss, AsymmetricLoss, BCELoss, PartialBCELoss
from .pu import PULoss

#: Per loss name, a builder reading its parameters from a config (any object with the fields).
_BUILDERS: Dict[str, Callable[[Any], nn.Module]] = {
    "pu": lambda c: PULoss(alpha=c.alpha, gamma=c.gamma),
    "bce": lambda c: BCELoss(),
    "partial_bce": lambda c: PartialBCELoss(),
    "assume_negative_bce": lambda c: AssumeNegativeBCELoss(),
    "asl": lambda c: AsymmetricLoss(gamma_neg=c.asl_gamma_neg, gamma_pos=c.asl_gamma_pos,
                                    clip=c.asl_clip),
}

#: The class each builder returns: where a loss states what it equals at full labels.
LOSS_CLASSES: Dict[str, type] = {
    "pu": PULoss, "bce": BCELoss, "partial_bce": PartialBCELoss,
    "assume_negative_bce": AssumeNegativeBCELoss, "asl": AsymmetricLoss,
}

#: Loss names accepted by :func:`build_loss` (and by the ``loss`` field of ``TrainConfig``).
LOSS_NAMES = _CHOICES
if tuple(_BUILDERS) != LOSS_NAMES or tuple(LOSS_CLASSES) != LOSS_NAMES:
    raise ImportError(f"pu_mlc.choices.LOSS_NAMES {LOSS_NAMES} != the losses built here "
                      f"{tuple(_BUILDERS)}: list a new loss in both")


def full_label_equivalents(classes: Dict[str, type]) -> Dict[str, str]:
    """Per loss name, what its class says it equals at full labels."""
    return {name: cls.full_label_equivalent for name, cls in classes.items()}


if full_label_equivalents(LOSS_CLASSES) != FULL_LABEL_EQUIVALENT:
    raise ImportError(f"pu_mlc.choices.FULL_LABEL_EQUIVALENT {FULL_LABEL_EQUIVALENT} != what "
                      f"the loss classes state {full_label_equivalents(LOSS_CLASSES)}: a loss's "
                      f"full-label equivalent is written in both; make them agree")


def loss_from_config(cfg: Any) -> nn.Module:
    """The loss a ``TrainConfig`` names (``cfg.loss``), built from its own fields."""
    return _builder(cfg.loss)(cfg)


def build_loss(name: str, *, alpha: float = 1.0, gamma: float = 0.55,
               asl_gamma_neg: float = 4.0, asl_gamma_pos: float = 1.0,
               asl_clip: float = 0.05) -> nn.Module:
    """Build the loss called ``name`` from keyword arguments (library callers).

    ``alpha`` and ``gamma`` are used by ``'pu'`` only; ``asl_gamma_neg``, ``asl_gamma_pos`` and
    ``asl_clip`` (defaults: the ASL paper's, as :class:`AsymmetricLoss`) by ``'asl'`` only.
    Returns a module whose ``forward(logits, targets)`` gives a scalar and which has the
    attribute ``uses_mixup_regulariser``. An unknown name raises ``ValueError``.
    """
    return _builder(name)(SimpleNamespace(alpha=alpha, gamma=gamma,
                                          asl_gamma_neg=asl_gamma_neg,
                                          asl_gamma_pos=asl_gamma_pos, asl_clip=asl_clip))


def _builder(name: str) -> Callable[[Any], nn.Module]:
    try:
        return _BUILDERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSS_NAMES)}") \
            from None
