"""The SSGRL-style head of PU-MLC: semantic attention, a gated graph network, per-class scores.

Multi-label images hold several objects in different places, so one pooled vector per image
mixes them. This head (SPEC §3, as in the official code derived from SSGRL) instead builds one
feature per *class*: each class's word vector steers an attention over the positions of the
feature map (:class:`SemanticDecoupling`), a gated graph network propagates the class features
along label co-occurrence (:class:`GatedGNN`), and a per-class linear layer scores each class
(:class:`ElementWiseLinear`). Word vectors and the adjacency matrix are fixed inputs, stored as
buffers (saved with the model, never trained).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class SemanticDecoupling(nn.Module):
    """Class-specific attention pooling: ``v_c = sum_p softmax_p(a_pc) x_p``.

    ``a_pc = fc4(fc3(tanh(fc1(x_p) * fc2(w_c))))``; fc1 and fc2 have no bias, fc3 and fc4 do,
    and nothing sits between fc3 and fc4 (as published). Because fc3 and fc4 are both linear,
    the forward pass applies them as their product ``fc4.weight @ fc3.weight`` (a 512-vector):
    the same function and the same gradients for both layers, without materialising the
    N x positions x classes x 512 output of fc3.
    """

    def __init__(self, feature_dim: int, word_dim: int, hidden_dim: int = 512) -> None:
        super().__init__()
        self.fc1 = nn.Linear(feature_dim, hidden_dim, bias=False)
        self.fc2 = nn.Linear(word_dim, hidden_dim, bias=False)
        self.fc3 = nn.Linear(hidden_dim, hidden_dim)
        self.fc4 = nn.Linear(hidden_dim, 1)

    def attention(self, features: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """Attention weights (N, C, P) over the P positions of ``features`` (N, P, D)."""
        img = self.fc1(features)                                   # (N, P, H)
        joint = torch.tanh(img.unsqueeze(2) * self.fc2(words))    # (N, P, C, H)
        w = self.fc4.weight @ self.fc3.weight                      # (1, H) == fc4 o fc3
        b = self.fc4.weight @ self.fc3.bias + self.fc4.bias        # (1,)
        scores = F.linear(joint, w, b).squeeze(-1)                 # (N, P, C)
        scores = scores.to(torch.promote_types(scores.dtype, torch.float32))
        return torch.softmax(scores, dim=1).transpose(1, 2)

    def forward(self, features: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        """Class features (N, C, D) from a feature map (N, D, H, W) and word vectors (C, d_w)."""
        flat = features.flatten(2).transpose(1, 2)                 # (N, P, D)
        return torch.bmm(self.attention(flat, words).to(flat.dtype), flat)


class GatedGNN(nn.Module):
    """Gated graph network (GRU-style update), ``steps`` rounds over the class graph.

    Messages are ``[A h ; A^T h]`` for the fixed adjacency ``A`` (C x C); every linear layer has a
    bias, as published: ``z = s(W_z a + U_z h)``, ``r = s(W_r a + U_r h)``,
    ``h~ = tanh(W a + U (r * h))``, ``h <- (1 - z) h + z h~``.
    """

    def __init__(self, dim: int, steps: int = 3) -> None:
        super().__init__()
        self.steps = steps
        self.fc_1_w, self.fc_1_u = nn.Linear(2 * dim, dim), nn.Linear(dim, dim)
        self.fc_2_w, self.fc_2_u = nn.Linear(2 * dim, dim), nn.Linear(dim, dim)
        self.fc_3_w, self.fc_3_u = nn.Linear(2 * dim, dim), nn.Linear(dim, dim)

    def forward(self, nodes: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
        """Node states (N, C, D) after ``steps`` rounds."""
        h = nodes
        for _ in range(self.steps):
            adj = adjacency.to(h.dtype)
            msg = torch.cat([adj @ h, adj.t() @ h], dim=2)            # [A h ; A^T h]
            z = torch.sigmoid(self.fc_1_w(msg) + self.fc_1_u(h))
            r = torch.sigmoid(self.fc_2_w(msg) + self.fc_2_u(h))
            cand = torch.tanh(self.fc_3_w(msg) + self.fc_3_u(r * h))
            h = (1 - z) * h + z * cand
        return h


class ElementWiseLinear(nn.Module):
    """One linear scorer per class: ``logit_c = <theta_c, o_c> + b_c``.

    Weights and biases are drawn uniformly from +-1/sqrt(feature_dim), as published.
    """

    def __init__(self, num_classes: int, feature_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, feature_dim))
        self.bias = nn.Parameter(torch.empty(num_classes))
        bound = 1.0 / math.sqrt(feature_dim)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # like the published layer under autocast: a low-precision x meets fp32 weights in fp32
        return (x * self.weight).sum(2) + self.bias


class SSGRLHead(nn.Module):
    """The published head: channel reduction, semantic decoupling, gated GNN, per-class output.

    ``in_channels`` is the backbone's (2048 for ResNet-101, 1280 for EfficientNet-Lite0); a 1x1
    conv (no bias) + BatchNorm maps it to ``feature_dim`` (1024). ``word_vectors`` (C x d_w) and
    ``adjacency`` (C x C) are float32 buffers.
    """

    def __init__(self, in_channels: int, word_vectors: np.ndarray, adjacency: np.ndarray,
                 feature_dim: int = 1024, attention_dim: int = 512, output_dim: int = 1024,
                 steps: int = 3) -> None:
        super().__init__()
        num_classes, word_dim = word_vectors.shape
        self.num_classes = num_classes
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, feature_dim, 1, bias=False), nn.BatchNorm2d(feature_dim))
        self.register_buffer("word_vectors", torch.as_tensor(
            np.asarray(word_vectors, dtype=np.float32)))
        self.register_buffer("adjacency", torch.as_tensor(np.asarray(adjacency,
                                                                     dtype=np.float32)))
        self.semantic = SemanticDecoupling(feature_dim, word_dim, attention_dim)
        self.gnn = GatedGNN(feature_dim, steps)
        self.fc = nn.Linear(2 * feature_dim, output_dim)
        self.classifier = ElementWiseLinear(num_classes, output_dim)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        x = self.reduce(feature_map)
        semantic = self.semantic(x, self.word_vectors)           # (N, C, D)
        nodes = self.gnn(semantic, self.adjacency)
        out = torch.tanh(self.fc(torch.cat([nodes, semantic.to(nodes.dtype)], dim=2)))
        return self.classifier(out)
