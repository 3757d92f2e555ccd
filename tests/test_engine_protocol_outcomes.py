"""What a run states about its selected model beyond mAP, checked against independent
recomputations: the chance mAP of the test split (from the test annotations read with
pycocotools), the decision threshold chosen on the validation split (from the model's own
validation scores), OF1/CF1 at that threshold (from the test scores the run kept), and whether
the validation split is the dataset's own or held out from the training images.

Tiny real runs: EfficientNet-Lite0 with its packaged weights at 32 px, one epoch, on the CPU.
"""

from __future__ import annotations

import numpy as np
import pytest

from builders import annotated
from engine_helpers import one_torch_thread, small_config  # noqa: F401 (autouse fixture)
from pu_mlc.engine import fit
from pu_mlc.inference import evaluate_split, load_run
from pu_mlc.metrics import (PUBLISHED_F1_THRESHOLDS, best_threshold_f1, decode_scores,
                            f1_scores)


@pytest.fixture(scope="module")
def honest(coco_format_root, module_tmp):
    out = module_tmp / "honest"
    return out, fit(small_config(coco_format_root, out, protocol="honest"))["result"]


@pytest.fixture(scope="module")
def paper(coco_format_root, module_tmp):
    out = module_tmp / "paper"
    return out, fit(small_config(coco_format_root, out, protocol="paper"))["result"]


def test_the_chance_map_and_the_all_positive_f1_come_from_the_test_annotations(
        honest, paper, coco_format_root):
    _, positives = annotated(coco_format_root)
    expected = 100 * positives.mean(axis=0).mean()
    everything = f1_scores(np.ones(positives.shape), positives, threshold=0.5)
    for _, result in (honest, paper):
        assert result["chance_mAP"] == pytest.approx(expected, abs=1e-9)
        for key in ("OF1", "CF1", "OP", "OR"):       # what deciding nothing earns
            assert result["all_positive_f1"][key] == pytest.approx(everything[key], abs=1e-9)


def test_honest_thresholds_are_chosen_on_the_validation_split_of_the_selected_weights(
        honest, coco_format_root):
    out, result = honest
    run = load_run(out / "checkpoints" / "best.pt", device="cpu")
    assert run.which == result["selected_model"] and run.epoch == result["selected_epoch"]
    val = evaluate_split(run, coco_format_root, split="val")
    brute = [f1_scores(val.scores, val.positives, threshold=t, valid=val.valid)["OF1"]
             for t in PUBLISHED_F1_THRESHOLDS]
    expected = PUBLISHED_F1_THRESHOLDS[int(np.argmax(brute))]
    thresholds = result["thresholds"]
    assert thresholds["kind"] == "global" and thresholds["chosen_on"] == "val"
    assert thresholds["values"] == [expected] * len(run.class_names)
    assert "validation" in thresholds["criterion"]
    assert result["test_f1"]["threshold_chosen_on"] == "val"


def test_honest_test_f1_is_recomputed_from_the_kept_scores_at_the_chosen_threshold(
        honest, coco_format_root):
    out, result = honest
    files, positives = annotated(coco_format_root)
    kept = result["test_scores"]
    scores = decode_scores(kept)
    assert kept["images"] == files and scores.shape == positives.shape
    threshold = result["thresholds"]["values"][0]
    again = f1_scores(scores, positives, threshold=threshold)
    for key in ("OF1", "CF1", "OP", "OR", "CP", "CR"):
        assert result["test_f1"][key] == pytest.approx(again[key], abs=1e-9), key
    # the kept scores are the selected model's: scoring the test split again gives them
    run = load_run(out / "checkpoints" / "best.pt", device="cpu")
    np.testing.assert_allclose(evaluate_split(run, coco_format_root).scores, scores,
                               rtol=0, atol=1e-6)


def test_paper_f1_is_the_official_sweep_on_test_and_says_so(paper, coco_format_root):
    _, result = paper
    _, positives = annotated(coco_format_root)
    sweep = best_threshold_f1(decode_scores(result["test_scores"]), positives)
    assert result["test_f1"]["OF1"] == pytest.approx(sweep["OF1"], abs=1e-9)
    assert result["test_f1"]["CF1"] == pytest.approx(sweep["CF1"], abs=1e-9)
    assert result["thresholds"]["chosen_on"] == "test"
    assert result["thresholds"]["values"][0] == sweep["OF1_threshold"]
    assert "optimistic" in result["thresholds"]["criterion"]
    assert "optimistic" in result["test_f1"]["how"]
    assert result["validation"] is None


def test_the_validation_split_is_named_as_the_datasets_own_or_held_out_from_train(
        honest, coco2014_root, tmp_path):
    _, result = honest
    assert result["validation"]["source"] == "own"
    assert result["validation"]["known_fraction"] == pytest.approx(0.5, abs=0.2)
    held = fit(small_config(coco2014_root, tmp_path / "run", dataset="COCO2014",
                            protocol="honest", val_fraction=0.25))
    validation = held["result"]["validation"]
    assert validation["source"] == "held_out" and "held out" in validation["text"]
    assert validation["images"] == held["data"]["val_images"]
