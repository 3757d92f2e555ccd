"""What a trial's ``metrics.json`` says about its selected model beyond the store's record: the
test split's chance mAP, the test OF1/CF1 at the threshold the run chose (and where it chose it),
and where its validation split came from.

Why a separate reader: the store's :class:`~tune.store.TrialRecord` holds what selection and the
summary need (scores, weights, epoch); these numbers are for reading the scores (is 25 mAP more
than chance? does the model decide anything?). They are written by the engine
(``pu_mlc.engine.protocols``, the ``result`` block) and read here without torch, so a report
never re-reads images or reloads a model. The store reads the block with the rest of the trial's
record (``TrialRecord.result``), wherever the experiment lives; a trial written before these
numbers existed gives None for each.
"""

from __future__ import annotations

import math
from typing import Any, Optional

from .store import TrialRecord

F1_KEYS = ("OF1", "CF1", "OP", "OR", "CP", "CR")


def trial_outcome(trial: TrialRecord) -> dict[str, Any]:
    """``{chance_mAP, all_positive_f1, OF1, CF1, OP, OR, CP, CR, threshold,
    threshold_chosen_on, f1_how, validation}`` of a trial's selected model (None where its
    ``metrics.json`` does not say)."""
    result = trial.result
    f1 = result.get("test_f1") if isinstance(result.get("test_f1"), dict) else {}
    thresholds = result.get("thresholds") if isinstance(result.get("thresholds"), dict) else {}
    values = thresholds.get("values") or []
    out: dict[str, Any] = {key: _number(f1.get(key)) for key in F1_KEYS}
    out.update(
        chance_mAP=_number(result.get("chance_mAP")),
        all_positive_f1={k: _number(v) for k, v in result["all_positive_f1"].items()}
        if isinstance(result.get("all_positive_f1"), dict) else None,
        threshold=_number(values[0]) if values and thresholds.get("kind") == "global" else None,
        threshold_kind=thresholds.get("kind"),
        threshold_chosen_on=thresholds.get("chosen_on"),
        f1_how=f1.get("how"),
        validation=result.get("validation") if isinstance(result.get("validation"), dict)
        else None)
    return out


def _number(value: Any) -> Optional[float]:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None
