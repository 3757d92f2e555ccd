"""The partial-label protocol (MLC-PL) and the label statistics derived from it.

The paper's benchmark hides a fraction of the training label entries: a mask drawn with
``np.random.seed(0)`` over the whole training label matrix keeps each entry with probability
``prob`` (SPEC section 1). Results are only comparable with published numbers when exactly the
published entries are kept, so :func:`partial_labels` reproduces that draw element for element
while leaving the caller's global NumPy random state alone. The label co-occurrence matrix of the
SSGRL head is computed from the *partial* labels, as published; the honest-protocol hold-out split
lives here too because it is drawn from the same training order.
"""

from __future__ import annotations

import logging

import numpy as np


log = logging.getLogger(__name__)


def partial_labels(labels: np.ndarray, prob: float, seed: int = 0) -> np.ndarray:
    """Keep each label entry with probability ``prob`` (seed-0 legacy rule); others become 0.

    Equal to ``np.random.seed(seed); labels * (np.random.random(labels.shape) < prob)``, the
    published mask, computed with a private ``RandomState`` (same Mersenne-Twister stream) so
    the global RNG is not touched. ``prob == 1`` returns a copy of ``labels`` (full-label MLC).
    Returns int8 in {-1, 0, +1}.
    """
    if not 0.0 < prob <= 1.0:
        raise ValueError(f"prob = {prob} must be in (0, 1]: the fraction of training "
                          f"label entries kept")
    labels = np.asarray(labels)
    if prob == 1.0:
        return labels.astype(np.int8, copy=True)
    keep = np.random.RandomState(seed).random_sample(labels.shape) < prob
    out = (labels * keep).astype(np.int8)
    log.info("partial labels: kept %d of %d entries (prob %.3g, seed %d)", int(keep.sum()),
             keep.size, prob, seed)
    return out


def label_cooccurrence(partial: np.ndarray) -> np.ndarray:
    """Conditional co-occurrence ``A[i, j] = P(known +1 on j | known +1 on i)``, float32 C x C.

    Counts images whose partial labels are +1 on both ``i`` and ``j``, divided by those with +1
    on ``i`` (so the diagonal is 1). A class with no known positive gets a row of zeros instead
    of the published code's NaN row.
    """
    pos = (np.asarray(partial) == 1).astype(np.float64)
    counts = pos.T @ pos
    diag = np.diag(counts).copy()
    out = np.zeros_like(counts)
    nonzero = diag > 0
    out[nonzero] = counts[nonzero] / diag[nonzero, None]
    if not nonzero.all():
        log.warning("label co-occurrence: %d class(es) without a known positive get a zero row",
                    int((~nonzero).sum()))
    return out.astype(np.float32)


def holdout_indices(n: int, fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Split ``range(n)`` into (train, val) index arrays: sorted, disjoint, deterministic.

    ``round(fraction * n)`` images go to validation, clamped so both parts keep at least one image
    when ``n >= 2``. Used by the honest protocol when a dataset ships no validation split.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"val_fraction = {fraction} must be in (0, 1)")
    if n < 0:
        raise ValueError(f"n = {n} must be >= 0")
    if n < 2:
        return np.arange(n, dtype=np.int64), np.zeros(0, dtype=np.int64)
    n_val = int(min(max(round(fraction * n), 1), n - 1))
    perm = np.random.RandomState(seed).permutation(n)
    return np.sort(perm[n_val:]).astype(np.int64), np.sort(perm[:n_val]).astype(np.int64)
