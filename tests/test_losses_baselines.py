"""Baseline losses equal their direct formulas, on the same per-image scale as the PU loss.

Scale: summed over classes, averaged over images; with ignored entries, C x mean over the kept
entries of the batch. References are written per entry with scalar math.
"""

from __future__ import annotations

import math

import pytest
import torch

from pu_mlc.config import LOSSES as CONFIG_LOSSES  # the config collects the owner's list
from pu_mlc.losses import (LOSS_NAMES, AssumeNegativeBCELoss, AsymmetricLoss, BCELoss,
                           PartialBCELoss, PULoss, build_loss)


def batch(n=6, c=5, seed=0, with_unknown=True):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * 3
    low = -1
    targets = torch.randint(low, 2, (n, c), generator=g)
    if not with_unknown:
        targets = torch.where(targets == 0, torch.ones_like(targets), targets)
    return z, targets


def bce_entry(z, y):
    p = 1 / (1 + math.exp(-z))
    return -(y * math.log(p) + (1 - y) * math.log(1 - p))


def asl_entry(z, y, gamma_neg=4.0, gamma_pos=1.0, clip=0.05, eps=1e-8):
    """ASL for one entry, as in the ASL paper: shifted probability for negatives, focusing."""
    p = torch.sigmoid(z)
    if y == 1:
        return -((1 - p) ** gamma_pos) * torch.log(torch.clamp(p, min=eps))
    p_shifted = torch.clamp(p - clip, min=0.0)
    return -(p_shifted ** gamma_neg) * torch.log(torch.clamp(1 - p_shifted, min=eps))


def value_and_grad(fn, z):
    leaf = z.detach().clone().requires_grad_(True)
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad


def close(a, b, tol=1e-10):
    torch.testing.assert_close(torch.as_tensor(a, dtype=torch.float64),
                               torch.as_tensor(b, dtype=torch.float64), rtol=tol, atol=tol)


def test_bce_is_the_per_image_sum_over_classes_averaged_over_images():
    z, targets = batch(with_unknown=False)
    n, c = z.shape
    expected = sum(bce_entry(float(z[i, j]), float(targets[i, j] == 1))
                   for i in range(n) for j in range(c)) / n
    close(BCELoss()(z, targets), expected)


def test_bce_refuses_targets_with_unknown_entries():
    z, targets = batch()
    assert (targets == 0).any()
    with pytest.raises(ValueError, match="partial_bce"):
        BCELoss()(z, targets)


def test_partial_bce_is_c_times_the_mean_bce_over_known_entries():
    z, targets = batch()
    n, c = z.shape
    known = [(i, j) for i in range(n) for j in range(c) if targets[i, j] != 0]
    expected = c * sum(bce_entry(float(z[i, j]), float(targets[i, j] == 1))
                       for i, j in known) / len(known)
    close(PartialBCELoss()(z, targets), expected)


def test_partial_bce_equals_bce_when_every_label_is_known():
    z, targets = batch(with_unknown=False)
    close(PartialBCELoss()(z, targets), BCELoss()(z, targets), 1e-12)


@pytest.mark.parametrize("loss", [PartialBCELoss(), AsymmetricLoss()], ids=["partial_bce", "asl"])
def test_masked_losses_ignore_the_logits_of_unknown_entries(loss):
    z, targets = batch(seed=1)
    unknown = targets == 0
    assert unknown.any()
    moved = torch.where(unknown, z + 7.5 * torch.randn_like(z), z)
    value, grad = value_and_grad(lambda x: loss(x, targets), z)
    moved_value, moved_grad = value_and_grad(lambda x: loss(x, targets), moved)
    close(value, moved_value, 0.0)
    close(grad, moved_grad, 0.0)
    assert (grad[unknown] == 0).all() and (grad[~unknown] != 0).all()


def test_partial_bce_of_a_batch_without_known_entries_is_zero_with_zero_gradient():
    z = torch.randn(3, 4, dtype=torch.float64)
    value, grad = value_and_grad(lambda x: PartialBCELoss()(x, torch.zeros(3, 4)), z)
    assert value == 0 and (grad == 0).all()


def test_assume_negative_bce_takes_every_entry_but_known_positives_as_negative():
    z, targets = batch(seed=2)
    n, c = z.shape
    expected = sum(bce_entry(float(z[i, j]), float(targets[i, j] == 1))
                   for i in range(n) for j in range(c)) / n
    close(AssumeNegativeBCELoss()(z, targets), expected)
    as_negative = torch.where(targets == 1, 1, -1)
    close(AssumeNegativeBCELoss()(z, targets), BCELoss()(z, as_negative), 1e-12)


