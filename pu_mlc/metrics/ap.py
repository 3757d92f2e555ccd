"""Multi-label evaluation: ASL's per-class AP and mAP, overall/per-class F1, a JSON summary.

mAP is the number PU-MLC and the methods it compares against report, computed as the ASL code
does (``SPEC.md`` section 5): for each class, rank the images by descending score, take the
precision at every rank that holds a positive, sum, and divide by ``n_pos + 1e-8``; mAP is 100 x
the mean over **all** classes, a class without positives counting 0. This equals scikit-learn's
``average_precision_score`` when scores have no ties (up to the 1e-8).

Ties: ASL sorts with ``output.argsort()[::-1]``, numpy's default (unstable) sort reversed, so its
order among tied scores is unspecified in general. We use the stable form of the same expression,
``argsort(kind="stable")[::-1]``: among tied scores the image with the *larger index* ranks first,
which is what ASL gives whenever numpy's sort happens to keep ties in index order (small arrays).

``valid`` marks the entries that are known; the others are left out of the ranking of their class
(used to validate on partially labelled data). The arrays are ``(N, C)``: ``scores`` floats (the
sigmoid outputs), ``positives`` booleans.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
from numpy.typing import ArrayLike


def _published_thresholds() -> Tuple[float, ...]:
    """0.01, 0.02, ... while < 1.0, accumulated by repeated ``+= 0.01`` like the published loop."""
    values, threshold = [], 0.01
    while threshold < 1.0:
        values.append(threshold)
        threshold += 0.01
    return tuple(values)


#: Thresholds of the published F1 sweep (99 values, 0.01 ... 0.99 up to float accumulation).
PUBLISHED_F1_THRESHOLDS: Tuple[float, ...] = _published_thresholds()


def _as_arrays(scores: ArrayLike, positives: ArrayLike, valid: Optional[ArrayLike]
               ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate and convert inputs to float64 scores, bool positives, bool valid (all (N, C))."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (N, C), got {scores.shape}")
    positives = np.asarray(positives)
    if positives.shape != scores.shape:
        raise ValueError(f"positives shape {positives.shape} differs from scores shape "
                         f"{scores.shape}")
    if positives.dtype != np.bool_:
        values = np.unique(positives)
        if not np.isin(values, (0, 1)).all():
            raise ValueError(f"positives must be booleans (or 0/1), got values {values[:5]}; "
                             f"for +1/-1/0 targets pass `targets == 1`")
        positives = positives.astype(bool)
    if valid is None:
        valid = np.ones(scores.shape, dtype=bool)
    else:
        valid = np.asarray(valid)
        if valid.shape != scores.shape:
            raise ValueError(f"valid shape {valid.shape} differs from scores shape {scores.shape}")
        valid = valid.astype(bool)
    if np.isnan(scores[valid]).any():
        raise ValueError(f"scores contain {int(np.isnan(scores[valid]).sum())} NaN values "
                         f"(did training diverge?); AP is undefined for them")
    return scores, positives, valid


def average_precision(scores: ArrayLike, positives: ArrayLike,
                      valid: Optional[ArrayLike] = None) -> np.ndarray:
    """Per-class average precision, ASL's definition (in [0, 1], shape (C,)).

    A class without (valid) positives gets 0. Entries where ``valid`` is False are ignored.
    """
    scores, positives, valid = _as_arrays(scores, positives, valid)
    n, c = scores.shape
    if n == 0:
        return np.zeros(c)
    order = np.argsort(scores, axis=0, kind="stable")[::-1]
    hits = np.take_along_axis(positives & valid, order, axis=0)
    kept = np.take_along_axis(valid, order, axis=0)
    hits_so_far = np.cumsum(hits, axis=0)
    rank = np.cumsum(kept, axis=0)
    precision_at_hits = np.where(hits, hits_so_far / np.maximum(rank, 1), 0.0)
    return precision_at_hits.sum(axis=0) / (hits_so_far[-1] + 1e-8)


def mean_average_precision(scores: ArrayLike, positives: ArrayLike,
                           valid: Optional[ArrayLike] = None) -> float:
    """mAP in percent: 100 x the mean of :func:`average_precision` over all classes."""
    ap = average_precision(scores, positives, valid)
    return float(100.0 * ap.mean()) if ap.size else 0.0


def _threshold_counts(scores: np.ndarray, positives: np.ndarray, valid: np.ndarray,
                      thresholds: Sequence[float]) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per threshold and class: correct (Nc), predicted (Np) with ``score >= t``; and Ng (C,)."""
    thresholds = np.asarray(thresholds, dtype=np.float64)
    c = scores.shape[1]
    n_correct = np.zeros((thresholds.size, c))
    n_predicted = np.zeros((thresholds.size, c))
    n_positive = np.zeros(c)
    for j in range(c):
        kept = valid[:, j]
        column = np.sort(scores[kept, j])
        hits = np.sort(scores[kept & positives[:, j], j])
        n_predicted[:, j] = column.size - np.searchsorted(column, thresholds, side="left")
        n_correct[:, j] = hits.size - np.searchsorted(hits, thresholds, side="left")
        n_positive[j] = hits.size
    return n_correct, n_predicted, n_positive


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def _f1_from_counts(n_correct: np.ndarray, n_predicted: np.ndarray,
                    n_positive: np.ndarray) -> Dict[str, np.ndarray]:
    """OP/OR/OF1/CP/CR/CF1 in percent; each entry has shape (T,) for T thresholds."""
    op = _ratio(n_correct.sum(-1), n_predicted.sum(-1))
    orc = _ratio(n_correct.sum(-1), np.broadcast_to(n_positive.sum(), op.shape))
    cp = _ratio(n_correct, n_predicted).mean(-1)
    cr = _ratio(n_correct, np.broadcast_to(n_positive, n_correct.shape)).mean(-1)
    of1 = _ratio(2 * op * orc, op + orc)
    cf1 = _ratio(2 * cp * cr, cp + cr)
    return {"OP": 100 * op, "OR": 100 * orc, "OF1": 100 * of1,
            "CP": 100 * cp, "CR": 100 * cr, "CF1": 100 * cf1}


