"""One split of a multi-label dataset, and the registry that reads a dataset root into splits.

Every dataset reader (COCO-2014, VOC-2007, any COCO-format folder) produces the same thing: a
:class:`Split` per part of the dataset, holding image paths and the *full* label matrix exactly as
annotated (+1 present, -1 absent). Everything downstream (the partial-label mask, held-out
validation, image checks, loaders) works on splits and never on a dataset's own format, so a new
dataset needs only a reader that returns ``{'train': Split, 'test': Split, ['val': Split]}``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence, Union

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Split:
    """The images of one split and their full labels, in dataset order.

    ``files`` are relative to ``image_dir``; ``labels`` is ``(len(files), len(class_names))``
    int8 with +1 for a class present and -1 for absent. ``source`` names the annotation file(s) the
    split was read from, so later messages (an unreadable image, a class-count mismatch) can say
    where the data came from.
    """

    name: str
    image_dir: Path
    files: tuple[str, ...]
    labels: np.ndarray
    class_names: tuple[str, ...]
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "image_dir", Path(self.image_dir))
        object.__setattr__(self, "files", tuple(self.files))
        object.__setattr__(self, "class_names", tuple(self.class_names))
        labels = np.asarray(self.labels)
        if labels.ndim != 2 or labels.shape != (len(self.files), len(self.class_names)):
            raise ValueError(
                f"Split {self.name!r}: labels of shape {labels.shape} do not match "
                f"{len(self.files)} files x {len(self.class_names)} classes")
        if labels.size and not np.isin(labels, (-1, 1)).all():
            raise ValueError(f"Split {self.name!r}: full labels must be +1 or -1")
        object.__setattr__(self, "labels", labels.astype(np.int8, copy=False))

    def __len__(self) -> int:
        return len(self.files)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def path(self, i: int) -> Path:
        """Absolute path of image ``i``."""
        return self.image_dir / self.files[i]

    def subset(self, indices: Union[Sequence[int], np.ndarray]) -> "Split":
        """The split restricted to ``indices`` (in the given order), labels included."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"Split {self.name!r} has {len(self)} images; index out of range")
        return Split(self.name, self.image_dir, tuple(self.files[i] for i in idx),
                     self.labels[idx], self.class_names, self.source)


def _readers() -> dict[str, Callable[[Path], dict[str, Split]]]:
    from .coco import load_coco2014, load_coco_format
    from .voc import load_voc2007
    return {"COCO2014": load_coco2014, "VOC2007": load_voc2007, "coco": load_coco_format}


def load_dataset(dataset: str, root: Union[str, Path]) -> dict[str, Split]:
    """Read the dataset ``dataset`` (one of :data:`pu_mlc.choices.DATASETS`) under ``root``.

    Returns ``{'train': Split, 'test': Split}`` plus ``'val'`` when the dataset ships a validation
    split of its own (the ``coco`` layout with ``annotations/instances_val.json``). Annotation
    problems raise :class:`~pu_mlc.errors.DataError` before any image is opened; train and test
    must share one class list.
    """
    readers = _readers()
    by_lower = {k.lower(): k for k in readers}
    dataset = by_lower.get(str(dataset).lower(), dataset)
    if dataset not in readers:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(readers)}")
    root = Path(root).expanduser()
    if not str(root) or not root.is_dir():
        raise DataError(f"dataset root {str(root)!r} for --dataset {dataset} is not a directory; "
                        f"pass the folder that holds the {dataset} layout "
                        f"({_LAYOUT_HINT[dataset]})")
    splits = readers[dataset](root)
    _check_same_classes(splits)
    for s in splits.values():
        log.info("%s %s: %d images, %d classes, %.2f labels per image (%s)", dataset, s.name,
                 len(s), s.num_classes, float((s.labels == 1).sum(1).mean()) if len(s) else 0.0,
                 s.source)
    return splits


_LAYOUT_HINT = {
    "COCO2014": "train2014/, val2014/, annotations/instances_{train,val}2014.json",
    "VOC2007": "JPEGImages/, Annotations/*.xml, ImageSets/Main/{trainval,test}.txt, "
               "or a folder holding VOCdevkit/VOC2007",
    "coco": "annotations/instances_{train,test}.json (+ optional instances_val.json) with "
            "images under train/, test/ (and val/)",
}


def _check_same_classes(splits: dict[str, Split]) -> None:
    train = splits["train"]
    for name, s in splits.items():
        if s.class_names != train.class_names:
            only_train = [c for c in train.class_names if c not in s.class_names]
            only_other = [c for c in s.class_names if c not in train.class_names]
            detail = (f"only in train: {only_train[:5]}, only in {name}: {only_other[:5]}"
                      if only_train or only_other else "same names in a different order")
            raise DataError(
                f"the class lists of {train.source} ({len(train.class_names)} classes) and "
                f"{s.source} ({len(s.class_names)} classes) disagree ({detail}); every split "
                f"must use the same categories (same ids, names and order)")
