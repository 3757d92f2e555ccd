"""mAP is ASL's definition (SPEC.md section 5); F1 metrics and the summary are as documented."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from pu_mlc.metrics import (PUBLISHED_F1_THRESHOLDS, average_precision, best_threshold_f1,
                            evaluation_summary, f1_scores, mean_average_precision)


def reference_ap(scores, positives):
    """SPEC section 5 for one class, with ASL's tie order (equal scores: larger index first)."""
    order = sorted(range(len(scores)), key=lambda i: (scores[i], i), reverse=True)
    hits, total = 0, 0.0
    for rank, i in enumerate(order, start=1):
        if positives[i]:
            hits += 1
            total += hits / rank
    return total / (sum(bool(p) for p in positives) + 1e-8)


def random_problem(n=40, c=6, seed=0, ties=False):
    rng = np.random.default_rng(seed)
    scores = rng.random((n, c))
    if ties:
        scores = np.round(scores, 1)
    positives = rng.random((n, c)) < 0.3
    positives[:, 0] = False                      # a class without positives
    positives[0, 1:] = True                      # every other class has one
    return scores, positives


@pytest.mark.parametrize("ties", [False, True])
def test_average_precision_equals_the_spec_definition_class_by_class(ties):
    scores, positives = random_problem(ties=ties, seed=1)
    ap = average_precision(scores, positives)
    expected = [reference_ap(scores[:, j].tolist(), positives[:, j].tolist())
                for j in range(scores.shape[1])]
    np.testing.assert_allclose(ap, expected, rtol=0, atol=1e-12)


def test_average_precision_equals_sklearn_on_scores_without_ties():
    scores, positives = random_problem(n=200, c=8, seed=2)
    ap = average_precision(scores, positives)
    with_positives = positives.any(axis=0)
    expected = np.array([average_precision_score(positives[:, j], scores[:, j])
                         for j in np.flatnonzero(with_positives)])
    np.testing.assert_allclose(ap[with_positives], expected, rtol=0, atol=1e-7)
    np.testing.assert_allclose(100 * expected.mean(),
                               mean_average_precision(scores[:, with_positives],
                                                      positives[:, with_positives]), atol=1e-5)


def test_classes_without_positives_count_zero_in_the_mean():
    scores, positives = random_problem(seed=3)
    ap = average_precision(scores, positives)
    assert ap[0] == 0.0 and (ap[1:] > 0).all()
    assert mean_average_precision(scores, positives) == pytest.approx(100 * ap.sum() / ap.size,
                                                                      abs=1e-12)


def test_tied_scores_rank_the_larger_index_first_like_asl():
    # ASL: output.argsort()[::-1]; with a stable sort the later of two tied images comes first.
    assert average_precision(np.array([[0.5], [0.5]]), np.array([[True], [False]]))[0] == \
        pytest.approx(0.5, abs=1e-8)
    assert average_precision(np.array([[0.5], [0.5]]), np.array([[False], [True]]))[0] == \
        pytest.approx(1.0, abs=1e-7)


def test_a_perfect_ranking_has_ap_one_and_a_reversed_one_follows_the_formula():
    scores = np.array([[0.9], [0.8], [0.3], [0.1]])
    assert average_precision(scores, np.array([[1], [1], [0], [0]]))[0] == pytest.approx(1.0)
    # positives at ranks 3 and 4: (1/3 + 2/4) / 2
    assert average_precision(scores, np.array([[0], [0], [1], [1]]))[0] == \
        pytest.approx((1 / 3 + 2 / 4) / 2)


@pytest.mark.parametrize("ties", [False, True])
def test_valid_masking_equals_average_precision_on_the_valid_subset(ties):
    scores, positives = random_problem(n=60, seed=4, ties=ties)
    valid = np.random.default_rng(5).random(scores.shape) < 0.6
    masked = average_precision(scores, positives, valid)
    for j in range(scores.shape[1]):
        keep = valid[:, j]
        subset = average_precision(scores[keep, j][:, None], positives[keep, j][:, None])[0]
        assert masked[j] == pytest.approx(subset, abs=1e-12)
    scrambled = np.where(valid, scores, np.nan)
    np.testing.assert_allclose(average_precision(scrambled, ~positives & ~valid | positives & valid,
                                                 valid), masked, atol=1e-12)


def test_positives_given_as_plus_minus_one_are_refused():
    with pytest.raises(ValueError, match="targets == 1"):
        average_precision(np.zeros((3, 2)), np.array([[1, -1], [-1, 1], [1, 1]]))


def test_nan_scores_are_refused():
    with pytest.raises(ValueError, match="NaN"):
        mean_average_precision(np.array([[np.nan], [0.2]]), np.array([[True], [False]]))


def test_empty_inputs_give_zero():
    assert average_precision(np.zeros((0, 3)), np.zeros((0, 3), dtype=bool)).tolist() == [0, 0, 0]
    assert mean_average_precision(np.zeros((0, 3)), np.zeros((0, 3), dtype=bool)) == 0.0


