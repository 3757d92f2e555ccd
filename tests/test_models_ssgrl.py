"""The SSGRL head computes SPEC §3 step by step (checked against a plain, loop-free restatement)."""

from __future__ import annotations

import math

import numpy as np
import torch

from pu_mlc.models import SSGRLHead

C, D_W, IN_CH = 6, 10, 64


def make_head(seed: int = 0) -> SSGRLHead:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    words = rng.normal(size=(C, D_W)).astype(np.float32)
    adjacency = rng.random((C, C)).astype(np.float32)
    return SSGRLHead(IN_CH, words, adjacency).double().eval()


def reference_logits(head: SSGRLHead, feature_map: torch.Tensor) -> torch.Tensor:
    """SPEC §3 written out literally, layer by layer, with the published op order."""
    x = head.reduce[1](head.reduce[0](feature_map))               # 1x1 conv (no bias) + BN
    n, d, h, w = x.shape
    positions = x.flatten(2).transpose(1, 2)                       # (n, P, 1024)
    sd = head.semantic
    img = sd.fc1(positions)[:, :, None, :]                         # (n, P, 1, 512)
    word = sd.fc2(head.word_vectors)[None, None]                   # (1, 1, C, 512)
    coeff = sd.fc4(sd.fc3(torch.tanh(img * word))).squeeze(-1)     # (n, P, C)
    coeff = torch.softmax(coeff, dim=1)                            # over positions
    v = torch.einsum("npc,npd->ncd", coeff, positions)             # (n, C, 1024)
    gnn, a = head.gnn, head.adjacency
    hidden = v
    for _ in range(3):
        msg = torch.cat([a @ hidden, a.T @ hidden], dim=2)
        z = torch.sigmoid(gnn.fc_1_w(msg) + gnn.fc_1_u(hidden))
        r = torch.sigmoid(gnn.fc_2_w(msg) + gnn.fc_2_u(hidden))
        cand = torch.tanh(gnn.fc_3_w(msg) + gnn.fc_3_u(r * hidden))
        hidden = (1 - z) * hidden + z * cand
    out = torch.tanh(head.fc(torch.cat([hidden, v], dim=2)))
    return (out * head.classifier.weight).sum(2) + head.classifier.bias


def test_the_head_computes_the_published_formulas():
    head = make_head()
    with torch.no_grad():
        head.reduce[1].running_mean.normal_()
        head.reduce[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, IN_CH, 4, 5, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(head(x), reference_logits(head, x), rtol=1e-10, atol=1e-12)


def test_the_head_has_the_published_layer_shapes_and_bias_flags():
    head = make_head()
    assert head.reduce[0].bias is None and head.reduce[0].weight.shape == (1024, IN_CH, 1, 1)
    assert head.semantic.fc1.bias is None and head.semantic.fc1.weight.shape == (512, 1024)
    assert head.semantic.fc2.bias is None and head.semantic.fc2.weight.shape == (512, D_W)
    assert head.semantic.fc3.bias is not None and head.semantic.fc3.weight.shape == (512, 512)
    assert head.semantic.fc4.bias is not None and head.semantic.fc4.weight.shape == (1, 512)
    for i in (1, 2, 3):
        assert getattr(head.gnn, f"fc_{i}_w").weight.shape == (1024, 2048)
        assert getattr(head.gnn, f"fc_{i}_u").weight.shape == (1024, 1024)
        assert getattr(head.gnn, f"fc_{i}_w").bias is not None
    assert head.fc.weight.shape == (1024, 2048)
    bound = 1 / math.sqrt(1024)
    assert head.classifier.weight.shape == (C, 1024)
    assert head.classifier.weight.abs().max() <= bound
    assert head.classifier.bias.abs().max() <= bound


def test_every_head_parameter_receives_a_gradient_except_softmax_shifts():
    head = make_head().train()
    head(torch.randn(2, IN_CH, 3, 3, dtype=torch.float64)).square().sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
        # biases that only shift the attention logits of every position equally
        if name in ("semantic.fc3.bias", "semantic.fc4.bias"):
            assert p.grad.abs().max() < 1e-10, name
        else:
            assert p.grad.abs().max() > 0, name


def test_a_narrower_head_scales_every_width_and_still_computes_the_published_formulas():
    from pu_mlc.models.heads import create_head

    rng = np.random.default_rng(1)
    words = rng.normal(size=(C, D_W)).astype(np.float32)
    adjacency = rng.random((C, C)).astype(np.float32)
    torch.manual_seed(1)
    head = create_head("ssgrl", IN_CH, C, word_vectors=words, adjacency=adjacency,
                       head_dim=64).double().eval()
    assert head.reduce[0].weight.shape == (64, IN_CH, 1, 1)
    assert head.semantic.fc1.weight.shape == (32, 64)
    assert head.gnn.fc_1_w.weight.shape == (64, 128)
    assert head.classifier.weight.shape == (C, 64)
    x = torch.randn(2, IN_CH, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(head(x), reference_logits(head, x), rtol=1e-10, atol=1e-12)


def test_an_odd_head_width_is_refused_naming_it():
    import pytest

    from pu_mlc.models.heads import create_head

    words = np.zeros((C, D_W), np.float32)
    with pytest.raises(ValueError, match="head width = 7"):
        create_head("ssgrl", IN_CH, C, word_vectors=words, adjacency=np.eye(C, dtype=np.float32),
                    head_dim=7)
