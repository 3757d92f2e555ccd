"""Evaluation metrics: ASL's mAP and per-class AP, OF1/CF1, and exact distributed gathering.

:mod:`pu_mlc.metrics.ap` computes metrics from full ``(N, C)`` score and label arrays;
:mod:`pu_mlc.metrics.distributed` makes sure those arrays hold every test image exactly once when
evaluation is split across processes.
"""

from .ap import (PUBLISHED_F1_THRESHOLDS, average_precision, best_threshold_f1,
                 evaluation_summary, f1_scores, mean_average_precision)
from .decisions import chance_map, choose_threshold, decide
from .distributed import ShardedEvalSampler, gather_predictions
from .saved_scores import decode_scores, encode_scores

__all__ = [
    "PUBLISHED_F1_THRESHOLDS", "ShardedEvalSampler", "average_precision", "best_threshold_f1",
    "chance_map", "choose_threshold", "decide", "decode_scores", "encode_scores",
    "evaluation_summary", "f1_scores", "gather_predictions", "mean_average_precision",
]
