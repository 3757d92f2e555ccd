"""The training engine: ``fit(config)`` runs the PU-MLC recipe under any launcher."""

from .fit import Reporter, fit

__all__ = ["fit", "Reporter"]
