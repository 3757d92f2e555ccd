"""From a TrainConfig to the labels, splits and loaders of one run.

Order matters and follows the paper: the MLC-PL mask is drawn (seed ``mask_seed``; 0 is the
published mask) over the *whole* training label matrix in dataset order, before anything is held
out or dropped, so every remaining image keeps exactly the mask it has in the published protocol.
The honest protocol's hold-out is drawn with its own fixed seed, not ``mask_seed``, so runs that
differ only in the mask seed validate on the same images. Everything that can be wrong with the
data (annotation files, class count, unreadable images, word vectors) is found here, before the
model is built.

Training randomness in the loaders is re-derived, never carried: the shuffle is
``DistributedSampler``'s (seed, epoch); every training sample's augmentation (PIL path) is drawn
with torch's CPU RNG seeded from (seed, rank, epoch, position in the epoch) inside the loader
(:class:`AugmentationSeededSampler` + :class:`SeededSamples`), and the tensor path's
:class:`~pu_mlc.data.DeviceTrainTransform` is re-seeded from (seed, rank, epoch) at every epoch
start (:meth:`Loaders.set_epoch`). So an epoch's batches depend on (seed, rank, epoch) only: not
on the number of loader processes, on persistent workers' earlier draws, or on whether the run was
resumed.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..data import (DeviceTestTransform, DeviceTrainTransform, EncodedImageDataset,
                    MultiLabelImageDataset, Split, class_word_vectors,
                    holdout_indices, label_cooccurrence, load_dataset, partial_labels,
                    test_transform, train_transform)
from ..data.dataset import encoded_collate
from ..data.images import find_bad_images
from ..errors import ConfigError, DataError
from ..metrics import ShardedEvalSampler
from .distributed import DistContext

if TYPE_CHECKING:                                       # for annotations only
    from ..config import TrainConfig

log = logging.getLogger(__name__)


@dataclass
class LabelledSplit:
    split: Split
    targets: np.ndarray          # int8 (N, C) in {-1, 0, +1}


@dataclass
class RunData:
    class_names: tuple[str, ...]
    train: LabelledSplit                     # partial labels
    test: LabelledSplit                      # full labels
    val: Optional[LabelledSplit] = None      # honest protocol only (partial labels)
    word_vectors: Optional[np.ndarray] = None
    adjacency: Optional[np.ndarray] = None
    dropped_images: dict[str, list[str]] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def summary(self) -> dict:
        known = self.train.targets != 0
        return {
            "classes": self.num_classes,
            "train_images": len(self.train.split),
            "val_images": len(self.val.split) if self.val else 0,
            "test_images": len(self.test.split),
            "train_known_fraction": float(known.mean()) if known.size else 0.0,
            "train_known_positives": int((self.train.targets == 1).sum()),
            "dropped_images": {k: len(v) for k, v in self.dropped_images.items()},
        }


def prepare_run_data(cfg: TrainConfig, ctx: DistContext) -> RunData:
    splits = load_dataset(cfg.dataset, cfg.data)
    train, test = splits["train"], splits["test"]
    class_names = tuple(train.class_names)
    if cfg.num_classes is not None and cfg.num_classes != len(class_names):
        raise ConfigError(
            f"num_classes (--num-classes) = {cfg.num_classes} but the {cfg.dataset} dataset at "
            f"{cfg.data} has {len(class_names)} classes ({train.source}); pass "
            f"--num-classes={len(class_names)} or leave the flag out")

    train_targets = partial_labels(train.labels, cfg.prob, seed=cfg.mask_seed)
    val: Optional[LabelledSplit] = None
    if cfg.protocol == "honest":
        if "val" in splits:
            val_split = splits["val"]
            val = LabelledSplit(val_split,
                                partial_labels(val_split.labels, cfg.prob, seed=cfg.mask_seed))
        else:
            # seed 0 always: the hold-out must not move with mask_seed
            keep, held = holdout_indices(len(train), cfg.val_fraction, seed=0)
            val = LabelledSplit(train.subset(held), train_targets[held])
            train, train_targets = train.subset(keep), train_targets[keep]

    dropped: dict[str, list[str]] = {}
    train, train_targets, dropped["train"] = _checked(train, train_targets, cfg, ctx)
    test_split, test_targets, dropped["test"] = _checked(test, test.labels, cfg, ctx)
    if val is not None:
        vsplit, vtargets, dropped["val"] = _checked(val.split, val.targets, cfg, ctx)
        val = LabelledSplit(vsplit, vtargets)

    steps = len(train) // (cfg.batch_size * ctx.world_size)
    if steps == 0:
        raise ConfigError(
            f"batch_size (--b) = {cfg.batch_size} x {ctx.world_size} process(es) is more than "
            f"the {len(train)} training images: no full batch per epoch; lower --b")

    word_vectors = None
    if cfg.head == "ssgrl":
        word_vectors = class_word_vectors(class_names, cfg.word_vectors, dataset=cfg.dataset)
    adjacency = label_cooccurrence(train_targets)
    return RunData(class_names, LabelledSplit(train, train_targets),
                   LabelledSplit(test_split, test_targets), val, word_vectors, adjacency,
                   {k: v for k, v in dropped.items() if v})


def _checked(split: Split, targets: np.ndarray, cfg: TrainConfig,
             ctx: DistContext) -> tuple[Split, np.ndarray, list[str]]:
    """Check every image once across all ranks (each rank a shard) and apply the verdict: refused
    with each bad image's reason (the first few), or dropped under --skip-bad-images."""
    shard = np.arange(ctx.rank, len(split), ctx.world_size)
    bad_local = find_bad_images(split.subset(shard), workers=max(1, min(8, cfg.workers or 1)))
    why = dict(sorted(pair for part in ctx.all_gather_object(bad_local) for pair in part))
    bad = list(why)
    if not bad:
        return split, targets, []
    listed = "; ".join(f"{name} ({why[name]})" for name in bad[:5])
    more = f"; and {len(bad) - 5} more" if len(bad) > 5 else ""
    if not cfg.skip_bad_images:
        raise DataError(
            f"{len(bad)} unreadable or missing image(s) in the {split.name} split under "
            f"{split.image_dir}: {listed}{more}; fix or remove them, or pass --skip-bad-images "
            f"to train without them (they are counted in metrics.json)")
    bad_set = set(bad)
    keep = np.array([i for i, f in enumerate(split.files)
                     if f not in bad_set and str(split.image_dir / f) not in bad_set],
                    dtype=np.int64)
    if ctx.is_main:
        log.warning("skipping %d unreadable image(s) of the %s split under %s: %s%s", len(bad),
                    split.name, split.image_dir, listed, more)
    return split.subset(keep), targets[keep], bad


