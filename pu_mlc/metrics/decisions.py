"""From scores to decisions: the chance level of a split, and the threshold that turns scores into
yes/no answers, chosen on labels that are not the ones reported.

Why this exists: mAP only ranks, so a model that calls every image positive (or none) can still
show a fair mAP. OF1/CF1 judge the decisions, and decisions need a threshold. At a fixed 0.5 a
short or unbalanced training (sigmoid scores all near 0.5, or all far below it) gives F1 values
that say more about the calibration than about the ranking; the published code instead reports the
best F1 over a sweep of thresholds *on the test set*, which overstates what a deployed model
gets. Here the threshold is chosen on the validation split (the honest protocol) and then
applied, unchanged, to the test set and to ``pu-mlc predict``.

The chance level of mAP is the mean class prevalence: a ranking that ignores the image has, for
each class, an expected precision equal to the share of positives, so a model near that level
has learned little. Every report states it beside the mAP it makes sense of.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import numpy as np
from numpy.typing import ArrayLike

from .ap import PUBLISHED_F1_THRESHOLDS, _as_arrays, _f1_from_counts, _threshold_counts

#: How a threshold is chosen, in words (``metrics.json``, the report and predict's CSV quote it).
CRITERION = "the threshold of the published sweep 0.01..0.99 with the best OF1"


def chance_map(positives: ArrayLike, valid: Optional[ArrayLike] = None) -> float:
    """mAP (%) of a ranking that ignores the images: 100 x the mean over classes of the share of
    positives among the (valid) images. A class without positives counts 0, as in mAP."""
    positives = np.asarray(positives).astype(bool)
    if positives.ndim != 2 or positives.shape[1] == 0:
        raise ValueError(f"positives must have shape (N, C) with C >= 1, got {positives.shape}")
    valid = np.ones_like(positives) if valid is None else np.asarray(valid).astype(bool)
    counted = valid.sum(axis=0)
    prevalence = np.divide((positives & valid).sum(axis=0), counted,
                           out=np.zeros(positives.shape[1]), where=counted > 0)
    return float(100.0 * prevalence.mean())


def choose_threshold(scores: ArrayLike, positives: ArrayLike, valid: Optional[ArrayLike] = None,
                     thresholds: Sequence[float] = PUBLISHED_F1_THRESHOLDS) -> Dict[str, float]:
    """One global threshold for every class: the first of ``thresholds`` with the best overall
    F1 on these labels (only ``valid`` entries count). Returns ``{"value", "OF1", "CF1"}``,
    the F1 values being those on these same labels.

    Global rather than per class because the labels it is chosen on are the validation split's
    known entries: at 10% known labels a class has a handful of known positives there, too few
    to place a threshold per class without fitting noise.
    """
    scores, positives, valid = _as_arrays(scores, positives, valid)
    grid = np.asarray(thresholds, dtype=np.float64)
    if grid.size == 0:
        raise ValueError("choose_threshold needs at least one candidate threshold")
    metrics = _f1_from_counts(*_threshold_counts(scores, positives, valid, grid))
    best = int(np.argmax(metrics["OF1"]))
    return {"value": float(grid[best]), "OF1": float(metrics["OF1"][best]),
            "CF1": float(metrics["CF1"][best])}


def decide(scores: ArrayLike, thresholds: ArrayLike) -> np.ndarray:
    """Boolean decisions ``score >= threshold`` (a scalar, or one threshold per class)."""
    scores = np.asarray(scores, dtype=np.float64)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.ndim not in (0, 1) or (thresholds.ndim == 1 and
                                         thresholds.shape[0] != scores.shape[-1]):
        raise ValueError(f"thresholds must be one value or one per class ({scores.shape[-1]}), "
                         f"got shape {thresholds.shape}")
    return scores >= thresholds


def f1_at(scores: ArrayLike, positives: ArrayLike, thresholds: ArrayLike,
          valid: Optional[ArrayLike] = None) -> Dict[str, float]:
    """OP/OR/OF1/CP/CR/CF1 (%) of the decisions ``score >= threshold`` (one threshold, or one
    per class); the same definitions as :func:`pu_mlc.metrics.ap.f1_scores`, which this equals
    for a single threshold."""
    scores, positives, valid = _as_arrays(scores, positives, valid)
    decided = decide(scores, thresholds) & valid
    counts = (np.sum(decided & positives, axis=0)[None, :].astype(np.float64),
              np.sum(decided, axis=0)[None, :].astype(np.float64),
              np.sum(positives & valid, axis=0).astype(np.float64))
    return {key: float(value[0]) for key, value in _f1_from_counts(*counts).items()}
