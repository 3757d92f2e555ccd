"""Classification heads, chosen by name (``--head``).

``ssgrl`` is the published head (:class:`pu_mlc.models.ssgrl.SSGRLHead`: needs class word vectors
and a label adjacency matrix). ``linear`` (global average pool + one linear layer) is the plain
baseline: it needs neither, so it isolates what the backbone and the loss contribute.
"""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch
from torch import nn

from ..choices import HEADS
from .ssgrl import SSGRLHead


class LinearHead(nn.Module):
    """Global average pool over positions, then ``nn.Linear(in_channels, num_classes)``."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.fc = nn.Linear(in_channels, num_classes)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.fc(feature_map.mean((2, 3)))


def create_head(name: str, in_channels: int, num_classes: int, *,
                word_vectors: Optional[np.ndarray] = None,
                adjacency: Optional[np.ndarray] = None, head_dim: int = 1024) -> nn.Module:
    """Build the head ``name`` on top of ``in_channels`` backbone channels.

    ``head_dim`` is the ssgrl head's width (published 1024; its attention uses half of it).

    ``word_vectors`` (C x d) and ``adjacency`` (C x C) must already be validated
    (:func:`pu_mlc.models.pumlc.build_model` does it); the ``ssgrl`` head requires both.
    """
    if name == "linear":
        return LinearHead(in_channels, num_classes)
    if name == "ssgrl":
        missing = [n for n, v in (("word_vectors", word_vectors), ("adjacency", adjacency))
                   if v is None]
        if missing:
            raise ValueError(f"the 'ssgrl' head needs {' and '.join(missing)} (class "
                              f"word vectors C x d, label co-occurrence C x C); pass them or use "
                              f"the linear head")
        if head_dim < 2 or head_dim % 2:
            raise ValueError(f"head width = {head_dim!r}: must be an even number "
                              f">= 2 (published: 1024)")
        return SSGRLHead(in_channels, word_vectors, adjacency, feature_dim=head_dim,
                         attention_dim=head_dim // 2, output_dim=head_dim)
    raise ValueError(f"unknown head {name!r}; choose one of {', '.join(HEADS)}")
