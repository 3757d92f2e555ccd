"""TensorBoard output of one run: per-epoch scalars plus an HParams record in the same run.

``SummaryWriter.add_hparams`` writes its record into a *new* sub-run named by a timestamp, which
splits every trial of a search into two runs and hides the curves from the HParams tab. Here the
HParams summaries go into the run's own event file, so the HParams tab lists one row per trial
whose metric columns are the same scalars the Scalars tab plots.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

log = logging.getLogger(__name__)

from ..choices import HPARAM_METRICS          # the HParams tab's metric columns per protocol


class RunWriter:
    """Rank-0 TensorBoard writer; every method is a no-op on other ranks (``enabled=False``)."""

    def __init__(self, logdir: Path, enabled: bool, purge_step: Optional[int] = None):
        self.enabled = enabled
        self._writer = None
        self._session_end = None
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            logdir.mkdir(parents=True, exist_ok=True)
            self._writer = SummaryWriter(log_dir=str(logdir), purge_step=purge_step)

    def hparams_start(self, hparams: Mapping[str, Any], protocol: str, resumed: bool = False,
                      define_experiment: bool = True) -> None:
        """Open the HParams session; a resumed run only re-arms its end marker (the session
        was opened by the run it continues, in an earlier event file of the same directory).

        ``define_experiment``: also write the HParams *experiment* (which fields and metrics
        the tab has columns for). A single run defines its own; the runs of a search do not:
        TensorBoard keeps one experiment definition per logdir, so the search writes one that
        lists every study's searched fields (``tune.hparams``)."""
        if not self.enabled:
            return
        from torch.utils.tensorboard.summary import hparams as hp_summary

        clean = {k: _hparam_value(v) for k, v in hparams.items()}
        exp, ssi, self._session_end = hp_summary(clean,
                                                {m: 0.0 for m in HPARAM_METRICS[protocol]})
        if resumed:
            return
        if define_experiment:
            self._writer.file_writer.add_summary(exp)
        self._writer.file_writer.add_summary(ssi)
        self._writer.flush()

    def hparams_end(self) -> None:
        """Mark the HParams session finished (only written when the run completes)."""
        if not self.enabled or self._session_end is None:
            return
        self._writer.file_writer.add_summary(self._session_end)
        self._writer.flush()

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if not self.enabled:
            return
        for tag, value in values.items():
            if value is not None:
                self._writer.add_scalar(tag, float(value), step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _hparam_value(value: Any) -> Any:
    if value is None:
        return "None"
    if isinstance(value, (bool, int, float, str)):
        return value
    return str(value)
