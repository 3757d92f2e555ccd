"""The MLC-PL mask, label co-occurrence and the honest hold-out split."""

import numpy as np
import pytest

from pu_mlc.data import holdout_indices, label_cooccurrence, partial_labels


def full_labels(n=4000, c=80, seed=7):
    """A realistic +1/-1 label matrix (about 3 positives per image, like COCO)."""
    rng = np.random.default_rng(seed)
    return np.where(rng.random((n, c)) < 3 / c, 1, -1).astype(np.int8)


@pytest.mark.parametrize("prob", [0.1, 0.3, 0.5, 0.9])
def test_partial_labels_equal_the_published_seed0_mask_element_for_element(prob):
    labels = full_labels()
    state = np.random.get_state()
    try:
        np.random.seed(0)
        reference = labels * (np.random.random(labels.shape) < prob)
    finally:
        np.random.set_state(state)
    assert np.array_equal(partial_labels(labels, prob), reference)


def test_partial_labels_leave_the_global_numpy_random_state_untouched():
    np.random.seed(123)
    expected_next = np.random.RandomState(123).random_sample(5)
    partial_labels(full_labels(), 0.2)
    assert np.array_equal(np.random.random(5), expected_next)


def test_partial_labels_are_int8_and_only_kept_entries_survive():
    labels = full_labels(500, 20)
    out = partial_labels(labels, 0.25)
    assert out.dtype == np.int8
    kept = out != 0
    assert np.array_equal(out[kept], labels[kept])
    assert 0.2 < kept.mean() < 0.3
    assert set(np.unique(out)) == {-1, 0, 1}


def test_prob_one_returns_the_labels_unchanged_as_a_copy():
    labels = full_labels(100, 10)
    out = partial_labels(labels, 1.0)
    assert np.array_equal(out, labels) and out.dtype == np.int8
    out[0, 0] = 0
    assert labels[0, 0] != 0


def test_another_seed_gives_another_mask():
    labels = full_labels(200, 10)
    assert not np.array_equal(partial_labels(labels, 0.5, seed=0),
                              partial_labels(labels, 0.5, seed=1))


@pytest.mark.parametrize("prob", [0.0, -0.1, 1.5])
def test_a_prob_outside_0_1_is_refused_naming_it(prob):
    with pytest.raises(ValueError, match=r"prob = .* must be in \(0, 1\]"):
        partial_labels(full_labels(10, 3), prob)


def test_label_cooccurrence_equals_hand_counts():
    partial = np.array([[1, 1, 0, -1],
                        [1, 0, 1, -1],
                        [1, 1, 1, 0],
                        [0, 1, -1, -1]], dtype=np.int8)
    # class 0 positive in rows 0,1,2; class 1 in 0,2,3; class 2 in 1,2; class 3 never.
    expected = np.array([[3 / 3, 2 / 3, 2 / 3, 0],
                         [2 / 3, 3 / 3, 1 / 3, 0],
                         [2 / 2, 1 / 2, 2 / 2, 0],
                         [0, 0, 0, 0]], dtype=np.float32)
    out = label_cooccurrence(partial)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_a_class_without_known_positives_gets_a_zero_row_not_nan():
    partial = np.array([[1, 0], [1, -1]], dtype=np.int8)
    out = label_cooccurrence(partial)
    assert np.isfinite(out).all()
    assert out[1].tolist() == [0.0, 0.0]


def test_holdout_indices_are_sorted_disjoint_complete_and_deterministic():
    train, val = holdout_indices(101, 0.1, seed=0)
    assert len(val) == 10 and len(train) == 91
    assert np.all(np.diff(train) > 0) and np.all(np.diff(val) > 0)
    assert not set(train) & set(val)
    assert sorted(set(train) | set(val)) == list(range(101))
    again = holdout_indices(101, 0.1, seed=0)
    assert np.array_equal(again[0], train) and np.array_equal(again[1], val)
    assert not np.array_equal(holdout_indices(101, 0.1, seed=1)[1], val)


@pytest.mark.parametrize("n,fraction", [(2, 0.01), (2, 0.99), (5, 0.001), (5, 0.999)])
def test_holdout_keeps_at_least_one_image_on_each_side(n, fraction):
    train, val = holdout_indices(n, fraction)
    assert len(train) >= 1 and len(val) >= 1 and len(train) + len(val) == n


def test_holdout_refuses_a_fraction_outside_0_1_naming_it():
    with pytest.raises(ValueError, match="val_fraction = 1.0"):
        holdout_indices(10, 1.0)


# --- the mask seed (--mask-seed) ------------------------------------------------------------------
def test_mask_seed_0_is_the_published_rule_and_another_seed_keeps_about_as_many_entries():
    labels, prob = full_labels(), 0.1
    state = np.random.get_state()
    try:
        np.random.seed(0)
        published = labels * (np.random.random(labels.shape) < prob)
    finally:
        np.random.set_state(state)
    seed0 = partial_labels(labels, prob, seed=0)
    seed1 = partial_labels(labels, prob, seed=1)
    assert np.array_equal(seed0, published)
    assert not np.array_equal(seed1, seed0)
    kept0, kept1 = (seed0 != 0).mean(), (seed1 != 0).mean()
    assert abs(kept1 - kept0) < 0.01 and abs(kept1 - prob) < 0.01
    assert np.array_equal(seed1[seed1 != 0], labels[seed1 != 0])


def test_the_run_data_uses_the_configs_mask_seed_and_keeps_the_same_holdout(
        coco2014_root, coco2014_dataset, tmp_path):
    """A training run's labels follow --mask-seed; the honest hold-out does not move with it."""
    import torch

    from pu_mlc.config import TrainConfig
    from pu_mlc.engine.data_setup import prepare_run_data
    from pu_mlc.engine.distributed import DistContext

    ctx = DistContext(0, 1, 0, torch.device("cpu"))
    cfg = TrainConfig(data=str(coco2014_root), dataset="COCO2014", prob=0.5, protocol="honest",
                      val_fraction=0.25, batch_size=4, workers=0, device="cpu", head="linear",
                      output_dir=str(tmp_path / "run"))
    runs = {seed: prepare_run_data(cfg.replace(mask_seed=seed), ctx) for seed in (0, 1)}
    full = coco2014_dataset.splits["train"].labels
    keep, held = holdout_indices(len(full), 0.25, seed=0)
    for seed, data in runs.items():
        expected = partial_labels(full, 0.5, seed=seed)
        assert np.array_equal(data.train.targets, expected[keep])
        assert np.array_equal(data.val.targets, expected[held])
    assert not np.array_equal(runs[0].train.targets, runs[1].train.targets)
    assert runs[0].train.split.files == runs[1].train.split.files
    assert runs[0].val.split.files == runs[1].val.split.files
