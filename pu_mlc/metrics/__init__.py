"""Evaluation metrics: ASL's mAP and per-class AP, OF1/CF1, and exact distributed gathering.

:mod:`pu_mlc.metrics.ap` computes metrics from full ``(N, C)`` score and label arrays;
:mod:`pu_mlc.metrics.distributed` makes sure those arrays hold every test image exactly once when
evaluation is split across processes.
"""

from .ap import (PUBLISHED_F1_THRESHOLDS, average_precision, best_threshold_f1,
                 evaluation_summary, f1_scores, mean_average_precision)
from .distributed import ShardedEvalSampler, gather_predictions

__all__ = [
    "PUBLISHED_F1_THRESHOLDS", "ShardedEvalSampler", "average_precision", "best_threshold_f1",
    "evaluation_summary", "f1_scores", "gather_predictions", "mean_average_precision",
]
