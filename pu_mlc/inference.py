"""Using a finished run: load its ``best.pt``, score a dataset split, score image files.

``best.pt`` (written by :func:`pu_mlc.engine.checkpoint.save_best_weights`) holds the selected
model's state dict, the class names and the run's config. The SSGRL head's word vectors and label
co-occurrence are buffers of that state dict, so the model is rebuilt from the file alone: no
dataset, no word-vector package and no pretrained backbone file are needed to use it.

The file is read with ``torch.load(weights_only=True)``: a crafted pickle cannot run code, and
anything that is not a pu-mlc checkpoint is refused with one line naming the file.

:func:`evaluate_split` scores a split exactly as the run's own evaluation did (same split
construction, image checks, test transform, batch size, :func:`pu_mlc.engine.evaluate.predict`
and :func:`~pu_mlc.engine.evaluate.summarise`), so its mAP equals ``metrics.json``'s
``result.test_mAP`` for the run's test split. :func:`predict_images` runs the same pipeline over
arbitrary image files.

Decisions: a run chooses the threshold that turns its selected model's scores into yes/no (on the
validation split under the honest protocol; ``pu_mlc.engine.protocols``). :attr:`LoadedRun.thresholds`
is that choice, read from ``best.pt`` or, for a checkpoint written without it, from the run's
``metrics.json`` beside ``checkpoints/`` when it describes the same epoch and weights; ``predict``
decides with it and never falls back to 0.5 silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from .config import TrainConfig
from .data import (DeviceTestTransform, EncodedImageDataset, MultiLabelImageDataset, Split,
                   holdout_indices, load_dataset, partial_labels, test_transform)
from .data.dataset import encoded_collate
from .data.images import check_images, image_problem
from .engine.checkpoint import FORMAT_VERSION, load_failure_reason
from .engine.distributed import DistContext, resolve_device
from .engine.evaluate import EvalTarget, predict, summarise
from .engine.precision import Precision, resolve_precision
from .errors import ConfigError, DataError, PUMLCError
from .files import read_json
from .metrics import ShardedEvalSampler

log = logging.getLogger(__name__)

PathLike = Union[str, Path]
SPLITS = ("test", "val")


class CheckpointError(DataError):
    """A checkpoint file is missing, unreadable, foreign or does not fit its own config."""


@dataclass
class LoadedRun:
    """A model rebuilt from ``best.pt`` (in eval mode, on ``device``) and what came with it."""

    model: nn.Module
    config: TrainConfig
    class_names: tuple[str, ...]
    checkpoint: Path
    epoch: Optional[int]                 # epoch the weights are from (1-based, as logged)
    which: Optional[str]                 # 'regular' | 'ema'
    selection_score: Optional[float]
    device: torch.device
    #: {kind: global | per_class, values: one per class, chosen_on: val | test, criterion,
    #: source: where it was read}; None when the run recorded no threshold
    thresholds: Optional[dict] = None

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def resolve_checkpoint(path: PathLike) -> Path:
    """``path`` itself, or ``path/checkpoints/best.pt`` when ``path`` is a run's output dir."""
    p = Path(path)
    if p.is_dir():
        best = p / "checkpoints" / "best.pt"
        if not best.is_file():
            raise CheckpointError(f"checkpoint {p} is a directory without checkpoints/best.pt; "
                                  f"pass a run's output dir or its checkpoints/best.pt")
        return best
    if not p.exists():
        raise CheckpointError(f"checkpoint {p} does not exist; pass a run's "
                              f"OUTPUT_DIR/checkpoints/best.pt")
    return p


def read_best_checkpoint(path: PathLike) -> dict:
    """The content of a ``best.pt``, checked; tensors on the CPU. Never unpickles code."""
    p = resolve_checkpoint(path)
    try:
        state = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated file, foreign pickle (weights_only refuses), not torch
        raise CheckpointError(f"checkpoint {p} cannot be read as a pu-mlc best.pt "
                              f"({type(err).__name__}: {load_failure_reason(err)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"checkpoint {p} holds a {type(state).__name__}, not a pu-mlc "
                              f"best.pt (a dict with model, class_names and config)")
    missing = [k for k in ("format_version", "model", "class_names", "config") if k not in state]
    if missing:
        hint = (" (it is a run's last.pt, the resume state; use checkpoints/best.pt)"
                if "history" in state else
                " (it looks like a bare state dict; pass a run's checkpoints/best.pt)"
                if "model" not in state else "")
        raise CheckpointError(f"checkpoint {p} is not a pu-mlc best.pt: missing "
                              f"{', '.join(missing)}{hint}")
    if state["format_version"] != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {p} has format {state['format_version']!r}, this "
                              f"version of pu-mlc reads {FORMAT_VERSION}")
    weights = state["model"]
    if not isinstance(weights, Mapping) or not weights or \
            not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                    for k, v in weights.items()):
        raise CheckpointError(f"checkpoint {p}: 'model' is not a state dict of tensors")
    names = state["class_names"]
    if not isinstance(names, (list, tuple)) or not names or \
            not all(isinstance(n, str) for n in names) or len(set(names)) != len(names):
        raise CheckpointError(f"checkpoint {p}: 'class_names' must be a non-empty list of "
                              f"distinct strings")
    if not isinstance(state["config"], Mapping):
        raise CheckpointError(f"checkpoint {p}: 'config' is not a mapping of config fields")
    state["path"] = p
    return state


