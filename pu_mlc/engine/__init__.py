"""The training engine: ``fit(config)`` runs the PU-MLC recipe under any launcher.

The engine's small modules (precision, protocols, devices, data pipelines) own the choice lists
that :mod:`pu_mlc.config` collects, so the engine refers to the config module by name at call
time (``from .. import config``) and never imports names from it while it loads.
"""

from .fit import Reporter, fit
from .recipe import Recipe

__all__ = ["fit", "Reporter", "Recipe"]
