"""Reader for PASCAL VOC 2007 (the paper's second benchmark).

Semantics follow the published code: train = ``ImageSets/Main/trainval.txt``, test =
``ImageSets/Main/test.txt`` (no validation split: ``trainval`` already contains VOC's ``val``),
images ``JPEGImages/<id>.jpg``, the 20 classes in the usual order, and objects marked
``<difficult>1</difficult>`` skipped, so a class present in an image only as difficult objects is
negative (-1) there. All list files and xml files are checked before any image is opened.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np

from ..errors import DataError
from .splits import Split

log = logging.getLogger(__name__)

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair",
               "cow", "diningtable", "dog", "horse", "motorbike", "person", "pottedplant",
               "sheep", "sofa", "train", "tvmonitor")
VOC2007_LISTS = {"train": "trainval.txt", "test": "test.txt"}
_LAYOUT = ("VOC2007 layout: JPEGImages/, Annotations/*.xml, ImageSets/Main/{trainval,test}.txt "
           "(root is that folder, or a folder holding VOCdevkit/VOC2007)")


def find_voc2007(root: Path) -> Path:
    """The VOC2007 folder under ``root`` (``root`` itself, ``root/VOC2007`` or the devkit one)."""
    root = Path(root)
    candidates = [root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"]
    for c in candidates:
        if (c / "Annotations").is_dir() or (c / "ImageSets").is_dir():
            return c
    raise DataError(f"no VOC2007 dataset under {root}: none of "
                    f"{', '.join(str(c / 'Annotations') for c in candidates)} exists; expected "
                    f"the {_LAYOUT}")


def load_voc2007(root: Path) -> dict[str, Split]:
    """VOC 2007 as published: trainval for training, test for testing, difficult skipped."""
    voc = find_voc2007(Path(root))
    for sub in ("Annotations", "JPEGImages"):
        if not (voc / sub).is_dir():
            raise DataError(f"folder {voc / sub} not found; expected the {_LAYOUT}")
    lists = {}
    for split, list_name in VOC2007_LISTS.items():
        path = voc / "ImageSets" / "Main" / list_name
        if not path.is_file():
            raise DataError(f"image list {path} not found; expected the {_LAYOUT}")
        lists[split] = (path, _read_ids(path))
    return {split: _read_split(split, voc, path, ids) for split, (path, ids) in lists.items()}


def _read_ids(path: Path) -> list[str]:
    ids = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts:                       # the per-class lists are "<id> <flag>"; take the id
            ids.append(parts[0])
    if not ids:
        raise DataError(f"image list {path} is empty; it must name one image id per line")
    return ids


def _read_split(name: str, voc: Path, list_file: Path, ids: list[str]) -> Split:
    column = {c: j for j, c in enumerate(VOC_CLASSES)}
    labels = np.full((len(ids), len(VOC_CLASSES)), -1, dtype=np.int8)
    skipped_difficult = 0
    for i, image_id in enumerate(ids):
        xml_path = voc / "Annotations" / f"{image_id}.xml"
        for cls, difficult in _objects(xml_path, list_file, image_id):
            if cls not in column:
                raise DataError(f"annotation {xml_path} has an object named {cls!r}, not one of "
                                f"the 20 VOC classes ({', '.join(VOC_CLASSES)}); fix the "
                                f"<name> or remove the object")
            if difficult:
                skipped_difficult += 1
                continue
            labels[i, column[cls]] = 1
    log.debug("%s: %d images, %d difficult objects skipped", list_file, len(ids),
              skipped_difficult)
    files = tuple(f"{image_id}.jpg" for image_id in ids)
    return Split(name, voc / "JPEGImages", files, labels, VOC_CLASSES,
                 f"{list_file} + {voc / 'Annotations'}")


def _objects(xml_path: Path, list_file: Path, image_id: str) -> list[tuple[str, bool]]:
    """(lower-case class name, difficult) of every <object> of one VOC annotation file."""
    if not xml_path.is_file():
        raise DataError(f"{list_file} names image id {image_id!r} but its annotation {xml_path} "
                        f"does not exist; add the xml or remove the id from the list")
    try:
        tree = ET.parse(xml_path)
    except ET.ParseError as e:
        raise DataError(f"annotation {xml_path} is not valid XML ({e}); fix or re-download it "
                        f"(or remove id {image_id!r} from {list_file})") from None
    out = []
    for k, obj in enumerate(tree.getroot().iter("object")):
        name = obj.findtext("name")
        if name is None or not name.strip():
            raise DataError(f"annotation {xml_path}: <object> #{k} has no <name>; fix the file")
        difficult = (obj.findtext("difficult") or "0").strip()
        if difficult not in ("0", "1"):
            raise DataError(f"annotation {xml_path}: <object> #{k} ({name.strip()}) has "
                            f"<difficult>{difficult}</difficult>; it must be 0 or 1")
        out.append((name.strip().lower(), difficult == "1"))
    return out