# ------------------------------------------------------------------------------------------------
def derived_seed(*parts: int) -> int:
    """A 63-bit seed that is a fixed function of ``parts`` (seed, rank, epoch, ...), the same on
    every platform and Python version, and unrelated for neighbouring inputs."""
    digest = hashlib.blake2b(repr(tuple(int(p) for p in parts)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


class AugmentationSeededSampler(DistributedSampler):
    """``DistributedSampler`` that yields ``(index, augmentation seed)`` pairs.

    The seed is :func:`derived_seed` of (seed, rank, epoch, position in this rank's epoch order),
    so each draw of an epoch differs (also for the indices the sampler repeats to pad the last
    rank) and depends on nothing else. The sampler runs in the main process, so it always sees the
    epoch ``set_epoch`` set, even with persistent loader processes.
    """

    def __iter__(self):
        for position, index in enumerate(super().__iter__()):
            yield index, derived_seed(self.seed, self.rank, self.epoch, position)


class SeededSamples(Dataset):
    """A training dataset whose items are drawn with torch's CPU RNG seeded per sample.

    ``dataset[(index, seed)]`` is ``base[index]`` computed with the global CPU generator seeded
    with ``seed`` (and restored afterwards, so an in-process loader leaves the caller's RNG as it
    was): the random crop and flip of the PIL transforms are then a function of the seed alone,
    whichever loader process computes them.
    """

    def __init__(self, base: Dataset):
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, key):
        index, seed = key
        with torch.random.fork_rng(devices=[]):
            torch.default_generator.manual_seed(int(seed))
            return self.base[index]


@dataclass
class Loaders:
    train: DataLoader
    train_sampler: DistributedSampler
    test: DataLoader
    val: Optional[DataLoader]
    device_transform_train: Optional[object]
    device_transform_eval: Optional[object]
    seed: int = 0
    rank: int = 0

    def set_epoch(self, epoch: int) -> None:
        """Make the epoch's data randomness a function of (seed, rank, epoch): the shuffle and
        the per-sample augmentation seeds through the sampler, the device transform re-seeded."""
        self.train_sampler.set_epoch(epoch)
        reseed = getattr(self.device_transform_train, "reseed", None)
        if reseed is not None:
            reseed(derived_seed(self.seed, self.rank, epoch, -1))

    def to_input(self, batch, device: torch.device, train: bool,
                 generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """The float image batch on the device, decoding on the device for the tensor pipeline."""
        images = batch[0]
        if isinstance(images, torch.Tensor):
            return images.to(device, non_blocking=True)
        transform = self.device_transform_train if train else self.device_transform_eval
        return transform(images, device)


def resolve_pipeline(cfg: TrainConfig, device: torch.device) -> str:
    if cfg.data_pipeline == "auto":
        return "tensor" if device.type == "cuda" else "pil"
    return cfg.data_pipeline


def build_loaders(cfg: TrainConfig, data: RunData, ctx: DistContext, mean, std) -> Loaders:
    pipeline = resolve_pipeline(cfg, ctx.device)
    pin = ctx.device.type == "cuda"
    if pipeline == "pil":
        def make(ls: LabelledSplit, train: bool):
            tf = (train_transform(cfg.scale_size, cfg.crop_size, mean, std) if train
                  else test_transform(cfg.crop_size, mean, std))
            return MultiLabelImageDataset(ls.split, ls.targets, tf)
        collate = None
        dev_train = dev_eval = None
    else:
        def make(ls: LabelledSplit, train: bool):
            return EncodedImageDataset(ls.split, ls.targets)
        collate = encoded_collate
        dev_train = DeviceTrainTransform(cfg.scale_size, cfg.crop_size, mean, std,
                                         seed=cfg.seed + 1000 * ctx.rank)
        dev_eval = DeviceTestTransform(cfg.crop_size, mean, std)

    common = dict(num_workers=cfg.workers, pin_memory=pin, collate_fn=collate,
                  persistent_workers=cfg.workers > 0)
    train_ds = SeededSamples(make(data.train, True))
    sampler = AugmentationSeededSampler(train_ds, num_replicas=ctx.world_size, rank=ctx.rank,
                                        shuffle=True, seed=cfg.seed)
    train_loader = DataLoader(train_ds, batch_size=cfg.batch_size, sampler=sampler,
                              drop_last=True, **common)
    eval_bs = cfg.eval_batch_size or 2 * cfg.batch_size

    def eval_loader(ls: LabelledSplit) -> DataLoader:
        ds = make(ls, False)
        return DataLoader(ds, batch_size=eval_bs,
                          sampler=ShardedEvalSampler(len(ds), ctx.rank, ctx.world_size),
                          drop_last=False, **common)

    return Loaders(train_loader, sampler, eval_loader(data.test),
                   eval_loader(data.val) if data.val else None, dev_train, dev_eval,
                   seed=cfg.seed, rank=ctx.rank)