def f1_scores(scores: ArrayLike, positives: ArrayLike, threshold: float = 0.5,
              valid: Optional[ArrayLike] = None) -> Dict[str, float]:
    """Overall and per-class precision, recall and F1 at a fixed threshold, in percent.

    An entry is predicted positive when ``score >= threshold``. Overall (O*) metrics pool all
    entries; per-class (C*) metrics average precision and recall over classes and take the F1 of
    the averages (the usual MLC definitions). Zero divisions give 0: a class with no prediction
    has precision 0 (as the published code), a class with no positive has recall 0 (the published
    code gets NaN there and reports CF1 = 0).
    """
    scores, positives, valid = _as_arrays(scores, positives, valid)
    counts = _threshold_counts(scores, positives, valid, [threshold])
    out = {key: float(value[0]) for key, value in _f1_from_counts(*counts).items()}
    out["threshold"] = float(threshold)
    return out


def best_threshold_f1(scores: ArrayLike, positives: ArrayLike, valid: Optional[ArrayLike] = None,
                      thresholds: Sequence[float] = PUBLISHED_F1_THRESHOLDS) -> Dict[str, float]:
    """OPTIMISTIC: the best OF1 and the best CF1 over a threshold sweep chosen on these labels.

    Reproduces the published evaluation, which tries thresholds 0.01, 0.02, ..., 0.99 on the test
    set and reports the best OF1 and, separately, the best CF1 (each at its own threshold). Since
    the threshold is tuned on the evaluated labels, these numbers overstate what a fixed,
    validation-chosen threshold gives; use them only to compare with published tables. The first
    threshold reaching the maximum is returned.
    """
    scores, positives, valid = _as_arrays(scores, positives, valid)
    thresholds = np.asarray(thresholds, dtype=np.float64)
    if thresholds.size == 0:
        raise ValueError("best_threshold_f1 needs at least one threshold")
    metrics = _f1_from_counts(*_threshold_counts(scores, positives, valid, thresholds))
    best_of1 = int(np.argmax(metrics["OF1"]))
    best_cf1 = int(np.argmax(metrics["CF1"]))
    return {"OF1": float(metrics["OF1"][best_of1]), "OF1_threshold": float(thresholds[best_of1]),
            "CF1": float(metrics["CF1"][best_cf1]), "CF1_threshold": float(thresholds[best_cf1])}


def evaluation_summary(scores: ArrayLike, positives: ArrayLike, class_names: Sequence[str],
                       valid: Optional[ArrayLike] = None,
                       threshold: float = 0.5) -> Dict[str, object]:
    """Everything reported for one evaluation, as a JSON-serialisable dict of plain Python values.

    Keys: ``mAP`` (percent), ``per_class_ap`` ({class name: AP in percent}, whose mean is mAP),
    ``OP``, ``OR``, ``OF1``, ``CP``, ``CR``, ``CF1`` (percent, at ``threshold``), ``threshold``,
    ``num_images``, ``classes_without_positives`` (names; they count 0 in mAP), and
    ``best_threshold_f1_optimistic`` (the published test-set threshold sweep, see
    :func:`best_threshold_f1`).
    """
    scores, positives, valid = _as_arrays(scores, positives, valid)
    names: List[str] = [str(name) for name in class_names]
    if len(names) != scores.shape[1]:
        raise ValueError(f"{len(names)} class names for {scores.shape[1]} score columns")
    if len(set(names)) != len(names):
        duplicated = sorted({name for name in names if names.count(name) > 1})
        raise ValueError(f"class names must be unique, duplicated: {duplicated}")
    ap = average_precision(scores, positives, valid)
    has_positive = (positives & valid).any(axis=0)
    summary: Dict[str, object] = {
        "mAP": float(100.0 * ap.mean()) if ap.size else 0.0,
        "per_class_ap": {name: float(100.0 * value) for name, value in zip(names, ap)},
    }
    summary.update(f1_scores(scores, positives, threshold=threshold, valid=valid))
    summary["num_images"] = int(scores.shape[0])
    summary["classes_without_positives"] = [n for n, ok in zip(names, has_positive) if not ok]
    summary["best_threshold_f1_optimistic"] = best_threshold_f1(scores, positives, valid)
    return summary