def config_of(state: Mapping[str, Any]) -> TrainConfig:
    """The run's :class:`TrainConfig` from a checkpoint read by :func:`read_best_checkpoint`."""
    try:
        return TrainConfig.from_dict(dict(state["config"]),
                                     source=f"checkpoint {state['path']}")
    except PUMLCError:
        raise
    except Exception as err:  # a config this version cannot construct
        raise CheckpointError(f"checkpoint {state['path']}: its config cannot be read "
                              f"({type(err).__name__}: {err})") from None


def load_run(path: PathLike, device: Union[str, torch.device] = "cpu") -> LoadedRun:
    """Rebuild the model of a ``best.pt`` and load its weights (strict), in eval mode."""
    from .models import build_model

    state = read_best_checkpoint(path)
    p: Path = state["path"]
    cfg = config_of(state)
    class_names = tuple(state["class_names"])
    weights: Mapping[str, torch.Tensor] = state["model"]
    word_vectors = adjacency = None
    if cfg.head == "ssgrl":
        absent = [k for k in ("head.word_vectors", "head.adjacency") if k not in weights]
        if absent:
            raise CheckpointError(f"checkpoint {p}: the ssgrl head's {' and '.join(absent)} "
                                  f"are missing from the state dict")
        word_vectors = weights["head.word_vectors"].float().numpy()
        adjacency = weights["head.adjacency"].float().numpy()
    try:
        model = build_model(cfg.model_name, len(class_names), head=cfg.head,
                            word_vectors=word_vectors, adjacency=adjacency, pretrained=None,
                            lgc=cfg.lgc, lgc_impl=cfg.lgc_impl, head_dim=cfg.head_dim)
    except PUMLCError as err:
        raise CheckpointError(f"checkpoint {p}: its model cannot be rebuilt ({err})") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"checkpoint {p}: the weights do not fit the model its config "
                              f"describes ({' '.join(str(err).split())[:300]})") from None
    dev = device if isinstance(device, torch.device) else _device(str(device))
    model.to(dev)
    if dev.type == "cuda" and cfg.channels_last:
        model.to(memory_format=torch.channels_last)
    model.eval()
    epoch = state.get("epoch")
    return LoadedRun(model, cfg, class_names, p, epoch if isinstance(epoch, int) else None,
                     state.get("which"), state.get("selection_score"), dev,
                     recorded_thresholds(state, len(class_names)))


def recorded_thresholds(state: Mapping[str, Any], num_classes: int) -> Optional[dict]:
    """The decision thresholds of a ``best.pt`` (:func:`read_best_checkpoint`): its own, else
    those of the run's ``metrics.json`` (``OUTPUT_DIR/metrics.json`` for
    ``OUTPUT_DIR/checkpoints/best.pt``) when that file's selection is this file's epoch and
    weights; None when neither has them. Malformed thresholds are refused."""
    p: Path = state["path"]
    if state.get("thresholds") is not None:
        return _checked_thresholds(state["thresholds"], num_classes, f"checkpoint {p}",
                                   source="best.pt")
    metrics_file = p.parent.parent / "metrics.json"
    if p.parent.name != "checkpoints" or not metrics_file.is_file():
        return None
    try:
        result = (read_json(metrics_file) or {}).get("result") or {}
    except (OSError, ValueError):
        return None
    same = (result.get("selected_epoch") == state.get("epoch")
            and result.get("selected_model") == state.get("which"))
    if not same or result.get("thresholds") is None:
        return None
    return _checked_thresholds(result["thresholds"], num_classes, f"{metrics_file}",
                               source=str(metrics_file))


