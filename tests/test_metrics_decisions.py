"""From scores to decisions: the chance mAP of a split, the threshold chosen on other labels,
F1 of the decisions at it, and the exact test scores a run keeps so all of it can be
recomputed. References are brute force over the candidate thresholds, and scikit-learn's F1."""

from __future__ import annotations

import numpy as np
import pytest

from pu_mlc.metrics import (PUBLISHED_F1_THRESHOLDS, chance_map, choose_threshold, decide,
                            decode_scores, encode_scores, f1_scores, mean_average_precision)
from pu_mlc.metrics.decisions import f1_at


def labelled(n=200, c=5, seed=0):
    rng = np.random.default_rng(seed)
    positives = rng.random((n, c)) < np.linspace(0.1, 0.5, c)
    scores = np.clip(0.3 * positives + rng.random((n, c)) * 0.7, 0, 1).astype(np.float32)
    return scores, positives


def test_chance_map_is_the_mean_class_prevalence_and_what_a_random_ranking_scores():
    scores, positives = labelled(n=4000)
    prevalence = positives.mean(axis=0)
    assert chance_map(positives) == pytest.approx(100 * prevalence.mean())
    rng = np.random.default_rng(1)
    random_maps = [mean_average_precision(rng.random(positives.shape), positives)
                   for _ in range(5)]
    assert np.mean(random_maps) == pytest.approx(chance_map(positives), abs=1.0)


def test_chance_map_counts_only_known_entries_and_a_class_without_positives_as_zero():
    positives = np.array([[1, 0, 0], [0, 0, 1], [1, 0, 1], [0, 0, 0]], bool)
    valid = np.array([[1, 1, 1], [1, 1, 0], [1, 1, 1], [0, 1, 1]], bool)
    # class 0: 2 of 3 known; class 1: none; class 2: 1 of 3 known
    assert chance_map(positives, valid) == pytest.approx(100 * (2 / 3 + 0 + 1 / 3) / 3)


def test_the_chosen_threshold_is_the_first_of_the_sweep_with_the_best_overall_f1():
    scores, positives = labelled()
    valid = np.random.default_rng(2).random(scores.shape) < 0.4
    chosen = choose_threshold(scores, positives, valid)
    brute = [f1_scores(scores, positives, threshold=t, valid=valid)["OF1"]
             for t in PUBLISHED_F1_THRESHOLDS]
    best = int(np.argmax(brute))
    assert chosen["value"] == PUBLISHED_F1_THRESHOLDS[best]
    assert chosen["OF1"] == pytest.approx(brute[best])
    assert chosen["CF1"] == pytest.approx(
        f1_scores(scores, positives, threshold=chosen["value"], valid=valid)["CF1"])


def test_f1_of_the_decisions_equals_sklearn_and_the_fixed_threshold_f1():
    from sklearn.metrics import f1_score

    scores, positives = labelled()
    for t in (0.2, 0.45, 0.8):
        ours = f1_at(scores, positives, t)
        fixed = f1_scores(scores, positives, threshold=t)
        assert {k: ours[k] for k in ("OP", "OR", "OF1", "CP", "CR", "CF1")} == pytest.approx(
            {k: fixed[k] for k in ("OP", "OR", "OF1", "CP", "CR", "CF1")})
        assert ours["OF1"] == pytest.approx(100 * f1_score(positives, scores >= t,
                                                           average="micro"))


def test_per_class_thresholds_decide_each_class_at_its_own():
    scores, positives = labelled(c=3)
    thresholds = np.array([0.2, 0.5, 0.9])
    decided = decide(scores, thresholds)
    for j, t in enumerate(thresholds):
        assert (decided[:, j] == (scores[:, j] >= t)).all()
    with pytest.raises(ValueError, match="one per class"):
        decide(scores, [0.5, 0.5])


def test_saved_scores_decode_to_the_exact_float32_values_and_name_their_images():
    scores, _ = labelled(n=37, c=4)
    saved = encode_scores(scores, [f"img{i}.jpg" for i in range(37)])
    back = decode_scores(saved)
    assert back.dtype == np.float32 and back.shape == (37, 4)
    assert np.array_equal(back, scores)                   # bit for bit
    assert saved["images"][5] == "img5.jpg" and saved["shape"] == [37, 4]


def test_scores_of_a_large_split_are_omitted_with_the_reason():
    saved = encode_scores(np.zeros((40504, 80), np.float32))
    assert "data" not in saved and "pu-mlc evaluate" in saved["omitted"]
    with pytest.raises(ValueError, match="no scores saved"):
        decode_scores(saved)
