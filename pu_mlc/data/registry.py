"""The dataset registry: a ``--dataset`` name -> the reader that turns its root into splits.

Readers live one per format (:mod:`pu_mlc.data.coco`, :mod:`pu_mlc.data.voc`) and return
``{'train': Split, 'test': Split, ['val': Split]}`` (:class:`pu_mlc.data.splits.Split`); this
module names them and checks what every dataset must satisfy (one class list for all splits).
The names are those of :data:`pu_mlc.choices.DATASETS`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Union

from ..errors import DataError
from .coco import load_coco2014, load_coco_format
from .splits import Split
from .voc import load_voc2007

log = logging.getLogger(__name__)

READERS: dict[str, Callable[[Path], dict[str, Split]]] = {
    "COCO2014": load_coco2014, "VOC2007": load_voc2007, "coco": load_coco_format}


def load_dataset(dataset: str, root: Union[str, Path]) -> dict[str, Split]:
    """Read the dataset ``dataset`` (one of :data:`pu_mlc.choices.DATASETS`) under ``root``.

    Returns ``{'train': Split, 'test': Split}`` plus ``'val'`` when the dataset ships a validation
    split of its own (the ``coco`` layout with ``annotations/instances_val.json``). Annotation
    problems raise :class:`~pu_mlc.errors.DataError` before any image is opened; train and test
    must share one class list.
    """
    readers = READERS
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


def _check_registry() -> None:
    from ..choices import DATASETS

    if tuple(READERS) != DATASETS:
        raise ImportError(f"pu_mlc.choices.DATASETS {DATASETS} != the readers registered here "
                          f"{tuple(READERS)}: list a new dataset in both")


_check_registry()