HAND_SCORES = np.array([[0.9, 0.2, 0.55],
                        [0.6, 0.7, 0.6],
                        [0.3, 0.8, 0.2],
                        [0.1, 0.4, 0.1]])
HAND_POSITIVES = np.array([[1, 0, 0],
                           [0, 1, 0],
                           [1, 1, 0],
                           [0, 0, 1]], dtype=bool)


def test_f1_scores_on_a_hand_made_example():
    # at 0.5: correct (1, 2, 0), predicted (2, 2, 2), positives (2, 2, 1)
    out = f1_scores(HAND_SCORES, HAND_POSITIVES, threshold=0.5)
    assert out["OP"] == pytest.approx(100 * 3 / 6)
    assert out["OR"] == pytest.approx(100 * 3 / 5)
    assert out["OF1"] == pytest.approx(100 * 2 * 0.5 * 0.6 / 1.1)
    assert out["CP"] == pytest.approx(100 * (1 / 2 + 2 / 2 + 0) / 3)
    assert out["CR"] == pytest.approx(100 * (1 / 2 + 2 / 2 + 0) / 3)
    assert out["CF1"] == pytest.approx(50.0)
    assert out["threshold"] == 0.5


def test_a_score_equal_to_the_threshold_is_a_positive_prediction():
    out = f1_scores(np.array([[0.5]]), np.array([[True]]), threshold=0.5)
    assert out["OP"] == 100.0 and out["OR"] == 100.0 and out["CF1"] == 100.0


def test_f1_guards_zero_divisions_with_zero():
    scores = np.array([[0.1, 0.9], [0.2, 0.8]])
    positives = np.array([[False, False], [False, False]])
    out = f1_scores(scores, positives, threshold=0.5)
    assert out == {"OP": 0.0, "OR": 0.0, "OF1": 0.0, "CP": 0.0, "CR": 0.0, "CF1": 0.0,
                   "threshold": 0.5}


def test_f1_ignores_entries_that_are_not_valid():
    valid = np.ones_like(HAND_POSITIVES)
    valid[1, 0] = valid[3, 2] = False
    out = f1_scores(HAND_SCORES, HAND_POSITIVES, valid=valid)
    changed_scores, changed_positives = HAND_SCORES.copy(), HAND_POSITIVES.copy()
    changed_scores[1, 0], changed_positives[3, 2] = 0.0, False
    assert out == f1_scores(changed_scores, changed_positives, valid=valid)
    # class 0 without image 1: correct 1, predicted 1, positives 2; class 2: positives 0
    assert out["CP"] == pytest.approx(100 * (1 + 1 + 0) / 3)
    assert out["CR"] == pytest.approx(100 * (0.5 + 1 + 0) / 3)


def test_best_threshold_f1_is_the_published_sweep_of_99_thresholds():
    assert len(PUBLISHED_F1_THRESHOLDS) == 99
    assert PUBLISHED_F1_THRESHOLDS[0] == 0.01 and 0.98 < PUBLISHED_F1_THRESHOLDS[-1] < 1.0
    scores, positives = random_problem(n=50, seed=6)
    best = best_threshold_f1(scores, positives)
    sweep = [f1_scores(scores, positives, threshold=t) for t in PUBLISHED_F1_THRESHOLDS]
    assert best["OF1"] == pytest.approx(max(s["OF1"] for s in sweep), abs=1e-12)
    assert best["CF1"] == pytest.approx(max(s["CF1"] for s in sweep), abs=1e-12)
    first_best = next(s for s in sweep if s["OF1"] == pytest.approx(best["OF1"], abs=1e-12))
    assert best["OF1_threshold"] == first_best["threshold"]
    assert best["OF1"] >= f1_scores(scores, positives, threshold=0.5)["OF1"]


def test_evaluation_summary_is_json_serialisable_and_consistent():
    scores, positives = random_problem(seed=7)
    names = [f"class_{j}" for j in range(scores.shape[1])]
    summary = evaluation_summary(scores, positives, names)
    assert json.loads(json.dumps(summary)) == summary
    assert summary["mAP"] == pytest.approx(mean_average_precision(scores, positives))
    assert list(summary["per_class_ap"]) == names
    assert np.mean(list(summary["per_class_ap"].values())) == pytest.approx(summary["mAP"])
    assert summary["classes_without_positives"] == ["class_0"]
    assert summary["OF1"] == pytest.approx(f1_scores(scores, positives)["OF1"])
    assert summary["CF1"] == pytest.approx(f1_scores(scores, positives)["CF1"])
    assert summary["num_images"] == scores.shape[0]
    assert summary["best_threshold_f1_optimistic"]["OF1"] >= summary["OF1"]


def test_evaluation_summary_refuses_class_names_that_do_not_fit():
    scores, positives = random_problem(c=3)
    with pytest.raises(ValueError, match="class names"):
        evaluation_summary(scores, positives, ["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        evaluation_summary(scores, positives, ["a", "b", "a"])
