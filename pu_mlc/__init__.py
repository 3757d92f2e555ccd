"""pu-mlc: PU-MLC multi-label image classification (Yuan et al., ICME 2024), trained and tuned at
cluster scale. The library is free of Ray: ``pu_mlc.engine.fit`` trains one configuration alone,
under torchrun, or inside a Ray Train worker (see ``tune/``)."""

__version__ = "0.1.0"
