"""The assembled PU-MLC network matches the published one: sizes, training policy, inputs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torchvision.models.resnet import Bottleneck

from pu_mlc.data import COCO2014_CLASSES, VOC_CLASSES, class_word_vectors
from pu_mlc.errors import ConfigError, DataError
from pu_mlc.models import PUMLCNet, build_model, convert_to_lgc

NUM_CLASSES = 80


def word_vectors(num_classes: int = NUM_CLASSES, dim: int = 300) -> np.ndarray:
    return np.random.default_rng(0).normal(size=(num_classes, dim)).astype(np.float32)


def adjacency(num_classes: int = NUM_CLASSES) -> np.ndarray:
    return np.random.default_rng(1).random((num_classes, num_classes)).astype(np.float32)


@pytest.fixture(scope="module")
def model() -> PUMLCNet:
    torch.manual_seed(0)
    return build_model("resnet101", NUM_CLASSES, word_vectors=word_vectors(),
                       adjacency=adjacency())


def test_parameter_counts_are_those_of_the_published_model(model):
    assert model.parameter_counts() == {
        "lgc": 5_436_160, "head": 14_663_761, "total": 62_600_081, "trainable": 35_064_657}
    assert sum(p.numel() for p in model.parameters()) == 62_600_081
    assert sum(p.numel() for p in model.trainable_parameters()) == 35_064_657


# Head terms that do not depend on the class count C (SPEC §3, d_w = 300): reduce conv + BN,
# attention fc1..fc4, GGNN gates (3 W: 2048->1024, 3 U: 1024->1024, with bias), output fc.
HEAD_WITHOUT_CLASSIFIER = ((2048 * 1024 + 2 * 1024)
                           + (1024 * 512 + 300 * 512 + (512 * 512 + 512) + (512 + 1))
                           + 3 * (2048 * 1024 + 1024) + 3 * (1024 * 1024 + 1024)
                           + (2048 * 1024 + 1024))
RESNET101_WITHOUT_FC = 42_500_160
LGC = 5_436_160
#: Frozen: stem + layer1..3 of ResNet-101 (total - trainable, the same for every C).
FROZEN = 62_600_081 - 35_064_657


def expected_counts(num_classes: int) -> dict[str, int]:
    head = HEAD_WITHOUT_CLASSIFIER + num_classes * (1024 + 1)    # per-class theta_c and b_c
    total = RESNET101_WITHOUT_FC + LGC + head
    return {"lgc": LGC, "head": head, "total": total, "trainable": total - FROZEN}


def test_the_count_formula_gives_the_published_coco_numbers():
    assert HEAD_WITHOUT_CLASSIFIER == 14_581_761
    assert expected_counts(80) == {
        "lgc": 5_436_160, "head": 14_663_761, "total": 62_600_081, "trainable": 35_064_657}


@pytest.mark.parametrize("dataset, class_names, counts", [
    ("COCO2014", COCO2014_CLASSES,
     {"lgc": 5_436_160, "head": 14_663_761, "total": 62_600_081, "trainable": 35_064_657}),
    # VOC: 60 classes fewer, each one 1024 weights + 1 bias: 61,500 parameters fewer.
    ("VOC2007", VOC_CLASSES,
     {"lgc": 5_436_160, "head": 14_602_261, "total": 62_538_581, "trainable": 35_003_157}),
])
def test_the_default_word_vectors_give_the_published_model_size(dataset, class_names, counts):
    assert counts == expected_counts(len(class_names))
    words = class_word_vectors(class_names, "auto", dataset=dataset)
    assert words.shape == (len(class_names), 300)
    torch.manual_seed(0)
    net = build_model("resnet101", len(class_names), word_vectors=words,
                      adjacency=adjacency(len(class_names)))
    assert net.parameter_counts() == counts
    assert sum(p.numel() for p in net.parameters()) == counts["total"]
    assert sum(p.numel() for p in net.trainable_parameters()) == counts["trainable"]
    np.testing.assert_array_equal(net.head.word_vectors.numpy(), words)


def test_word_vectors_and_adjacency_are_fixed_buffers_not_parameters(model):
    buffers = dict(model.named_buffers())
    assert buffers["head.word_vectors"].shape == (NUM_CLASSES, 300)
    assert buffers["head.adjacency"].shape == (NUM_CLASSES, NUM_CLASSES)
    assert not any("word_vectors" in n or "adjacency" in n for n, _ in model.named_parameters())


def test_trainable_set_is_exactly_global_branches_layer4_and_head(model):
    expected = [n for n, _ in model.named_parameters()
                if "global_branch" in n or n.startswith(("backbone.layer4.", "head."))]
    trainable = [n for n, _ in model.trainable_named_parameters()]
    assert trainable == expected
    assert any(n.startswith("backbone.layer1.0.conv2.global_branch") for n in trainable)
    assert "backbone.layer4.0.conv2.conv.weight" in trainable
    assert "backbone.layer3.0.conv2.conv.weight" not in trainable
    assert "backbone.conv1.weight" not in trainable
    assert [id(p) for p in model.trainable_parameters()] == [
        id(p) for _, p in model.trainable_named_parameters()]


def test_every_batchnorm_stays_in_eval_mode_under_train(model):
    model.train()
    assert model.training
    norms = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert len(norms) == 104 + 33 + 1     # backbone, global branches, head
    assert not any(m.training for m in norms)
    stats_before = copy.deepcopy(model.head.reduce[1].state_dict())
    branch_bn = model.backbone.layer2[0].conv2.global_branch.norm
    var_before = branch_bn.running_var.clone()
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64))
    torch.testing.assert_close(model.head.reduce[1].state_dict(), stats_before)
    torch.testing.assert_close(branch_bn.running_var, var_before)


def test_forward_gives_float32_logits_even_under_bf16_autocast(model):
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model(x)
    assert logits.shape == (2, NUM_CLASSES)
    assert logits.dtype == torch.float32


def test_lgc_conversion_at_initialisation_keeps_the_output_within_1e_3():
    torch.manual_seed(0)
    plain = build_model("resnet101", NUM_CLASSES, word_vectors=word_vectors(),
                        adjacency=adjacency(), lgc=False).eval()
    # A random ResNet-101's features reach ~1e4 and saturate the head's attention softmax, so
    # any perturbation flips some class's attention; residual branches scaled by 0.5 keep the
    # activations O(1), as in a pretrained network.
    with torch.no_grad():
        for m in plain.backbone.modules():
            if isinstance(m, Bottleneck):
                m.bn3.weight.fill_(0.5)
    converted = copy.deepcopy(plain)
    assert convert_to_lgc(converted.backbone) == 33
    converted.eval()
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features_plain, features_lgc = plain.backbone(x), converted.backbone(x)
        a, b = plain(x), converted(x)
    assert not torch.equal(features_plain, features_lgc)     # the branches do contribute
    assert ((features_lgc - features_plain).norm() / features_plain.norm()).item() < 1e-3
    assert ((a - b).norm() / a.norm()).item() < 1e-3


def test_a_training_step_reaches_only_trainable_tensors():
    torch.manual_seed(0)
    small = build_model("resnet50", 4, word_vectors=word_vectors(4, 50),
                        adjacency=adjacency(4)).train()
    loss = small(torch.randn(2, 3, 64, 64)).square().sum()
    loss.backward()
    for name, p in small.named_parameters():
        assert (p.grad is not None) == p.requires_grad, name
    assert small.backbone.layer1[0].conv2.global_branch.proj.weight.grad.abs().sum() > 0


def test_word_vectors_for_another_number_of_classes_are_refused():
    with pytest.raises(DataError, match=r"shape \(20, 300\).*80 classes"):
        build_model("resnet50", 80, word_vectors=word_vectors(20), adjacency=adjacency())


def test_a_non_square_adjacency_is_refused():
    with pytest.raises(DataError, match=r"adjacency matrix: shape \(80, 79\)"):
        build_model("resnet50", 80, word_vectors=word_vectors(),
                    adjacency=adjacency()[:, :79])


def test_non_finite_word_vectors_are_refused():
    bad = word_vectors()
    bad[3, 7] = np.nan
    with pytest.raises(DataError, match="NaN"):
        build_model("resnet50", 80, word_vectors=bad, adjacency=adjacency())


def test_the_ssgrl_head_requires_word_vectors_and_adjacency():
    with pytest.raises(ValueError, match="word_vectors and adjacency.*the linear head"):
        build_model("resnet50", 80)


def test_an_unknown_backbone_is_refused_naming_the_flag_and_valid_names():
    with pytest.raises(ConfigError, match=r"--model-name.*resnet01.*resnet101"):
        build_model("resnet01", 80, head="linear")


def test_the_linear_head_needs_no_word_vectors():
    torch.manual_seed(0)
    net = build_model("resnet18", 6, head="linear").eval()
    with torch.no_grad():
        assert net(torch.randn(1, 3, 64, 64)).shape == (1, 6)
    assert net.parameter_counts()["head"] == 512 * 6 + 6
