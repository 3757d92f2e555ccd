"""Which epoch (and which of the regular / EMA model) a run reports: the two protocols.

``paper``: every epoch both models are scored on the *test* set and the best score over epochs
is reported, exactly as the published code does. That selects on the test set, so it is an
optimistic estimate. ``honest``: both models are scored on a validation split (carved from the
training images, with partial labels only), the best validation epoch/model is selected, and the
test set is scored only for that selection: the reported number is a real held-out estimate.

A protocol owns everything that differs between the two: which splits it scores each epoch, how
it selects, the scalars it sends to TensorBoard and the scores in the epoch's log line. The
training loop (:mod:`pu_mlc.engine.fit`) calls the same four methods either way.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import torch
from torch import nn

from ..choices import F1_MODES, PROTOCOLS
from .distributed import DistContext
from .evaluate import EvalTarget, predict, summarise
from .precision import Precision
from .selection import Selection


class Protocol:
    """Per-epoch evaluation and model selection of one run (see the module docstring)."""

    name = ""
    #: What the selection score is, in words, for metrics.json and summaries.
    selection_metric = ""

    def __init__(self, test: EvalTarget, val: Optional[EvalTarget], f1_mode: str = "fixed",
                 to_input: Optional[Callable[[object], torch.Tensor]] = None):
        if f1_mode not in F1_MODES:
            raise ValueError(f"unknown F1 mode {f1_mode!r}; choose one of {', '.join(F1_MODES)}")
        self.test, self.val, self.f1_mode = test, val, f1_mode
        self.to_input = to_input
        self.selection = Selection(self.name)

    # --- the four calls of the training loop --------------------------------------------------
    def evaluate(self, record: dict, epoch: int, models: Mapping[str, nn.Module],
                 ctx: DistContext, precision: Precision) -> bool:
        """Score ``models`` ({'regular', 'ema'}) after ``epoch`` (1-based), add the scores to
        ``record`` and return whether this epoch is the new selection."""
        raise NotImplementedError

    def scalars(self, record: dict) -> dict:
        """TensorBoard scalars of one epoch's record."""
        out = {"train/loss": record["train_loss"], "train/lr": record["lr"],
               "train/images_per_second": record["images_per_second"],
               "time/train_seconds": record["train_seconds"],
               "time/eval_seconds": record["eval_seconds"],
               "selected/score": record["best_score"],
               "selected/test_mAP": record.get("selected_test_mAP")}
        return out

    def scores_text(self, record: dict) -> str:
        """The scores part of the epoch's log line."""
        raise NotImplementedError

    def result(self) -> dict:
        """The ``result`` block of ``metrics.json``: the selected epoch and its test score."""
        s = self.selection
        return {"test_mAP": s.test_map,
                "selected_epoch": s.best_epoch or None,
                "selected_model": s.best_model or None,
                "selection_metric": self.selection_metric,
                "selection_score": s.best_score if s.best_epoch else None,
                "test_summary": s.test_summary}

    # --- helpers ------------------------------------------------------------------------------
    def _score(self, models, target: EvalTarget, ctx, precision) -> dict[str, dict]:
        scores = predict(models, target, ctx, precision, self.to_input)
        return {name: summarise(s, target) for name, s in scores.items()}

    def _f1(self, summary: dict) -> dict:
        if self.f1_mode == "sweep":
            best = summary["best_threshold_f1_optimistic"]
            return {"OF1": best["OF1"], "CF1": best["CF1"]}
        return {"OF1": summary["OF1"], "CF1": summary["CF1"]}


class PaperProtocol(Protocol):
    """Best epoch and model chosen on the test set, as the published code does (optimistic)."""

    name = "paper"
    selection_metric = "test mAP (paper protocol: optimistic)"

    def evaluate(self, record, epoch, models, ctx, precision) -> bool:
        summaries = self._score(models, self.test, ctx, precision)
        record["mAP"], record["mAP_ema"] = summaries["regular"]["mAP"], summaries["ema"]["mAP"]
        improved = self.selection.consider(epoch, {k: s["mAP"] for k, s in summaries.items()})
        better = max(summaries, key=lambda k: summaries[k]["mAP"])
        record.update(self._f1(summaries[better]))
        if improved:
            self.selection.test_map = self.selection.best_score
            self.selection.test_summary = summaries[self.selection.best_model]
        record["score"] = summaries[better]["mAP"]
        return improved

    def scalars(self, record: dict) -> dict:
        return {**super().scalars(record), "test/mAP": record["mAP"],
                "test/mAP_ema": record["mAP_ema"], "test/OF1": record["OF1"],
                "test/CF1": record["CF1"]}

    def scores_text(self, record: dict) -> str:
        return (f"test mAP {record['mAP']:.2f} / EMA {record['mAP_ema']:.2f}  "
                f"OF1 {record['OF1']:.2f} CF1 {record['CF1']:.2f}")


class HonestProtocol(Protocol):
    """Chosen on a validation split; the test set is scored only for the chosen model."""

    name = "honest"
    selection_metric = "validation mAP (honest protocol)"

    def __init__(self, test, val, f1_mode="fixed", to_input=None):
        if val is None:
            raise ValueError("the honest protocol needs a validation split")
        super().__init__(test, val, f1_mode, to_input)

    def evaluate(self, record, epoch, models, ctx, precision) -> bool:
        summaries = self._score(models, self.val, ctx, precision)
        record["val_mAP"], record["val_mAP_ema"] = (summaries["regular"]["mAP"],
                                                    summaries["ema"]["mAP"])
        improved = self.selection.consider(epoch, {k: s["mAP"] for k, s in summaries.items()})
        if improved:
            chosen = self.selection.best_model
            summary = self._score({chosen: models[chosen]}, self.test, ctx, precision)[chosen]
            self.selection.test_map, self.selection.test_summary = summary["mAP"], summary
        record["score"] = max(s["mAP"] for s in summaries.values())
        return improved

    def scalars(self, record: dict) -> dict:
        return {**super().scalars(record), "val/mAP": record["val_mAP"],
                "val/mAP_ema": record["val_mAP_ema"]}

    def scores_text(self, record: dict) -> str:
        return f"val mAP {record['val_mAP']:.2f} / EMA {record['val_mAP_ema']:.2f}"


def build_protocol(name: str, test: EvalTarget, val: Optional[EvalTarget], *,
                   f1_mode: str = "fixed",
                   to_input: Optional[Callable[[object], torch.Tensor]] = None) -> Protocol:
    classes = {"paper": PaperProtocol, "honest": HonestProtocol}
    if name not in classes:
        raise ValueError(f"unknown protocol {name!r}; choose one of {', '.join(PROTOCOLS)}")
    return classes[name](test, val, f1_mode, to_input)
