"""The selected model's test scores, kept in ``metrics.json`` so every reported F1 can be checked.

Why: OF1/CF1 depend on a threshold, and a reader who doubts a number should be able to recompute
it from the run's own files, without the model, torch or the images. The scores are stored
exactly (float32, base64 of the little-endian bytes, row-major), with the image file names in
the order of the rows, so a recomputation gives the engine's values to the last bit. Only
splits up to :data:`MAX_ENCODED_ENTRIES` scores are kept (``metrics.json`` is rewritten every epoch and
read by every report); a larger split records why it was left out, and ``pu-mlc evaluate``
recomputes its scores from ``best.pt``.
"""

from __future__ import annotations

import base64
from typing import Any, Optional, Sequence

import numpy as np

#: Scores (images x classes) kept at most: VOC-2007's test split (4,952 x 20) fits; COCO's
#: val2014 (40,504 x 80) does not.
MAX_ENCODED_ENTRIES = 100_000
ENCODING = "base64 of float32 little-endian, row-major (images x classes)"


def encode_scores(scores: np.ndarray, images: Optional[Sequence[str]] = None,
                  max_entries: int = MAX_ENCODED_ENTRIES) -> dict[str, Any]:
    """``scores`` (N, C) as a JSON-ready dict: exact values, or the reason they were left out."""
    scores = np.asarray(scores, dtype=np.float32)
    if scores.ndim != 2:
        raise ValueError(f"scores must have shape (N, C), got {scores.shape}")
    n, c = scores.shape
    if n * c > max_entries:
        return {"shape": [n, c], "omitted": f"{n * c:,} scores exceed the {max_entries:,} kept "
                                            f"in metrics.json; 'pu-mlc evaluate' recomputes "
                                            f"them from best.pt"}
    data = np.ascontiguousarray(scores, dtype="<f4").tobytes()
    out: dict[str, Any] = {"shape": [n, c], "encoding": ENCODING,
                           "data": base64.b64encode(data).decode("ascii")}
    if images is not None:
        if len(images) != n:
            raise ValueError(f"{len(images)} image names for {n} rows of scores")
        out["images"] = [str(name) for name in images]
    return out


def decode_scores(saved: dict[str, Any]) -> np.ndarray:
    """The float32 (N, C) scores of :func:`encode_scores`; ``ValueError`` when they were left
    out or the record is damaged."""
    if "data" not in saved:
        raise ValueError(f"no scores saved: {saved.get('omitted', 'the record has no data')}")
    if saved.get("encoding") != ENCODING:
        raise ValueError(f"unknown score encoding {saved.get('encoding')!r}")
    n, c = (int(v) for v in saved["shape"])
    values = np.frombuffer(base64.b64decode(saved["data"]), dtype="<f4")
    if values.size != n * c:
        raise ValueError(f"saved scores hold {values.size} values, their shape says {n} x {c}")
    return values.reshape(n, c).astype(np.float32)
