"""The PU-MLC network: backbone (+ local-global convs) and head, with the published training policy.

:func:`build_model` assembles it in the published order (backbone -> pretrained weights -> LGC
conversion -> head) and applies the policy of the official ``train.py``: only the global branches,
the backbone's last stage and the head are trained, and every BatchNorm stays in eval mode for the
whole run (running statistics never update, even under ``model.train()``).
"""

from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..errors import DataError
from .backbones import Backbone, create_backbone
from .heads import HEADS, create_head
from .lgc import LGC_IMPLS, convert_to_lgc, lgc_modules
from .pretrained import LoadReport, load_pretrained

log = logging.getLogger(__name__)


class PUMLCNet(nn.Module):
    """Backbone + head returning float32 logits (N, C), whatever the autocast dtype.

    The losses need float32 logits, hence the cast at the end. ``input_mean``/``input_std`` are the
    normalisation the backbone's weights expect; ``load_report`` tells what the weight load did
    (``None`` without pretrained weights).
    """

    def __init__(self, backbone: Backbone, head: nn.Module,
                 load_report: Optional[LoadReport] = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.load_report = load_report
        self.input_mean = tuple(backbone.input_mean)
        self.input_std = tuple(backbone.input_std)
        self.set_trainable()
        self.train(self.training)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)).float()

    def train(self, mode: bool = True) -> "PUMLCNet":
        """Set the training mode, but keep every BatchNorm in eval mode (as published)."""
        super().train(mode)
        for m in self.modules():
            if isinstance(m, _BatchNorm):
                m.eval()
        return self

    def set_trainable(self) -> None:
        """Freeze everything except the global branches, the backbone's last stage and the head."""
        for p in self.parameters():
            p.requires_grad_(False)
        for name, p in self.backbone.named_parameters():
            if "global_branch" in name:
                p.requires_grad_(True)
        for _, p in self.backbone.last_stage_parameters():
            p.requires_grad_(True)
        for p in self.head.parameters():
            p.requires_grad_(True)

    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of every trainable tensor, in ``named_parameters`` order."""
        return [(n, p) for n, p in self.named_parameters() if p.requires_grad]

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The trainable tensors (for the optimizer), in a stable order."""
        return [p for _, p in self.trainable_named_parameters()]

    def parameter_counts(self) -> dict[str, int]:
        """Parameter counts: ``lgc`` (global branches), ``head``, ``total``, ``trainable``."""
        def count(params) -> int:
            return sum(p.numel() for p in params)
        return {
            "lgc": count(p for m in lgc_modules(self.backbone)
                         for p in m.global_branch.parameters()),
            "head": count(self.head.parameters()),
            "total": count(self.parameters()),
            "trainable": count(self.trainable_parameters()),
        }


def _check_matrix(name: str, value: np.ndarray, rows: int, cols: Optional[int],
                  what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] != rows or (cols is not None and arr.shape[1] != cols):
        want = f"({rows}, {cols})" if cols is not None else f"({rows}, d)"
        raise DataError(f"{name}: shape {arr.shape} but the model has {rows} classes "
                        f"(--num-classes), so {what} must have shape {want}; pass the {name} "
                        f"of this dataset's classes")
    if not np.all(np.isfinite(arr)):
        raise DataError(f"{name}: contains NaN or infinite values; fix the file it came from")
    return arr.astype(np.float32)


def build_model(model_name: str, num_classes: int, *, head: str = "ssgrl",
                word_vectors: Optional[np.ndarray] = None,
                adjacency: Optional[np.ndarray] = None, pretrained: Optional[str] = None,
                lgc: bool = True, lgc_impl: str = "fast", head_dim: int = 1024) -> PUMLCNet:
    """Build a PU-MLC network: backbone -> pretrained weights -> LGC conversion -> head.

    ``model_name``: ``resnet101``/``resnet50`` (torchvision layout) or a timm name;
    ``word_vectors``: (C, d) class embeddings and ``adjacency``: (C, C) label co-occurrence, both
    required by the ``ssgrl`` head; ``pretrained``: see
    :func:`pu_mlc.models.pretrained.load_pretrained`;
    ``lgc``/``lgc_impl``: add the local-global branch to every 3x3 conv, in the fast or literal
    implementation (same function, same parameters); ``head_dim``: the ssgrl head's width
    (published 1024).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) \
            or num_classes < 1:
        raise ValueError(f"number of classes = {num_classes!r}: must be a "
                          f"positive integer")
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; choose one of {', '.join(HEADS)}")
    if lgc_impl not in LGC_IMPLS:
        raise ValueError(f"unknown LGC implementation {lgc_impl!r}; choose one of "
                         f"{', '.join(LGC_IMPLS)}")
    if word_vectors is not None:
        word_vectors = _check_matrix("word vectors (--word-vectors)", word_vectors,
                                     num_classes, None, "the word vectors")
    if adjacency is not None:
        adjacency = _check_matrix("adjacency matrix", adjacency, num_classes, num_classes,
                                  "the adjacency matrix")

    backbone = create_backbone(model_name)
    report = load_pretrained(backbone, pretrained)
    if lgc:
        convert_to_lgc(backbone, impl=lgc_impl)
    head_module = create_head(head, backbone.out_channels, int(num_classes),
                              word_vectors=word_vectors, adjacency=adjacency,
                              head_dim=int(head_dim))
    model = PUMLCNet(backbone, head_module, report)
    counts = model.parameter_counts()
    log.info("model %s + %s head: %s parameters (%s trainable; LGC %s, head %s)", model_name,
             head, f"{counts['total']:,}", f"{counts['trainable']:,}", f"{counts['lgc']:,}",
             f"{counts['head']:,}")
    return model
