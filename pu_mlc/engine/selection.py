"""Which epoch (and which of the regular / EMA model) a run reports: the two protocols.

``paper``: every epoch both models are scored on the *test* set and the best score over epochs
is reported, exactly as the published code does. That selects on the test set, so it is an
optimistic estimate. ``honest``: both models are scored on a validation split (carved from the
training images, with partial labels only), the best validation epoch/model is selected, and the
test set is scored only for that selection: the reported number is a real held-out estimate.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional


@dataclass
class Selection:
    protocol: str
    best_score: float = float("-inf")   # selection metric (paper: test mAP, honest: val mAP)
    best_epoch: int = -1                # 0-based epoch index
    best_model: str = ""                # 'regular' | 'ema'
    test_map: Optional[float] = None    # test mAP of the selected epoch/model
    test_summary: Optional[dict] = None

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
