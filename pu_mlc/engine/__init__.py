"""The training engine: ``fit(config)`` runs the PU-MLC recipe under any launcher.

The choice lists the engine's modules accept (precisions, protocols, devices, data pipelines)
live in :mod:`pu_mlc.choices`, which the config also reads, so the config imports no engine
module (and no torch).
"""

from .fit import Reporter, fit
from .recipe import Recipe

__all__ = ["fit", "Reporter", "Recipe"]
