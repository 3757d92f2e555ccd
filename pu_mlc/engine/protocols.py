"""Which epoch (and which of the regular / EMA model) a run reports: the two protocols.

``paper``: every epoch both models are scored on the *test* set and the best score over epochs
is reported, exactly as the published code does. That selects on the test set, so it is an
optimistic estimate. ``honest``: both models are scored on a validation split (carved from the
training images, with partial labels only), the best validation epoch/model is selected, and the
test set is scored only for that selection: the reported number is a real held-out estimate.

A protocol owns everything that differs between the two: which splits it scores each epoch, how
it selects, the scalars it sends to TensorBoard and the scores in the epoch's log line. The
training loop (:mod:`pu_mlc.engine.fit`) calls the same four methods either way.

Decisions, not only rankings. When an epoch becomes the selection, the protocol also fixes the
threshold that turns the selected model's scores into decisions and reports the test OF1/CF1 at
it: under ``honest`` the global threshold with the best OF1 on the validation split's known
labels (``pu_mlc.metrics.decisions``), applied unchanged to the test set; under ``paper`` the
published sweep on the test set itself, labelled as optimistic. ``result()`` (``metrics.json``)
states that threshold, the test split's chance mAP (its mean class prevalence) and the OF1/CF1
of calling every label positive (the F1 a model that decides nothing gets), where the
validation split came from, and the selected model's exact test scores, so every number a
report shows can be recomputed from the run's own files.
"""

from __future__ import annotations

from typing import Callable, Mapping, Optional

import numpy as np
import torch
from torch import nn

from ..choices import F1_MODES, PROTOCOLS
from ..metrics import chance_map, choose_threshold, encode_scores, f1_scores
from ..metrics.decisions import CRITERION
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
        #: mAP of a ranking that ignores the images on this test split (its class prevalence)
        self.chance_map = chance_map(test.positives, test.valid)
        #: OF1/CF1 of calling every label positive: what a model that decides nothing earns
        everything = f1_scores(np.ones(test.positives.shape), test.positives, threshold=0.5,
                               valid=test.valid)
        self.all_positive_f1 = {k: everything[k] for k in ("OF1", "CF1", "OP", "OR", "CP",
                                                            "CR")}

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
        """The ``result`` block of ``metrics.json``: the selected epoch and its test score, the
        test split's chance mAP, the selected model's decision threshold, its test OF1/CF1 at
        that threshold and its test scores, and where the validation split came from."""
        s = self.selection
        return {"test_mAP": s.test_map,
                "selected_epoch": s.best_epoch or None,
                "selected_model": s.best_model or None,
                "selection_metric": self.selection_metric,
                "selection_score": s.best_score if s.best_epoch else None,
                "test_summary": s.test_summary,
                "chance_mAP": self.chance_map,
                "all_positive_f1": self.all_positive_f1,
                "thresholds": s.thresholds,
                "test_f1": s.test_f1,
                "validation": self.validation(),
                "test_scores": s.test_scores}

    def validation(self) -> Optional[dict]:
        """The validation split: whether it is the dataset's own or held out from the training
        images, its size and its share of known label entries (None without one)."""
        if self.val is None:
            return None
        split = _split_of(self.val)
        own = split is not None and split.name == "val"
        valid = self.val.valid
        return {"source": "own" if own else "held_out",
                "text": ("the dataset's own validation split" if own else
                         "images held out from the training split (val_fraction)"),
                "images": int(self.val.positives.shape[0]),
                "known_fraction": float(valid.mean()) if valid is not None else 1.0}

    # --- helpers ------------------------------------------------------------------------------
    def _predict(self, models, target: EvalTarget, ctx, precision) -> dict[str, np.ndarray]:
        return predict(models, target, ctx, precision, self.to_input)

    def _keep_selected(self, summary: dict, scores: np.ndarray, threshold: float,
                       chosen_on: str, test_f1: dict) -> None:
        """Record the selected model's test summary, decision threshold, F1 and scores."""
        s = self.selection
        s.test_map, s.test_summary = summary["mAP"], summary
        num_classes = scores.shape[1]
        s.thresholds = {"kind": "global", "values": [float(threshold)] * num_classes,
                        "chosen_on": chosen_on,
                        "criterion": CRITERION + (" on the validation split's known labels"
                                                  if chosen_on == "val" else
                                                  " on the test set (paper protocol: "
                                                  "optimistic)")}
        s.test_f1 = test_f1
        s.test_scores = encode_scores(scores, _image_names(self.test, scores.shape[0]))

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
        scores = self._predict(models, self.test, ctx, precision)
        summaries = {name: summarise(v, self.test) for name, v in scores.items()}
        record["mAP"], record["mAP_ema"] = summaries["regular"]["mAP"], summaries["ema"]["mAP"]
        improved = self.selection.consider(epoch, {k: s["mAP"] for k, s in summaries.items()})
        better = max(summaries, key=lambda k: summaries[k]["mAP"])
        record.update(self._f1(summaries[better]))
        if improved:
            chosen = self.selection.best_model
            summary = summaries[chosen]
            sweep = summary["best_threshold_f1_optimistic"]
            # the published report: the best OF1 and the best CF1 over thresholds on test
            test_f1 = {"OF1": sweep["OF1"], "CF1": sweep["CF1"],
                       "OF1_threshold": sweep["OF1_threshold"],
                       "CF1_threshold": sweep["CF1_threshold"],
                       "threshold_chosen_on": "test",
                       "how": "each the best over the published threshold sweep 0.01..0.99 on "
                              "the test set (paper protocol: optimistic)"}
            self._keep_selected(summary, scores[chosen], sweep["OF1_threshold"], "test",
                                test_f1)
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
        val_scores = self._predict(models, self.val, ctx, precision)
        summaries = {name: summarise(v, self.val) for name, v in val_scores.items()}
        record["val_mAP"], record["val_mAP_ema"] = (summaries["regular"]["mAP"],
                                                    summaries["ema"]["mAP"])
        improved = self.selection.consider(epoch, {k: s["mAP"] for k, s in summaries.items()})
        if improved:
            chosen = self.selection.best_model
            threshold = choose_threshold(val_scores[chosen], self.val.positives, self.val.valid)
            scores = self._predict({chosen: models[chosen]}, self.test, ctx, precision)[chosen]
            summary = summarise(scores, self.test)
            test_f1 = f1_scores(scores, self.test.positives, threshold=threshold["value"],
                                valid=self.test.valid)
            test_f1.update(threshold_chosen_on="val", val_OF1=threshold["OF1"],
                           val_CF1=threshold["CF1"],
                           how=f"at one global threshold ({threshold['value']:.2f}) chosen on "
                               f"the validation split: {CRITERION}")
            self._keep_selected(summary, scores, threshold["value"], "val", test_f1)
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


def _split_of(target: EvalTarget):
    """The :class:`~pu_mlc.data.splits.Split` a target's loader reads (None if it has none):
    a validation split held out from train keeps the name ``train``."""
    return getattr(getattr(target.loader, "dataset", None), "split", None)


def _image_names(target: EvalTarget, rows: int) -> Optional[list[str]]:
    """The image files of a target in the order of its score rows (None when unknown)."""
    split = _split_of(target)
    files = getattr(split, "files", None)
    return list(files) if files is not None and len(files) == rows else None
