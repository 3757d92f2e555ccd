"""PU-MLC's PU loss and MixUp regulariser are SPEC.md section 2, value and gradient.

The references below are loop-based transcriptions of the SPEC formulas (one class at a time, one
sample at a time, scalar tensor operations), written independently of ``pu_mlc.losses``; they run
in float64 and give gradients through autograd on the same scalar graph.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pu_mlc.errors import ConfigError
from pu_mlc.losses import (MixupPlan, PULoss, build_loss, mixup_regulariser,
                           published_mixup_loss, sample_mixup_plan)

PAPER_AND_OTHER_SETTINGS = [(1.0, 0.55), (2.0, 0.85), (0.5, 0.0), (4.0, 1.7)]


# --------------------------------------------------------------------------------------------
# references
# --------------------------------------------------------------------------------------------

def reference_pu_class_term(column, labels, alpha, gamma, temperature=None):
    """SPEC section 2 for one class; ``column`` is a list of scalar tensors (any float dtype)."""
    n = len(column)
    values = [float(v.detach()) for v in column]
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / n)
    if temperature is None:
        temperature = min(alpha * std, 1.0)          # stopgrad: a python float
    s = [torch.sigmoid(v / temperature) for v in column]
    weight = (sum(float(si.detach()) for si in s) / n) ** gamma   # stopgrad: a python float
    unlabeled = torch.log(sum(si + 1e-10 for si in s) / n + 1e-10)
    positives = [i for i in range(n) if labels[i] == 1]
    if positives:
        positive = sum(torch.log(s[i] + 2e-10) for i in positives) / len(positives)
    else:
        positive = 0.0
    return weight * unlabeled - positive


def reference_pu_loss(z, targets, alpha, gamma, temperatures=None):
    """Sum over classes of :func:`reference_pu_class_term`, in the dtype of ``z``.

    ``temperatures`` maps a class index to a temperature that replaces the formula's.
    """
    n, c = z.shape
    total = torch.zeros((), dtype=z.dtype)
    for j in range(c):
        column = [z[i, j] for i in range(n)]
        labels = [int(targets[i, j]) for i in range(n)]
        override = None if temperatures is None else temperatures.get(j)
        total = total + reference_pu_class_term(column, labels, alpha, gamma, override)
    return total


def official_form_pu_loss(z, targets, alpha, gamma):
    """The official code's forms of the two terms (SPEC note), vectorised, float64."""
    n = z.shape[0]
    std = alpha * (((z - z.mean(0)) ** 2).sum(0) / n).sqrt()
    temperature = torch.where(std > 1.0, torch.ones_like(std), std).detach()
    positive = (targets == 1).double()
    inv_num_pos = positive.sum(0).pow(-1)
    inv_num_pos = torch.where(torch.isinf(inv_num_pos), torch.zeros_like(inv_num_pos), inv_num_pos)
    s = torch.sigmoid(z / temperature)
    log_s = torch.log(s + 1e-10)
    with torch.no_grad():
        weight = (1 - (1 - s).mean(0)) ** gamma
    positive_term = (torch.log(torch.exp(log_s * positive) + 1e-10) * inv_num_pos).sum()
    unlabeled_term = (torch.log(torch.exp(log_s).mean(0) + 1e-10) * weight).sum()
    return unlabeled_term - positive_term


def reference_regulariser(z, targets, z_mix, lam, perm, n):
    """SPEC's L_reg, loop-based, for a fixed lam and perm (h = floor(n/2), 1 if h == 0)."""
    h = n // 2
    size = max(h, 1)
    total = torch.zeros((), dtype=z.dtype)
    for k in range(size):
        a, b = int(perm[k]), n - size + k
        for c in range(z.shape[1]):
            t_a = 1.0 if targets[a, c] == 1 else torch.sigmoid(z[a, c])
            t_b = 1.0 if targets[b, c] == 1 else torch.sigmoid(z[b, c])
            t_mix = lam * t_a + (1 - lam) * t_b
            diff = (torch.log(torch.as_tensor(t_mix, dtype=z.dtype) + 1e-10)
                    - torch.log(torch.sigmoid(z_mix[k, c]) + 1e-10))
            total = total + diff ** 2
    return total / size


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------