def _checked_thresholds(value: Any, num_classes: int, where: str, source: str) -> dict:
    kind = value.get("kind") if isinstance(value, Mapping) else None
    values = value.get("values") if isinstance(value, Mapping) else None
    ok = (kind in ("global", "per_class") and isinstance(values, (list, tuple))
          and len(values) == num_classes
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1
                  for v in values)
          and (kind != "global" or len(set(values)) <= 1))
    if not ok:
        raise CheckpointError(f"{where}: 'thresholds' must be {{kind: global|per_class, "
                              f"values: {num_classes} numbers in [0, 1]}}, got "
                              f"{str(value)[:200]}")
    return {"kind": kind, "values": [float(v) for v in values],
            "chosen_on": str(value.get("chosen_on") or "?"),
            "criterion": str(value.get("criterion") or ""), "source": source}


def _device(preference: str) -> torch.device:
    try:
        return resolve_device(preference)
    except ValueError as err:
        raise ConfigError(f"device (--device) = {preference!r}: {err}") from None


# ------------------------------------------------------------------------------------------------
def eval_precision(run: LoadedRun, precision: Optional[str] = None) -> Precision:
    """fp32 on the CPU; on CUDA the precision the run recorded (``precision`` overrides both)."""
    if precision is None:
        precision = run.config.precision if run.device.type == "cuda" else "fp32"
    try:
        return resolve_precision(precision, run.device)
    except ValueError as err:
        raise ConfigError(f"precision (--precision) = {precision!r}: {err}") from None


def eval_pipeline(run: LoadedRun) -> str:
    """The pipeline the run recorded ('pil' or 'tensor'; a config that still says 'auto' is
    resolved for this device as :func:`pu_mlc.engine.data_setup.resolve_pipeline` does)."""
    from .engine.data_setup import resolve_pipeline

    return resolve_pipeline(run.config, run.device)


def _loader(run: LoadedRun, split: Split, targets: np.ndarray, batch_size: int,
            workers: int) -> tuple[DataLoader, Any]:
    """An evaluation loader as ``build_loaders`` makes it, and its batch -> input function."""
    cfg, device = run.config, run.device
    mean, std = run.model.input_mean, run.model.input_std
    if eval_pipeline(run) == "pil":
        ds = MultiLabelImageDataset(split, targets, test_transform(cfg.crop_size, mean, std))
        collate = None

        def to_input(batch) -> torch.Tensor:
            return batch[0].to(device, non_blocking=True)
    else:
        ds = EncodedImageDataset(split, targets)
        collate = encoded_collate
        transform = DeviceTestTransform(cfg.crop_size, mean, std)

        def to_input(batch) -> torch.Tensor:
            return transform(batch[0], device)

    def batch_to_input(batch) -> torch.Tensor:
        x = to_input(batch)
        if device.type == "cuda" and cfg.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    loader = DataLoader(ds, batch_size=batch_size, sampler=ShardedEvalSampler(len(ds), 0, 1),
                        drop_last=False, num_workers=workers, pin_memory=device.type == "cuda",
                        collate_fn=collate)
    return loader, batch_to_input


def default_batch_size(cfg: TrainConfig) -> int:
    """The run's evaluation batch size (``eval_batch_size`` or 2 x ``batch_size``)."""
    return cfg.eval_batch_size or 2 * cfg.batch_size


@dataclass
class SplitScores:
    """Scores of one split: the images (dataset order), sigmoid scores and the summary."""

    split: str
    files: tuple[str, ...]
    image_dir: Path
    scores: np.ndarray                   # float32 (N, C)
    summary: dict
    dropped_images: list[str]
    positives: Optional[np.ndarray] = None   # bool (N, C): the labels the summary used
    valid: Optional[np.ndarray] = None       # bool (N, C) of known entries (None: all known)


def _split_for(cfg: TrainConfig, which: str) -> tuple[Split, np.ndarray, bool]:
    """(split, targets, partial) as the run built ``which`` ('test' or 'val'): the test split
    with its full labels; the val split (or the held-out part of train) with the run's partial
    labels (seed ``mask_seed``) drawn over it (over the whole train matrix for a held-out part;
    the hold-out itself is always seed 0)."""
    splits = load_dataset(cfg.dataset, cfg.data)
    if which == "test":
        test = splits["test"]
        return test, test.labels, False
    if "val" in splits:
        val = splits["val"]
        return val, partial_labels(val.labels, cfg.prob, seed=cfg.mask_seed), True
    train = splits["train"]
    targets = partial_labels(train.labels, cfg.prob, seed=cfg.mask_seed)
    _, held = holdout_indices(len(train), cfg.val_fraction, seed=0)
    return train.subset(held), targets[held], True


