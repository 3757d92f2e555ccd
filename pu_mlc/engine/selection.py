"""The selection so far: which epoch and which of the regular / EMA model a run reports.

Kept by a protocol (:mod:`pu_mlc.engine.protocols`, which explains the two ways of selecting) and
saved in ``last.pt`` so a resumed run continues the same selection. Epochs are 1-based; 0 means
no epoch selected yet.
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
