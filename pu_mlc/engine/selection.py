"""The selection so far: which epoch and which of the regular / EMA model a run reports.

Kept by a protocol (:mod:`pu_mlc.engine.protocols`, which explains the two ways of selecting) and
saved in ``last.pt`` so a resumed run continues the same selection. Epochs are 1-based; 0 means
no epoch selected yet. Besides the score, the selection keeps what the run reports about the
selected model's decisions: the threshold chosen for it (on validation under ``honest``), its
test OF1/CF1 at that threshold and its exact test scores (``pu_mlc.metrics.saved_scores``), so
``metrics.json`` states them and a resumed run keeps them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional


@dataclass
class Selection:
    protocol: str
    best_score: float = float("-inf")   # selection metric (paper: test mAP, honest: val mAP)
    best_epoch: int = 0                 # 1-based epoch; 0 = none yet
    best_model: str = ""                # 'regular' | 'ema'
    test_map: Optional[float] = None    # test mAP of the selected epoch/model
    test_summary: Optional[dict] = None
    thresholds: Optional[dict] = None   # {kind, values (one per class), chosen_on, criterion}
    test_f1: Optional[dict] = None      # OF1/CF1 (and OP/OR/CP/CR) of the selected model on test
    test_scores: Optional[dict] = None  # its test scores (encode_scores), or why they are omitted

    def consider(self, epoch: int, scores: dict[str, float]) -> bool:
        """Record this epoch if its best model beats the best so far; return whether it did."""
        model = max(scores, key=lambda k: scores[k])
        if scores[model] > self.best_score:
            self.best_score, self.best_epoch, self.best_model = scores[model], epoch, model
            return True
        return False

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict) -> "Selection":
        return cls(**state)
