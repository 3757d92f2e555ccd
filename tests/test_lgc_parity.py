"""The fast local-global conv computes the published function: same outputs, same gradients.

Every check randomises the branch's BatchNorm to O(1) weights (the ~1e-4 initialisation would
make the branch invisible and hide errors) and compares the fast form with the literal form on
the very same parameters. float64 separates algorithmic error (none) from rounding; float32 is
the precision training uses. Every bound holds for any torch thread count (the summation order
changes the rounding, never the bound); the whole-network fp32 bounds are derived below.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from timm.layers import create_conv2d
from torch import nn
from torchvision.models.resnet import Bottleneck

from bench.gpu_parity import randomise_branch_bn, rel  # the device check's own helpers
from pu_mlc.models import LocalGlobalConv, build_model, lgc_modules, set_lgc_impl

# gradients that are exactly zero in both forms: a softmax is invariant to a constant shift of its
# logits, so biases that only shift them (fc3's passes through the linear fc4) get no gradient
ZERO_GRAD = ("agg_attn.bias", "semantic.fc3.bias", "semantic.fc4.bias")


def make_conv(kind: str, c_in: int, c_out: int, stride: int) -> nn.Conv2d:
    if kind == "plain":        # torchvision's bottleneck conv2: foldable into one 3x3 conv
        return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
    if kind == "plain_bias":
        return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=True)
    if kind == "depthwise":    # timm EfficientNet depthwise conv (Conv2dSame when strided)
        return create_conv2d(c_in, c_in, 3, stride=stride, padding="same", depthwise=True)
    if kind == "same":         # timm TF-'same' padding: asymmetric when strided
        return create_conv2d(c_in, c_out, 3, stride=stride, padding="same")
    if kind == "dilated":
        return nn.Conv2d(c_in, c_out, 3, stride=stride, padding=2, dilation=2, bias=False)
    raise ValueError(kind)


def fast_and_literal(module: LocalGlobalConv, x: torch.Tensor, weights: torch.Tensor):
    """Output and gradients (input, then every trainable parameter) of both forms."""
    results = {}
    for impl in ("literal", "fast"):
        module.impl = impl
        xi = x.clone().requires_grad_(True)
        y = module(xi)
        params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        grads = torch.autograd.grad((y * weights).sum(), [xi] + [p for _, p in params])
        results[impl] = (y.detach(), dict(zip(["input"] + [n for n, _ in params], grads)))
    return results["fast"], results["literal"]


CASES = [  # kind, c_in, c_out, stride, (h, w), fuse
    ("plain", 16, 16, 1, (9, 9), None),
    ("plain", 64, 128, 2, (8, 8), None),
    ("plain", 64, 128, 2, (9, 7), None),
    ("plain", 256, 256, 1, (6, 5), None),
    ("plain", 256, 512, 2, (7, 7), None),
    ("plain", 64, 64, 2, (9, 9), False),        # fusable conv, proj kept separate
    ("plain_bias", 32, 48, 2, (7, 8), None),
    ("depthwise", 32, 32, 1, (8, 8), None),
    ("depthwise", 64, 64, 2, (8, 8), None),     # Conv2dSame, pads (0, 1): not foldable
    ("depthwise", 64, 64, 2, (9, 9), None),
    ("same", 16, 32, 2, (10, 10), None),
    ("dilated", 16, 16, 1, (9, 9), None),
]


def case_id(case) -> str:
    kind, c_in, c_out, stride, (h, w), fuse = case
    return f"{kind}-{c_in}to{c_out}-s{stride}-{h}x{w}" + ("-unfused" if fuse is False else "")


def build_case(case, conv_trainable: bool, dtype: torch.dtype, seed: int = 0):
    kind, c_in, c_out, stride, (h, w), fuse = case
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    module = LocalGlobalConv(make_conv(kind, c_in, c_out, stride))
    module.fuse = fuse
    randomise_branch_bn(module, gen)
    module.conv.requires_grad_(conv_trainable)
    module = module.to(dtype).eval()
    x = torch.randn(2, c_in, h, w, generator=gen).to(dtype)
    with torch.no_grad():
        out_shape = module(x).shape
    weights = torch.randn(out_shape, generator=gen).to(dtype)
    return module, x, weights


@pytest.mark.parametrize("conv_trainable", [False, True], ids=["frozen_conv", "trainable_conv"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fast_branch_matches_literal_in_float64_to_rounding(case, conv_trainable):
    module, x, weights = build_case(case, conv_trainable, torch.float64)
    (y_fast, g_fast), (y_lit, g_lit) = fast_and_literal(module, x, weights)
    assert y_fast.shape == y_lit.shape
    assert rel(y_fast, y_lit) < 1e-12
    assert set(g_fast) == set(g_lit)
    assert ("conv.weight" in g_fast) == conv_trainable
    for name in g_lit:
        if name.endswith(ZERO_GRAD):
            continue
        assert rel(g_fast[name], g_lit[name]) < 1e-10, name


@pytest.mark.parametrize("conv_trainable", [False, True], ids=["frozen_conv", "trainable_conv"])
@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_fast_branch_matches_literal_in_float32_within_1e_5(case, conv_trainable):
    module, x, weights = build_case(case, conv_trainable, torch.float32)
    (y_fast, g_fast), (y_lit, g_lit) = fast_and_literal(module, x, weights)
    assert rel(y_fast, y_lit) < 1e-5
    torch.testing.assert_close(y_fast, y_lit, rtol=1e-5, atol=1e-5 * y_lit.abs().max().item())
    for name in g_lit:
        if name.endswith(ZERO_GRAD):
            continue
        assert rel(g_fast[name], g_lit[name]) < 1e-5, name


def test_the_aggregation_bias_gets_no_gradient_in_either_form():
    module, x, weights = build_case(CASES[1], False, torch.float64)
    (_, g_fast), (_, g_lit) = fast_and_literal(module, x, weights)
    scale = g_lit["global_branch.agg_attn.weight"].norm()
    assert scale > 0
    assert g_fast["global_branch.agg_attn.bias"].norm() < 1e-12 * scale
    assert g_lit["global_branch.agg_attn.bias"].norm() < 1e-12 * scale


def test_only_plain_padded_3x3_convs_are_folded_into_one_convolution():
    assert LocalGlobalConv(make_conv("plain", 16, 16, 2)).fusable
    assert LocalGlobalConv(make_conv("plain_bias", 16, 16, 1)).fusable
    assert not LocalGlobalConv(make_conv("depthwise", 16, 16, 1)).fusable
    assert not LocalGlobalConv(make_conv("same", 16, 16, 2)).fusable
    assert not LocalGlobalConv(make_conv("dilated", 16, 16, 1)).fusable


def well_conditioned_resnet101(gen: torch.Generator):
    """ResNet-101 + SSGRL head, random but with O(1) activations (like a pretrained one).

    A randomly initialised ResNet-101's activations grow block after block (features ~1e4 at the
    end), which saturates every softmax and makes any two float32 computations disagree; residual
    branches scaled by 0.5 keep them O(1). The LGC BatchNorms get O(1) weights.
    """
    torch.manual_seed(0)
    num_classes = 5
    words = np.random.default_rng(0).normal(size=(num_classes, 50)).astype(np.float32)
    adjacency = np.random.default_rng(1).random((num_classes, num_classes)).astype(np.float32)
    model = build_model("resnet101", num_classes, word_vectors=words, adjacency=adjacency)
    with torch.no_grad():
        for m in model.backbone.modules():
            if isinstance(m, Bottleneck):
                m.bn3.weight.fill_(0.5)
    randomise_branch_bn(model, gen)
    return model.train()


def logits_and_grads(model, x, weights, impl):
    set_lgc_impl(model, impl)
    model.zero_grad(set_to_none=True)
    y = model(x)
    (y * weights).sum().backward()
    return y.detach(), {n: p.grad.detach().clone() for n, p in model.trainable_named_parameters()}


# fp32 sanity bounds of the whole-network check (its float64 part is the parity proof). They must
# hold for any summation order, i.e. any torch thread count, instruction set or BLAS: both forms
# round differently at every thread count, so the bounds are set by fp32 rounding, not by one run.
#
# u = 2**-24 is fp32's unit roundoff. A length-K dot product rounded in any order is off by
# ~sqrt(K) u (random-walk model; K u worst case) and the errors of the L layers along the longest
# path add: L sqrt(K) u, with L = 101 (ResNet-101's weighted layers) and K = 9 * 512 = 4608
# (layer4's 3x3 convs, the longest reduction of the forward pass): ~4.1e-4. The logits are a
# continuous function of the rounding, so they must agree within it (measured <= 4.2e-6 with 1, 2
# and 4 threads, 5 seeds: no tighter bound is derivable without fixing the reduction order).
#
# Gradients are not continuous in the rounding: ReLU's derivative jumps at 0. Of the ~9.6M ReLU
# inputs of this network 0-3 lie within rounding distance of 0 and land on the other side in one
# fp32 form (measured: 1, 2, 4 threads, 5 seeds; which ones depends on the summation order, i.e.
# on the thread count). Each such flip zeroes or un-zeroes one activation's O(1) gradient and so
# moves the gradient of every layer below it: up to 1.3e-4 of the whole gradient's norm for one
# flip in layer4 (the 2-thread failure of the former 1e-4 bound), against ~1e-5 without flips.
# The gradient bound is fp16's machine epsilon, 2**-10 ~ 9.8e-4: 7x the worst measured case,
# so an fp32 computation of the same function passes whatever its thread count, while a form
# whose arithmetic silently ran in half precision (fp16 eps = the bound, bf16 eps 8x larger, per
# operation) would not. The per-module fp32 checks above can stay at 1e-5: both forms compute the
# branch's only ReLU input, reduction(x), with the same op on the same input, so it flips in both
# or in neither. In float64 a flip needs a ReLU input within ~1e-15 of 0 (~1e-8 expected per run).
FP32_U = torch.finfo(torch.float32).eps / 2
LOGITS_TOL_FP32 = 101 * math.sqrt(9 * 512) * FP32_U          # ~4.1e-4
GRADS_TOL_FP32 = torch.finfo(torch.float16).eps               # 2**-10 ~ 9.8e-4


def flat_grads(grads: dict, names) -> torch.Tensor:
    return torch.cat([grads[n].flatten().double() for n in names])


def test_converted_resnet101_gives_the_same_logits_and_gradients_in_both_forms():
    gen = torch.Generator().manual_seed(1)
    model = well_conditioned_resnet101(gen)
    assert len(lgc_modules(model)) == 33
    x = torch.randn(2, 3, 128, 128, generator=gen)     # 2 x 2 positions for the head
    weights = torch.randn(2, 5, generator=gen)

    y32_lit, g32_lit = logits_and_grads(model, x, weights, "literal")
    y32_fast, g32_fast = logits_and_grads(model, x, weights, "fast")

    # float64, same parameters and input (fp32 values are exact in float64): the parity proof
    model.double()
    y_lit, g_lit = logits_and_grads(model, x.double(), weights.double(), "literal")
    y_fast, g_fast = logits_and_grads(model, x.double(), weights.double(), "fast")
    assert rel(y_fast, y_lit) < 1e-12
    for name in g_lit:
        if not name.endswith(ZERO_GRAD):
            assert rel(g_fast[name], g_lit[name]) < 1e-9, name

    # fp32, the precision training uses: a sanity bound (see LOGITS_TOL_FP32, GRADS_TOL_FP32);
    # each form's own distance to the float64 result is in the message, for a failure's diagnosis
    names = list(g_lit)
    ref_g = flat_grads(g_lit, names)
    y_err = rel(y32_fast, y32_lit)
    assert y_err < LOGITS_TOL_FP32, (
        f"fp32 logits: fast vs literal {y_err:.2e}; vs float64: literal "
        f"{rel(y32_lit, y_lit):.2e}, fast {rel(y32_fast, y_lit):.2e}")
    flat_lit, flat_fast = flat_grads(g32_lit, names), flat_grads(g32_fast, names)
    g_err = rel(flat_fast, flat_lit)
    assert g_err < GRADS_TOL_FP32, (
        f"fp32 gradients: fast vs literal {g_err:.2e}; vs float64: literal "
        f"{rel(flat_lit, ref_g):.2e}, fast {rel(flat_fast, ref_g):.2e}")