def _checked(split: Split, targets: np.ndarray, cfg: TrainConfig
             ) -> tuple[Split, np.ndarray, list[str]]:
    """Check every image as the run did: stop on a bad one, or drop it with
    ``skip_bad_images``."""
    _, bad = check_images(split, skip_bad=cfg.skip_bad_images,
                          workers=max(1, min(8, cfg.workers or 1)))
    if not bad:
        return split, targets, []
    bad_set = set(bad)
    keep = np.array([i for i, f in enumerate(split.files) if f not in bad_set], dtype=np.int64)
    return split.subset(keep), targets[keep], bad


def evaluate_split(run: LoadedRun, data: Optional[PathLike] = None,
                   dataset: Optional[str] = None, split: str = "test",
                   batch_size: Optional[int] = None, workers: Optional[int] = None,
                   precision: Optional[str] = None) -> SplitScores:
    """Score ``split`` of the dataset at ``data`` (default: the run's) as the run did.

    ``test``: the full labels of the test split. ``val``: the honest protocol's validation split
    (the dataset's val split, else the held-out fraction of train) with the run's partial labels
    (seed ``mask_seed``); only known entries count. Unreadable images stop with
    :class:`DataError` unless the run used ``skip_bad_images`` (then they are dropped, as in the
    run).
    """
    if split not in SPLITS:
        raise ConfigError(f"split (--split) = {split!r}: choose one of {', '.join(SPLITS)}")
    changes: dict[str, Any] = {}
    if data is not None:
        changes["data"] = str(data)
    if dataset is not None:
        changes["dataset"] = dataset
    if workers is not None:
        changes["workers"] = int(workers)
    cfg = run.config.replace(**changes) if changes else run.config
    if not cfg.data:
        raise ConfigError("no dataset root: pass DATA_ROOT (the checkpoint's config has none)")
    bs = default_batch_size(cfg) if batch_size is None else int(batch_size)
    if bs < 1:
        raise ConfigError(f"batch size (--batch-size) = {bs}: need at least 1 image")

    ds_split, targets, partial = _split_for(cfg, split)
    if ds_split.class_names != run.class_names:
        raise DataError(f"the {cfg.dataset} dataset at {cfg.data} ({ds_split.source}) has "
                        f"{len(ds_split.class_names)} classes that differ from the "
                        f"{run.num_classes} the checkpoint {run.checkpoint} was trained on; "
                        f"evaluate it on the dataset it was trained for (--dataset)")
    ds_split, targets, dropped = _checked(ds_split, targets, cfg)
    if len(ds_split) == 0:
        raise DataError(f"the {split} split of {cfg.data} has no images to score")
    loader, to_input = _loader(run, ds_split, targets, bs, cfg.workers)
    valid = (targets != 0) if partial else None
    target = EvalTarget(split, loader, targets == 1, valid, run.class_names)
    ctx = DistContext(0, 1, 0, run.device)
    prec = eval_precision(run, precision)
    scores = predict({"model": run.model}, target, ctx, prec, to_input)["model"]
    return SplitScores(split, ds_split.files, ds_split.image_dir, scores,
                       summarise(scores, target), dropped, target.positives, target.valid)


def check_image_files(images: Sequence[PathLike]) -> list[Path]:
    """The images as paths; the first missing or unreadable one raises :class:`DataError`
    naming it."""
    if not images:
        raise ConfigError("no images given: pass one or more image files")
    paths = [Path(p) for p in images]
    for p in paths:
        if p.is_dir():
            raise DataError(f"image {p} is a directory; pass image files")
        why = image_problem(p)
        if why is not None:
            raise DataError(f"image {p} cannot be read ({why})")
    return paths


def predict_images(run: LoadedRun, images: Sequence[PathLike],
                   batch_size: Optional[int] = None, workers: int = 0,
                   precision: Optional[str] = None) -> np.ndarray:
    """Sigmoid scores float32 ``(len(images), C)`` of image files, with the run's test transform.

    Every file is checked first; an unreadable one raises :class:`DataError` naming it.
    """
    paths = check_image_files(images)
    bs = default_batch_size(run.config) if batch_size is None else int(batch_size)
    if bs < 1:
        raise ConfigError(f"batch size (--batch-size) = {bs}: need at least 1 image")
    files = tuple(str(p.resolve()) for p in paths)
    labels = -np.ones((len(files), run.num_classes), np.int8)
    split = Split("images", Path("/"), files, labels, run.class_names, "command line")
    loader, to_input = _loader(run, split, labels, bs, workers)
    target = EvalTarget("images", loader, labels == 1, None, run.class_names)
    ctx = DistContext(0, 1, 0, run.device)
    return predict({"model": run.model}, target, ctx, eval_precision(run, precision),
                   to_input)["model"]
