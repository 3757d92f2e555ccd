"""Backbones give the published feature map and name the stage the recipe fine-tunes."""

from __future__ import annotations

import pytest
import torch
import torchvision

from pu_mlc.errors import ConfigError
from pu_mlc.models import create_backbone


def test_resnet101_gives_2048x7x7_at_448_pixels():
    backbone = create_backbone("resnet101").eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 448, 448)).shape == (1, 2048, 7, 7)
    assert backbone.out_channels == 2048
    assert backbone.last_stage_names == ("layer4",)
    assert backbone.input_mean == (0.485, 0.456, 0.406)


def test_the_final_pool_never_empties_a_small_map_and_keeps_odd_edges():
    backbone = create_backbone("resnet50").eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 32, 32)).shape == (1, 2048, 1, 1)    # 1x1 -> 1x1
        assert backbone(torch.randn(1, 3, 224, 224)).shape == (1, 2048, 4, 4)  # 7x7 -> 4x4


def test_resnet_parameter_names_are_torchvisions_without_the_classifier():
    ours = set(create_backbone("resnet101").state_dict())
    theirs = set(torchvision.models.resnet101(weights=None).state_dict())
    assert ours == theirs - {"fc.weight", "fc.bias"}


def test_timm_backbones_give_their_feature_map_and_last_stage():
    backbone = create_backbone("tf_efficientnet_lite0").eval()
    with torch.no_grad():
        assert backbone(torch.randn(1, 3, 64, 64)).shape == (1, 1280, 1, 1)
    assert backbone.out_channels == 1280
    assert backbone.input_mean == backbone.input_std == (0.5, 0.5, 0.5)
    assert backbone.last_stage_names == ("model.blocks.6", "model.conv_head", "model.bn2")
    names = [n for n, _ in backbone.last_stage_parameters()]
    assert "model.conv_head.weight" in names and "model.bn2.weight" in names
    assert not any(n.startswith("model.blocks.5") for n in names)


def test_an_unknown_name_is_refused_with_suggestions():
    with pytest.raises(ConfigError) as err:
        create_backbone("resnet01")
    message = str(err.value)
    assert "--model-name" in message and "'resnet01'" in message
    assert "resnet101" in message and "tf_efficientnet_lite0" in message
