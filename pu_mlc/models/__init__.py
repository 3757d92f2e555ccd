"""Models: backbones, the local-global convolution, the heads and their assembly.

``build_model`` is the public entry point; the pieces are importable for tests and tools.
"""

from .backbones import Backbone, create_backbone, final_pool
from .heads import LinearHead, create_head
from .lgc import GlobalBranch, LocalGlobalConv, convert_to_lgc, lgc_modules, set_lgc_impl
from .pretrained import (LoadReport, create_imagenet_classifier_lite0, load_pretrained,
                         load_torchvision_state_dict, pair_state_dicts)
from .pumlc import PUMLCNet, build_model
from .ssgrl import SSGRLHead

__all__ = [
    "Backbone", "create_backbone", "final_pool",
    "LinearHead", "SSGRLHead", "create_head",
    "GlobalBranch", "LocalGlobalConv", "convert_to_lgc", "lgc_modules", "set_lgc_impl",
    "LoadReport", "create_imagenet_classifier_lite0", "load_pretrained",
    "load_torchvision_state_dict", "pair_state_dicts",
    "PUMLCNet", "build_model",
]
