"""Backbone weights: real packaged Lite0 weights, checked pairings, torchvision state dicts."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from skimage import data

from pu_mlc.errors import ConfigError, DataError
from pu_mlc.models import (build_model, create_backbone, create_imagenet_classifier_lite0,
                           load_torchvision_state_dict, pair_state_dicts)
from pu_mlc.models.pretrained import lite0_weights_path

ESPRESSO = 967


def lite0_input(image: np.ndarray) -> torch.Tensor:
    """DATA.md preprocessing of the Lite0 weights: 224 px, bicubic, mean = std = 0.5."""
    x = torch.from_numpy(image).permute(2, 0, 1).float()[None] / 255.0
    x = F.interpolate(x, size=(224, 224), mode="bicubic", align_corners=False, antialias=True)
    return (x - 0.5) / 0.5


def test_packaged_lite0_weights_recognise_the_coffee_photo_as_espresso():
    model = create_imagenet_classifier_lite0()
    with torch.no_grad():
        probs = model(lite0_input(data.coffee())).softmax(-1)
    assert probs.argmax().item() == ESPRESSO
    assert probs.max().item() > 0.5


def test_builtin_weights_in_the_backbone_are_the_classifier_weights():
    torch.manual_seed(0)
    net = build_model("tf_efficientnet_lite0", 3, head="linear", pretrained="builtin", lgc=False)
    assert net.load_report.missing == [] and net.load_report.unexpected == []
    assert net.load_report.skipped == ["classifier.weight", "classifier.bias"]
    assert net.input_mean == net.input_std == (0.5, 0.5, 0.5)
    classifier = create_imagenet_classifier_lite0()
    x = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        torch.testing.assert_close(net.backbone.features(x), classifier.forward_features(x))


def lite0_source_and_timm_target():
    source = torch.load(lite0_weights_path(), map_location="cpu", weights_only=True)
    return source, timm.create_model("tf_efficientnet_lite0").state_dict()


def test_the_pairing_refuses_a_state_dict_with_one_shape_altered():
    source, target = lite0_source_and_timm_target()
    assert len(source) == len(target) == 296
    assert len(pair_state_dicts(source, target, "lite0")) == 296 - 49   # 49 num_batches_tracked
    key = "_blocks.3._project_conv.weight"
    source[key] = source[key][:-1]
    with pytest.raises(DataError, match=r"_blocks\.3\._project_conv\.weight.*shapes differ"):
        pair_state_dicts(source, target, "lite0")


def test_the_pairing_refuses_a_different_tensor_count():
    source, target = lite0_source_and_timm_target()
    source.pop("_fc.bias")
    with pytest.raises(DataError, match="246 tensors, the model has 247"):
        pair_state_dicts(source, target, "lite0")


@pytest.fixture(scope="module")
def resnet101_file(tmp_path_factory):
    torch.manual_seed(3)
    reference = torchvision.models.resnet101(weights=None)
    path = tmp_path_factory.mktemp("weights") / "resnet101.pth"
    torch.save(reference.state_dict(), path)
    return path, reference.state_dict()


def test_a_torchvision_resnet101_state_dict_round_trips(resnet101_file):
    path, reference = resnet101_file
    backbone = create_backbone("resnet101")
    report = load_torchvision_state_dict(backbone, path)
    assert report.missing == [] and report.unexpected == []
    assert report.skipped == ["fc.weight", "fc.bias"]
    assert report.loaded == len(reference) - 2
    state = backbone.state_dict()
    for key in ("conv1.weight", "layer3.22.conv2.weight", "layer4.2.bn3.running_var"):
        torch.testing.assert_close(state[key], reference[key], rtol=0, atol=0)


def test_a_wrapped_ddp_state_dict_loads_too(resnet101_file, tmp_path):
    path, reference = resnet101_file
    wrapped = tmp_path / "checkpoint.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in reference.items()}, "epoch": 3},
               wrapped)
    report = load_torchvision_state_dict(create_backbone("resnet101"), wrapped)
    assert report.loaded == len(reference) - 2 and not report.missing


def test_weights_are_loaded_before_the_lgc_conversion(resnet101_file):
    path, reference = resnet101_file
    torch.manual_seed(0)
    net = build_model("resnet101", 3, head="linear", pretrained=str(path))
    assert net.load_report.loaded == len(reference) - 2
    torch.testing.assert_close(net.backbone.layer2[1].conv2.conv.weight,
                               reference["layer2.1.conv2.weight"], rtol=0, atol=0)


def test_a_shape_mismatch_names_the_file_and_the_key(resnet101_file, tmp_path):
    _, reference = resnet101_file
    broken = dict(reference)
    broken["layer1.0.conv1.weight"] = torch.zeros(64, 64, 3, 3)
    path = tmp_path / "broken.pth"
    torch.save(broken, path)
    expected = r"broken\.pth.*'layer1\.0\.conv1\.weight'.*\(64, 64, 3, 3\)"
    with pytest.raises(DataError, match=expected):
        load_torchvision_state_dict(create_backbone("resnet101"), path)


def test_a_missing_weights_file_names_the_path(tmp_path):
    missing = tmp_path / "nowhere" / "resnet101.pth"
    with pytest.raises(DataError, match=f"--pretrainedModel.*{missing}.*not found"):
        build_model("resnet101", 3, head="linear", pretrained=str(missing))


def test_none_means_random_initialisation():
    torch.manual_seed(0)
    assert build_model("resnet18", 3, head="linear", pretrained="None").load_report is None


def test_builtin_weights_exist_only_for_lite0():
    with pytest.raises(ConfigError, match="'builtin'.*tf_efficientnet_lite0"):
        build_model("resnet18", 3, head="linear", pretrained="builtin")


@pytest.mark.parametrize("head", ["ssgrl", "linear"])
def test_lite0_with_lgc_trains_with_either_head(head):
    torch.manual_seed(0)
    num_classes = 4
    words = np.random.default_rng(0).normal(size=(num_classes, 50)).astype(np.float32)
    adjacency = np.eye(num_classes, dtype=np.float32)
    net = build_model("tf_efficientnet_lite0", num_classes, head=head, word_vectors=words,
                      adjacency=adjacency, pretrained="builtin").train()
    # the seven depthwise 3x3 convs get a branch; the 3-channel stem does not
    lgc_names = [n for n, m in net.named_modules() if type(m).__name__ == "LocalGlobalConv"]
    assert len(lgc_names) == 7 and all(n.endswith("conv_dw") for n in lgc_names)
    assert type(net.backbone.model.conv_stem).__name__ == "Conv2dSame"

    logits = net(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, num_classes) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    trainable = [n for n, _ in net.trainable_named_parameters()]
    assert trainable
    assert not any(n.startswith(("backbone.model.conv_stem", "backbone.model.bn1"))
                   for n in trainable)
    assert "backbone.model.blocks.0.0.conv_dw.conv.weight" not in trainable
    assert "backbone.model.blocks.0.0.conv_dw.global_branch.proj.weight" in trainable
    assert "backbone.model.blocks.6.0.conv_pwl.weight" in trainable
    assert "backbone.model.conv_head.weight" in trainable
    for name, p in net.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