def random_batch(n=7, c=6, seed=0):
    """Logits whose class scales span 0.05 .. 200, and labels holding -1, 0 and +1.

    Class 1 has no known positive; every other class has at least one.
    """
    g = torch.Generator().manual_seed(seed)
    scales = torch.tensor([0.05, 0.3, 1.0, 5.0, 40.0, 200.0])[:c]
    z = torch.randn(n, c, generator=g, dtype=torch.float64) * scales + 0.5
    targets = torch.randint(-1, 2, (n, c), generator=g)
    targets[:, 1] = torch.where(targets[:, 1] == 1, torch.zeros_like(targets[:, 1]),
                                targets[:, 1])
    for j in range(c):
        if j != 1 and not (targets[:, j] == 1).any():
            targets[j % n, j] = 1
    return z, targets


def value_and_grad(fn, z):
    leaf = z.detach().clone().requires_grad_(True)
    value = fn(leaf)
    (grad,) = torch.autograd.grad(value, leaf)
    return value.detach(), grad


def assert_close(actual, expected, tol):
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol)


# --------------------------------------------------------------------------------------------
# PU loss
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("alpha,gamma", PAPER_AND_OTHER_SETTINGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_pu_loss_value_and_gradient_equal_the_spec_formula_in_float64(alpha, gamma, seed):
    z, targets = random_batch(seed=seed)
    loss = PULoss(alpha=alpha, gamma=gamma)
    value, grad = value_and_grad(lambda x: loss(x, targets), z)
    ref_value, ref_grad = value_and_grad(lambda x: reference_pu_loss(x, targets, alpha, gamma), z)
    assert value.dtype == torch.float64
    assert_close(value, ref_value, 1e-10)
    assert_close(grad, ref_grad, 1e-10)


@pytest.mark.parametrize("alpha,gamma", PAPER_AND_OTHER_SETTINGS)
@pytest.mark.parametrize("seed", [0, 1])
def test_pu_loss_value_and_gradient_equal_the_spec_formula_in_float32(alpha, gamma, seed):
    # Both sides in float32 arithmetic: float32 itself cannot hold 1 - sigmoid(20) (it rounds
    # to 0), so against a float64 reference sharp classes (small T) differ by ~eps32 / T.
    z, targets = random_batch(seed=seed)
    z32 = z.float()
    loss = PULoss(alpha=alpha, gamma=gamma)
    value, grad = value_and_grad(lambda x: loss(x, targets), z32)
    ref_value, ref_grad = value_and_grad(
        lambda x: reference_pu_loss(x, targets, alpha, gamma), z32)
    assert value.dtype == torch.float32
    assert_close(value, ref_value, 1e-6)
    assert_close(grad, ref_grad, 1e-6)


def test_the_temperature_actually_varies_across_classes_in_the_test_batch():
    z, _ = random_batch()
    temperature = PULoss(alpha=1.0, gamma=0.55).temperature(z)
    assert (temperature < 0.5).any() and (temperature == 1.0).any()


@pytest.mark.parametrize("alpha,gamma", PAPER_AND_OTHER_SETTINGS)
def test_pu_loss_agrees_with_the_official_code_forms(alpha, gamma):
    z, targets = random_batch(seed=3)
    loss = PULoss(alpha=alpha, gamma=gamma)
    value, grad = value_and_grad(lambda x: loss(x, targets), z)
    off_value, off_grad = value_and_grad(
        lambda x: official_form_pu_loss(x, targets, alpha, gamma), z)
    assert_close(value, off_value, 1e-6)
    assert_close(grad, off_grad, 1e-6)


def test_a_class_without_known_positive_contributes_only_its_unlabeled_term():
    z, targets = random_batch()
    assert not (targets[:, 1] == 1).any()
    value = PULoss(1.0, 0.55)(z[:, 1:2], targets[:, 1:2])
    column = z[:, 1]
    temperature = min(1.0 * column.std(unbiased=False).item(), 1.0)
    s = torch.sigmoid(column / temperature)
    expected = s.mean() ** 0.55 * torch.log((s + 1e-10).mean() + 1e-10)
    assert_close(value, expected, 1e-12)


def test_known_negatives_are_treated_exactly_like_unknown_entries():
    z, targets = random_batch()
    negatives_as_unknown = torch.where(targets == -1, torch.zeros_like(targets), targets)
    loss = PULoss(2.0, 0.85)
    assert_close(loss(z, targets), loss(z, negatives_as_unknown), 0.0)


def test_pu_loss_casts_half_precision_logits_to_float32():
    z, targets = random_batch()
    loss = PULoss(1.0, 0.55)
    half = z.to(torch.bfloat16)
    value = loss(half, targets)
    assert value.dtype == torch.float32
    assert_close(value, loss(half.float(), targets), 0.0)


def test_pu_loss_inside_an_autocast_region_equals_the_loss_outside_it():
    z, targets = random_batch()
    half = z.to(torch.bfloat16)
    loss = PULoss(2.0, 0.85)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = loss(half, targets)
    assert inside.dtype == torch.float32
    assert_close(inside, loss(half, targets), 0.0)


def test_integer_and_float_targets_give_the_same_loss():
    z, targets = random_batch()
    loss = PULoss(1.0, 0.55)
    assert_close(loss(z, targets), loss(z, targets.float()), 0.0)


@pytest.mark.parametrize("constant", [0.0, 0.7, -13.25])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_a_zero_std_class_stays_finite_and_leaves_the_other_classes_unchanged(constant, dtype):
    z, targets = random_batch(seed=5)
    z = z.to(dtype)
    flat = 2
    z[:, flat] = constant
    loss = PULoss(alpha=1.0, gamma=0.55)
    value, grad = value_and_grad(lambda x: loss(x, targets), z)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert grad[:, flat].abs().sum() > 0

    others = [j for j in range(z.shape[1]) if j != flat]
    others_value, others_grad = value_and_grad(
        lambda x: reference_pu_loss(x, targets[:, others], 1.0, 0.55), z[:, others])
    flat_value = reference_pu_loss(z[:, [flat]], targets[:, [flat]], 1.0, 0.55,
                                   temperatures={0: 1.0})
    tol = 1e-10 if dtype == torch.float64 else 1e-6
    assert_close(value, others_value + flat_value, tol)
    assert_close(grad[:, others], others_grad, tol)


def test_the_zero_std_guard_uses_the_configured_temperature_for_that_class_only():
    z, targets = random_batch(seed=6)
    z[:, 0] = 0.25
    temperature = PULoss(1.0, 0.55, zero_std_temperature=0.5).temperature(z)
    unguarded = torch.clamp(z[:, 1:].std(dim=0, unbiased=False), max=1.0)
    assert temperature[0] == 0.5
    assert_close(temperature[1:], unguarded, 1e-12)


def test_a_class_with_tiny_but_nonzero_std_keeps_the_formula_temperature():
    z, targets = random_batch(seed=7)
    z[:, 0] = 1e-7 * torch.linspace(-1.0, 1.0, z.shape[0], dtype=torch.float64) ** 3
    loss = PULoss(alpha=2.0, gamma=0.85)
    assert loss.temperature(z)[0] < 1e-6
    value, grad = value_and_grad(lambda x: loss(x, targets), z)
    ref_value, ref_grad = value_and_grad(lambda x: reference_pu_loss(x, targets, 2.0, 0.85), z)
    assert_close(value, ref_value, 1e-10)
    assert_close(grad, ref_grad, 1e-6)


def test_a_batch_of_one_image_gives_a_finite_loss_and_gradient():
    z, targets = random_batch(n=1)
    value, grad = value_and_grad(lambda x: PULoss(1.0, 0.55)(x, targets), z)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    ref_value = reference_pu_loss(z, targets, 1.0, 0.55,
                                  temperatures={j: 1.0 for j in range(z.shape[1])})
    assert_close(value, ref_value, 1e-10)


def test_the_temperature_and_weight_carry_no_gradient():
    # With the stop-gradients, an entry's gradient only flows through its own s_ic; so
    # scaling the temperature's source (other logits) by a constant shift does not enter the
    # gradient formula: check against the analytic gradient of one class.
    z = torch.tensor([[0.2], [-0.4], [1.1], [0.05]], dtype=torch.float64)
    targets = torch.tensor([[1], [0], [-1], [1]])
    alpha, gamma = 1.0, 0.55
    value, grad = value_and_grad(lambda x: PULoss(alpha, gamma)(x, targets), z)
    temperature = min(alpha * z.std(unbiased=False).item(), 1.0)
    s = torch.sigmoid(z[:, 0] / temperature)
    weight = s.mean() ** gamma
    mean_term = (s + 1e-10).mean() + 1e-10
    ds = s * (1 - s) / temperature
    expected = weight * ds / (z.shape[0] * mean_term)
    is_pos = targets[:, 0] == 1
    expected = expected - torch.where(is_pos, ds / (s + 2e-10) / is_pos.sum(), 0.0)
    assert_close(grad[:, 0], expected, 1e-12)


@pytest.mark.parametrize("kwargs", [dict(alpha=0.0, gamma=0.5), dict(alpha=-1.0, gamma=0.5),
                                    dict(alpha=1.0, gamma=-0.1),
                                    dict(alpha=float("nan"), gamma=0.5),
                                    dict(alpha=1.0, gamma=0.5, zero_std_temperature=0.0)])
def test_pu_loss_refuses_invalid_hyperparameters_naming_them_not_a_flag(kwargs):
    """A library guard for direct callers (the config refuses such values first, naming
    the flag): a plain ValueError that names the parameter."""
    with pytest.raises(ValueError, match="PU loss: (alpha|gamma|zero_std_temperature)") as err:
        PULoss(**kwargs)
    assert "--" not in str(err.value) and not isinstance(err.value, ConfigError)


def test_pu_loss_refuses_mismatched_shapes():
    with pytest.raises(ValueError, match="shape"):
        PULoss(1.0, 0.55)(torch.zeros(4, 3), torch.zeros(4, 2))


def test_only_the_pu_loss_asks_for_the_mixup_regulariser():
    assert build_loss("pu").uses_mixup_regulariser is True
    assert PULoss(1.0, 0.55).uses_mixup_regulariser is True


# --------------------------------------------------------------------------------------------
# MixUp regulariser
# --------------------------------------------------------------------------------------------

def fixed_plan(n=7, lam=0.37):
    h = n // 2
    perm = torch.tensor([2, 0, 1][:h]) if h == 3 else torch.randperm(max(h, 1),
                                                                     generator=torch.Generator()
                                                                     .manual_seed(n))
    return MixupPlan(lam=lam, perm=perm, h=h, n=n)


def regulariser_value_and_grads(fn, z, z_mix):
    z_leaf = z.detach().clone().requires_grad_(True)
    zm_leaf = z_mix.detach().clone().requires_grad_(True)
    value = fn(z_leaf, zm_leaf)
    grad_z, grad_zm = torch.autograd.grad(value, (z_leaf, zm_leaf))
    return value.detach(), grad_z, grad_zm


@pytest.mark.parametrize("n", [7, 8, 2, 5])
@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.float32, 1e-6)])
def test_regulariser_value_and_gradients_equal_the_spec_formula_for_a_fixed_plan(n, dtype, tol):
    z, targets = random_batch(n=n, seed=11)
    z = (z / 10).to(dtype)
    plan = fixed_plan(n=n, lam=0.37)
    z_mix = torch.randn(max(n // 2, 1), z.shape[1], generator=torch.Generator().manual_seed(2),
                        dtype=dtype) * 3

    def implementation(first, mixed):
        return mixup_regulariser(mixed, plan.mix_targets(targets, first), plan.h)

    def reference(first, mixed):
        return reference_regulariser(first, targets, mixed, plan.lam, plan.perm, n)

    value, grad_z, grad_zm = regulariser_value_and_grads(implementation, z, z_mix)
    ref_value, ref_grad_z, ref_grad_zm = regulariser_value_and_grads(
        reference, z, z_mix)
    assert value.dtype == dtype
    assert_close(value, ref_value, tol)
    assert_close(grad_z, ref_grad_z, tol)
    assert_close(grad_zm, ref_grad_zm, tol)


def test_mixed_inputs_are_lam_times_permuted_first_half_plus_the_rest_times_last_half():
    n = 7
    plan = fixed_plan(n=n, lam=0.37)
    x = torch.randn(n, 3, 2, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mixed = plan.mix_inputs(x)
    assert mixed.shape == (3, 3, 2, 2)
    for k in range(3):
        expected = 0.37 * x[int(plan.perm[k])] + 0.63 * x[n - 3 + k]
        assert_close(mixed[k], expected, 1e-15)


def test_an_odd_batch_leaves_the_middle_sample_unused():
    n = 7
    z, targets = random_batch(n=n, seed=12)
    plan = fixed_plan(n=n)
    x = torch.randn(n, 4, dtype=torch.float64, requires_grad=True)
    (grad_x,) = torch.autograd.grad(plan.mix_inputs(x).sum(), x)
    assert grad_x[3].abs().sum() == 0 and (grad_x[[0, 1, 2, 4, 5, 6]].abs().sum(1) > 0).all()
    z_mix = torch.randn(3, z.shape[1], dtype=torch.float64)
    _, grad_z, _ = regulariser_value_and_grads(
        lambda a, b: mixup_regulariser(b, plan.mix_targets(targets, a), plan.h), z, z_mix)
    assert grad_z[3].abs().sum() == 0


def test_targets_are_not_detached_for_unknown_entries_and_constant_for_known_positives():
    n = 8
    _, targets = random_batch(n=n, seed=13)
    z = torch.randn(n, targets.shape[1], generator=torch.Generator().manual_seed(1),
                    dtype=torch.float64)
    plan = fixed_plan(n=n)
    z_mix = torch.randn(4, z.shape[1], dtype=torch.float64)
    _, grad_z, _ = regulariser_value_and_grads(
        lambda a, b: mixup_regulariser(b, plan.mix_targets(targets, a), plan.h), z, z_mix)
    positive = targets == 1
    assert (grad_z[positive] == 0).all()
    assert (grad_z[~positive] != 0).all()


def test_a_batch_of_one_image_mixes_it_with_itself():
    z, targets = random_batch(n=1, seed=14)
    plan = sample_mixup_plan(1, generator=torch.Generator().manual_seed(0))
    assert plan.h == 0 and plan.perm.tolist() == [0]
    x = torch.randn(1, 5, dtype=torch.float64)
    assert_close(plan.mix_inputs(x), x, 1e-15)
    z_mix = torch.randn(1, z.shape[1], dtype=torch.float64)
    value, grad_z, grad_zm = regulariser_value_and_grads(
        lambda a, b: mixup_regulariser(b, plan.mix_targets(targets, a), plan.h), z, z_mix)
    ref_value, ref_grad_z, ref_grad_zm = regulariser_value_and_grads(
        lambda a, b: reference_regulariser(a, targets, b, plan.lam, plan.perm, 1), z, z_mix)
    assert_close(value, ref_value, 1e-10)
    assert_close(grad_z, ref_grad_z, 1e-10)
    assert_close(grad_zm, ref_grad_zm, 1e-10)


def test_regulariser_refuses_a_mixed_batch_of_the_wrong_size():
    with pytest.raises(ValueError, match="rows"):
        mixup_regulariser(torch.zeros(4, 3), torch.zeros(4, 3), h=3)


def test_regulariser_casts_half_precision_mixed_logits_to_float32():
    plan = fixed_plan(n=7)
    z, targets = random_batch(n=7, seed=15)
    t_mix = plan.mix_targets(targets, z.float())
    z_mix = torch.randn(3, z.shape[1]).to(torch.float16)
    value = mixup_regulariser(z_mix, t_mix, plan.h)
    assert value.dtype == torch.float32
    assert_close(value, mixup_regulariser(z_mix.float(), t_mix, plan.h), 0.0)


def test_sample_mixup_plan_is_reproducible_with_a_seeded_generator():
    first = sample_mixup_plan(9, 0.3, generator=torch.Generator().manual_seed(42))
    again = sample_mixup_plan(9, 0.3, generator=torch.Generator().manual_seed(42))
    other = sample_mixup_plan(9, 0.3, generator=torch.Generator().manual_seed(43))
    assert first.lam == again.lam and torch.equal(first.perm, again.perm)
    assert first.lam != other.lam
    assert first.h == 4 and first.n == 9 and sorted(first.perm.tolist()) == [0, 1, 2, 3]


def test_sample_mixup_plan_follows_the_global_torch_seed_without_a_generator():
    torch.manual_seed(123)
    first = sample_mixup_plan(6)
    torch.manual_seed(123)
    again = sample_mixup_plan(6)
    assert first.lam == again.lam and torch.equal(first.perm, again.perm)


def test_sampled_lam_lies_strictly_between_zero_and_one_and_is_u_shaped():
    g = torch.Generator().manual_seed(0)
    lams = torch.tensor([sample_mixup_plan(4, 0.3, generator=g).lam for _ in range(400)],
                        dtype=torch.float64)
    assert ((lams > 0) & (lams < 1)).all()
    # Beta(0.3, 0.3): mean 1/2, variance 1/(4 * 1.6) = 0.156; mass piles up near 0 and 1.
    assert abs(lams.mean().item() - 0.5) < 0.06
    assert abs(lams.var().item() - 0.15625) < 0.03


def test_sample_mixup_plan_refuses_a_nonpositive_alpha():
    with pytest.raises(ValueError, match="mixup_alpha"):
        sample_mixup_plan(4, 0.0)


def test_published_mixup_loss_equals_the_composed_pieces_with_a_real_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 5))
    x = torch.randn(7, 3, 2, 2)
    targets = torch.randint(-1, 2, (7, 5))

    logits = model(x)
    published = published_mixup_loss(model, x, targets, logits, 0.3,
                                      generator=torch.Generator().manual_seed(9))
    published_grads = torch.autograd.grad(published, list(model.parameters()))

    logits = model(x)
    plan = sample_mixup_plan(7, 0.3, generator=torch.Generator().manual_seed(9))
    composed = mixup_regulariser(model(plan.mix_inputs(x)), plan.mix_targets(targets, logits),
                                 plan.h)
    composed_grads = torch.autograd.grad(composed, list(model.parameters()))

    first = torch.where(targets == 1, 1.0, torch.sigmoid(logits.detach().double()))
    t_mix = plan.lam * first[:3][plan.perm] + (1 - plan.lam) * first[4:]
    z_mix = model(plan.mix_inputs(x)).detach().double()
    by_hand = ((torch.log(t_mix + 1e-10) - torch.log(torch.sigmoid(z_mix) + 1e-10)) ** 2).sum() / 3

    assert_close(published, composed, 0.0)
    for a, b in zip(published_grads, composed_grads):
        assert_close(a, b, 0.0)
    assert_close(published, by_hand, 1e-6)