def test_asl_value_and_gradient_equal_the_paper_formula_on_known_entries():
    z, targets = batch(seed=3)
    n, c = z.shape

    def reference(x):
        known = [(i, j) for i in range(n) for j in range(c) if targets[i, j] != 0]
        return c * sum(asl_entry(x[i, j], int(targets[i, j] == 1)) for i, j in known) / len(known)

    # timm computes ASL in float32, whatever the input dtype.
    value, grad = value_and_grad(lambda x: AsymmetricLoss()(x, targets), z.float())
    ref_value, ref_grad = value_and_grad(reference, z.float().double())
    close(value, ref_value, 1e-6)
    close(grad, ref_grad, 1e-6)


def test_asl_with_zero_focusing_and_no_clip_is_partial_bce():
    z, targets = batch(seed=4)
    asl = AsymmetricLoss(gamma_neg=0.0, gamma_pos=0.0, clip=0.0)
    # timm takes log(sigmoid) in float32; BCE-with-logits is exact: compare at float32 accuracy.
    close(asl(z, targets), PartialBCELoss()(z, targets), 1e-5)


@pytest.mark.parametrize("name", ["bce", "partial_bce", "assume_negative_bce", "asl"])
def test_baselines_compute_in_float32_from_half_precision_logits(name):
    z, targets = batch(seed=5, with_unknown=False)
    loss = build_loss(name)
    value = loss(z.to(torch.bfloat16), targets)
    assert value.dtype == torch.float32
    close(value, loss(z.to(torch.bfloat16).float(), targets), 0.0)


def test_build_loss_knows_exactly_the_names_the_config_accepts():
    assert set(LOSS_NAMES) == {"pu", "bce", "partial_bce", "assume_negative_bce", "asl"}
    assert set(LOSS_NAMES) == set(CONFIG_LOSSES)


@pytest.mark.parametrize("name,cls,uses_mixup", [
    ("pu", PULoss, True), ("bce", BCELoss, False), ("partial_bce", PartialBCELoss, False),
    ("assume_negative_bce", AssumeNegativeBCELoss, False), ("asl", AsymmetricLoss, False)])
def test_build_loss_returns_the_named_loss_and_says_whether_it_uses_the_regulariser(
        name, cls, uses_mixup):
    loss = build_loss(name, alpha=2.0, gamma=0.85)
    assert isinstance(loss, cls)
    assert loss.uses_mixup_regulariser is uses_mixup
    z, targets = batch(seed=6, with_unknown=False)
    value = loss(z, targets)
    assert value.dim() == 0 and torch.isfinite(value)


def test_build_loss_passes_alpha_and_gamma_to_the_pu_loss():
    loss = build_loss("pu", alpha=2.0, gamma=0.85)
    assert (loss.alpha, loss.gamma) == (2.0, 0.85)


def test_build_loss_refuses_an_unknown_name_and_lists_the_known_ones():
    with pytest.raises(ValueError) as info:
        build_loss("focal")
    message = str(info.value)
    assert "focal" in message
    for name in LOSS_NAMES:
        assert name in message


def test_build_loss_passes_the_asl_parameters_to_the_asymmetric_loss():
    z, targets = batch(seed=7)
    loss = build_loss("asl", asl_gamma_neg=2.0, asl_gamma_pos=0.0, asl_clip=0.1)
    assert isinstance(loss, AsymmetricLoss)
    close(loss(z, targets), AsymmetricLoss(gamma_neg=2.0, gamma_pos=0.0, clip=0.1)(z, targets),
          0.0)
    # the defaults are AsymmetricLoss's own, and other parameters give another value
    close(build_loss("asl")(z, targets), AsymmetricLoss()(z, targets), 0.0)
    assert not torch.allclose(loss(z, targets), build_loss("asl")(z, targets))


def test_the_asl_defaults_of_build_loss_and_the_config_are_those_of_asymmetric_loss():
    import inspect

    from pu_mlc.config import TrainConfig

    asl = inspect.signature(AsymmetricLoss.__init__).parameters
    factory = inspect.signature(build_loss).parameters
    cfg = TrainConfig(data="/d")
    for key in ("gamma_neg", "gamma_pos", "clip"):
        assert factory[f"asl_{key}"].default == asl[key].default == getattr(cfg, f"asl_{key}")
