"""Local-global conversion: which convs it touches, how the branch behaves in training setups."""

from __future__ import annotations

import logging

import pytest
import torch
from timm.layers import create_conv2d
from torch import nn

from pu_mlc.models import (LocalGlobalConv, build_model, convert_to_lgc, create_backbone,
                           lgc_modules, set_lgc_impl)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def lgc_with_active_branch(conv: nn.Conv2d, seed: int = 0) -> LocalGlobalConv:
    torch.manual_seed(seed)
    module = LocalGlobalConv(conv)
    with torch.no_grad():
        module.global_branch.norm.weight.normal_()
        module.global_branch.norm.bias.normal_()
    return module.eval()


def test_every_bottleneck_3x3_conv_of_resnet101_becomes_local_global():
    backbone = create_backbone("resnet101")
    assert convert_to_lgc(backbone) == 33
    convs = [n for n, m in backbone.named_modules() if isinstance(m, LocalGlobalConv)]
    assert all(n.endswith("conv2") for n in convs)
    assert all(isinstance(m.conv, nn.Conv2d) and m.conv.kernel_size == (3, 3)
               for m in lgc_modules(backbone))
    assert sum("global_branch" in n for n, _ in backbone.named_parameters()) == 33 * 12


def test_converting_twice_converts_nothing_more():
    net = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 32, 3))
    assert convert_to_lgc(net) == 2
    assert convert_to_lgc(net) == 0
    assert len(lgc_modules(net)) == 2


def test_convs_that_are_not_3x3_or_have_too_few_channels_are_skipped_and_logged(caplog):
    net = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1),          # RGB stem: 3 channels cannot split into 8 heads
        nn.Conv2d(16, 16, 3, padding=1),         # converted
        nn.Conv2d(12, 16, 3, padding=1),         # 12 is not a multiple of 8
        nn.Conv2d(16, 16, 1),                    # 1x1
        nn.Conv2d(16, 16, (3, 1)),               # not square
        nn.Sequential(create_conv2d(16, 16, 3, stride=2, padding="same")),  # Conv2dSame
    )
    with caplog.at_level(logging.INFO, logger="pu_mlc.models.lgc"):
        assert convert_to_lgc(net) == 2
    assert isinstance(net[1], LocalGlobalConv) and isinstance(net[5][0], LocalGlobalConv)
    assert type(net[0]) is nn.Conv2d and type(net[2]) is nn.Conv2d
    assert "0 left as a plain conv (in_channels=3" in caplog.text
    assert "2 left as a plain conv (in_channels=12" in caplog.text


def test_unknown_lgc_implementation_is_refused_naming_the_choices():
    with pytest.raises(ValueError, match="'quick'; choose one of fast, literal"):
        convert_to_lgc(nn.Conv2d(16, 16, 3), impl="quick")
    with pytest.raises(ValueError, match="'quick'; choose one of fast, literal"):
        set_lgc_impl(nn.Sequential(), "quick")


def test_the_branch_starts_near_zero_so_pretrained_features_are_kept():
    torch.manual_seed(0)
    module = LocalGlobalConv(nn.Conv2d(32, 32, 3, padding=1, bias=False)).eval()
    x = torch.randn(2, 32, 12, 12)
    with torch.no_grad():
        assert rel(module(x), module.conv(x)) < 1e-3
        assert 0 < module.global_branch(x).abs().max() < 1e-2


@pytest.mark.parametrize("conv", [
    nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False),            # folded
    create_conv2d(64, 64, 3, stride=2, padding="same", depthwise=True),  # Conv2dSame, separate
], ids=["folded", "separate"])
def test_under_bf16_autocast_fast_matches_literal_in_dtype_and_value(conv):
    module = lgc_with_active_branch(conv)
    x = torch.randn(2, 64, 9, 9)
    with torch.no_grad():
        module.impl = "literal"
        reference = module(x)
    outs = {}
    for impl in ("literal", "fast"):
        module.impl = impl
        module.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x)
        y.float().square().sum().backward()
        outs[impl] = y
        assert module.global_branch.proj.weight.grad.dtype == torch.float32
    assert outs["fast"].dtype == outs["literal"].dtype == torch.bfloat16
    # bf16 has 8 mantissa bits: both forms land equally close to the fp32 result
    assert rel(outs["literal"], reference) < 1e-2
    assert rel(outs["fast"], reference) < 1e-2


@pytest.mark.parametrize("conv", [
    nn.Conv2d(32, 64, 3, stride=2, padding=1, bias=False),
    create_conv2d(32, 32, 3, stride=2, padding="same", depthwise=True),
], ids=["folded", "separate"])
def test_channels_last_input_gives_the_same_values_in_channels_last(conv):
    module = lgc_with_active_branch(conv)
    x = torch.randn(2, 32, 10, 10)
    with torch.no_grad():
        reference = module(x)
        module.to(memory_format=torch.channels_last)
        y = module(x.contiguous(memory_format=torch.channels_last))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert rel(y, reference) < 1e-5


def test_a_training_batchnorm_makes_the_fast_form_compute_the_literal_one():
    module = lgc_with_active_branch(nn.Conv2d(16, 16, 3, padding=1))
    twin = lgc_with_active_branch(nn.Conv2d(16, 16, 3, padding=1))
    twin.load_state_dict(module.state_dict())
    module.train()
    twin.train()
    module.impl, twin.impl = "fast", "literal"
    x = torch.randn(4, 16, 8, 8)
    torch.testing.assert_close(module(x), twin(x), rtol=0, atol=0)
    bn, twin_bn = module.global_branch.norm, twin.global_branch.norm
    assert int(bn.num_batches_tracked) == 1
    torch.testing.assert_close(bn.running_mean, twin_bn.running_mean, rtol=0, atol=0)


def test_fast_and_literal_models_have_interchangeable_checkpoints():
    torch.manual_seed(0)
    fast = build_model("resnet18", 3, head="linear", lgc_impl="fast")
    torch.manual_seed(0)
    literal = build_model("resnet18", 3, head="linear", lgc_impl="literal")
    a, b = fast.state_dict(), literal.state_dict()
    assert list(a) == list(b)
    assert all(a[k].shape == b[k].shape for k in a)
    literal.load_state_dict(a)
    x = torch.randn(2, 3, 64, 64)
    fast.eval()
    literal.eval()
    with torch.no_grad():
        assert rel(fast(x), literal(x)) < 1e-5
