"""Readers for COCO-format annotations: the COCO-2014 layout and any ``coco``-layout dataset.

MS-COCO 2014 is the paper's main benchmark; the same reader serves any dataset stored in COCO
format (the built-in Fashion-MNIST demo included), so a user's own data goes through exactly the
code a COCO run uses. Semantics follow the published code: the images are every image listed in
the json, in json order, including those without annotations (all classes -1); category ids are
mapped to label columns in sorted id order; an image is positive for a class when any of its
annotations (crowd or not) has that category. The json is checked before pycocotools indexes it,
so a malformed file stops with its name and the offending id instead of a ``KeyError`` later.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataError
from .splits import Split

log = logging.getLogger(__name__)

COCO2014_FILES = {"train": ("train2014", "instances_train2014.json"),
                  "test": ("val2014", "instances_val2014.json")}
COCO_FORMAT_FILES = {"train": ("train", "instances_train.json"),
                     "test": ("test", "instances_test.json"),
                     "val": ("val", "instances_val.json")}


def load_coco2014(root: Path) -> dict[str, Split]:
    """COCO-2014 as published: train = ``train2014`` (82,783 images), test = ``val2014``."""
    layout = ("COCO2014 layout: train2014/, val2014/, "
              "annotations/instances_{train,val}2014.json")
    return _load_layout(Path(root), COCO2014_FILES, optional=(), layout=layout)


def load_coco_format(root: Path) -> dict[str, Split]:
    """Any COCO-format dataset: ``annotations/instances_{train,test}[,val].json`` + image folders.

    ``file_name`` of each image is relative to the split's folder (``root/train/`` ...). The class
    list is the json's own categories, sorted by id.
    """
    layout = ("coco layout: annotations/instances_train.json, annotations/instances_test.json "
              "(optional annotations/instances_val.json) with images under train/, test/ (val/)")
    return _load_layout(Path(root), COCO_FORMAT_FILES, optional=("val",), layout=layout)


def _load_layout(root: Path, files: dict[str, tuple[str, str]], optional: tuple[str, ...],
                 layout: str) -> dict[str, Split]:
    # Every path is checked before the first (possibly 450 MB) json is parsed.
    present: dict[str, tuple[Path, Path]] = {}
    for split, (image_folder, ann_name) in files.items():
        ann = root / "annotations" / ann_name
        images = root / image_folder
        if not ann.is_file():
            if split in optional:
                continue
            raise DataError(f"annotation file {ann} not found; expected the {layout} under "
                            f"{root}")
        if not images.is_dir():
            raise DataError(f"image folder {images} for {ann} not found; expected the {layout} "
                            f"under {root}")
        present[split] = (ann, images)
    return {split: read_coco_split(split, ann, images) for split, (ann, images) in present.items()}


def read_coco_split(name: str, annotation_file: Path, image_dir: Path) -> Split:
    """Read one COCO instances json into a :class:`Split` (full labels, json image order)."""
    annotation_file = Path(annotation_file)
    data = _read_json(annotation_file)
    images, categories, annotations = _validated(data, annotation_file)

    coco = _index(data)
    cat_ids = sorted(coco.getCatIds())
    column = {cid: j for j, cid in enumerate(cat_ids)}
    class_names = tuple(str(coco.cats[cid]["name"]) for cid in cat_ids)
    img_ids = list(coco.imgs.keys())                      # json order, as the published reader
    row = {iid: i for i, iid in enumerate(img_ids)}

    labels = np.full((len(img_ids), len(cat_ids)), -1, dtype=np.int8)
    if annotations:
        rows = np.fromiter((row[a["image_id"]] for a in annotations), np.int64, len(annotations))
        cols = np.fromiter((column[a["category_id"]] for a in annotations), np.int64,
                           len(annotations))
        labels[rows, cols] = 1
    files = tuple(str(coco.imgs[iid]["file_name"]) for iid in img_ids)
    empty = int((labels == -1).all(1).sum())
    log.debug("%s: %d images (%d without annotations), %d annotations, %d categories",
              annotation_file, len(files), empty, len(annotations), len(cat_ids))
    return Split(name, Path(image_dir), files, labels, class_names, str(annotation_file))


def _read_json(path: Path) -> Any:
    try:
        with open(path, "rb") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"annotation file {path} is not valid JSON ({e.msg} at line {e.lineno}, "
                        f"column {e.colno}); re-download or re-export it in COCO format") from None
    except UnicodeDecodeError as e:
        raise DataError(f"annotation file {path} is not UTF-8 JSON ({e}); re-export it in COCO "
                        f"format") from None
    except OSError as e:
        raise DataError(f"annotation file {path} cannot be read ({e}); check the path and "
                        f"permissions") from None


def _validated(data: Any, path: Path) -> tuple[list, list, list]:
    fix = "fix the file or re-export it in COCO format"
    if not isinstance(data, dict):
        raise DataError(f"annotation file {path} holds a JSON {type(data).__name__}, not a COCO "
                        f"object with 'images' and 'categories'; {fix}")
    for key in ("images", "categories"):
        if key not in data:
            raise DataError(f"annotation file {path} has no '{key}' field (found: "
                            f"{sorted(data)[:8]}); a COCO instances file needs 'images', "
                            f"'categories' and 'annotations'; {fix}")
        if not isinstance(data[key], list):
            raise DataError(f"annotation file {path}: '{key}' is a {type(data[key]).__name__}, "
                            f"not a list; {fix}")
    annotations = data.get("annotations", [])
    if not isinstance(annotations, list):
        raise DataError(f"annotation file {path}: 'annotations' is a "
                        f"{type(annotations).__name__}, not a list; {fix}")
    if "annotations" not in data:
        log.warning("%s has no 'annotations' field: every image is negative for every class",
                    path)
        data["annotations"] = annotations

    image_ids = _ids(data["images"], "images", ("id", "file_name"), path, fix)
    cat_ids = _ids(data["categories"], "categories", ("id", "name"), path, fix)
    if not cat_ids:
        raise DataError(f"annotation file {path} lists no categories; {fix}")
    for k, ann in enumerate(annotations):
        if not isinstance(ann, dict) or "image_id" not in ann or "category_id" not in ann:
            raise DataError(f"annotation file {path}: annotations[{k}] lacks 'image_id' or "
                            f"'category_id'; {fix}")
        if ann["image_id"] not in image_ids:
            raise DataError(f"annotation file {path}: annotation id {ann.get('id')!r} "
                            f"(annotations[{k}]) points at image_id {ann['image_id']!r}, which "
                            f"is not in 'images'; {fix}")
        if ann["category_id"] not in cat_ids:
            raise DataError(f"annotation file {path}: annotation id {ann.get('id')!r} "
                            f"(annotations[{k}]) has category_id {ann['category_id']!r}, which "
                            f"is not in 'categories' (ids {sorted(cat_ids)[:10]}...); {fix}")
    return data["images"], data["categories"], annotations


def _ids(items: list, field: str, required: tuple[str, ...], path: Path, fix: str) -> set:
    seen: set = set()
    for k, item in enumerate(items):
        if not isinstance(item, dict) or any(r not in item for r in required):
            raise DataError(f"annotation file {path}: {field}[{k}] lacks one of "
                            f"{list(required)}; {fix}")
        iid = item["id"]
        if not isinstance(iid, (int, str)) or isinstance(iid, bool):
            raise DataError(f"annotation file {path}: {field}[{k}] has id {iid!r}, not an "
                            f"integer; {fix}")
        if iid in seen:
            raise DataError(f"annotation file {path}: {field} id {iid!r} appears twice; {fix}")
        seen.add(iid)
    return seen


def _index(data: dict) -> Any:
    """A pycocotools ``COCO`` object over already-parsed, already-validated json."""
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):   # pycocotools prints progress
        coco.createIndex()
    return coco
