"""Writers of small, real datasets in the layouts PU-MLC reads, for tests.

Images are real Fashion-MNIST items composed on real backgrounds by the demo's
:class:`~pu_mlc.data.demo.DemoComposer`; the annotation files follow the published formats
(COCO-2014 instances json with all its usual fields, VOC-2007 xml). Each writer returns the labels
it meant to write, so tests compare a reader's output with what was written, not with the
reader's own logic. Helpers at the bottom damage files to build broken variants in ``tmp_path``.
"""

from __future__ import annotations

import functools
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image

from pu_mlc.data.demo import ComposedImage, DemoComposer, ItemPool, build_demo_dataset
from pu_mlc.data.fashion_mnist import load_fashion_mnist
from pu_mlc.data.voc import VOC_CLASSES
from pu_mlc.data.words import COCO2014_CLASSES

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: The 80 real COCO-2014 category ids (1..90 with the official gaps), in the order of
#: ``COCO2014_CLASSES``: the fixture lists every real category, so the published word vectors and
#: the published model size apply to it.
COCO2014_CATEGORY_IDS = tuple(i for i in range(1, 91)
                              if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83))
#: Order in which the categories are listed in the fixture json (shuffled, not sorted by id).
COCO2014_CATEGORY_JSON_ORDER = tuple(int(i) for i in np.random.default_rng(7).permutation(80))
#: COCO category standing in for each Fashion-MNIST class in the COCO-2014 fixture (ids with gaps
#: between them, so "sorted id order" matters).
COCO_FOR_FASHION = ("person", "tie", "handbag", "umbrella", "backpack", "suitcase", "bench",
                    "chair", "couch", "toothbrush")
#: VOC class standing in for each Fashion-MNIST class in the VOC-2007 fixture.
VOC_FOR_FASHION = ("person", "bicycle", "bird", "bottle", "car", "cat", "diningtable", "dog",
                   "pottedplant", "tvmonitor")


@dataclass
class ExpectedSplit:
    """What a writer put into one split: files (in dataset order) and their full labels."""

    files: tuple[str, ...]
    labels: np.ndarray                        # (N, C) int8 +1/-1
    class_names: tuple[str, ...]
    items: list[list[tuple[int, bool]]] = field(default_factory=list)  # (class col, difficult)


@dataclass
class BuiltDataset:
    root: Path
    splits: dict[str, ExpectedSplit]


@functools.lru_cache(maxsize=1)
def fashion_mnist() -> dict[str, np.ndarray]:
    return load_fashion_mnist(FASHION_MNIST_DIR)


def composer(source: str, canvas_size: int) -> DemoComposer:
    data = fashion_mnist()
    return DemoComposer(data[f"{source}_images"], data[f"{source}_labels"],
                        canvas_size=canvas_size, item_scale=(0.2, 0.35))


def compose_many(n: int, source: str, seed: int, canvas_size: int, min_items: int = 1,
                 max_items: int = 3, empty: tuple[int, ...] = ()) -> list[ComposedImage]:
    """``n`` composed images from the ``source`` split; images at ``empty`` get no item."""
    comp = composer(source, canvas_size)
    rng = np.random.default_rng(seed)
    pool = ItemPool(np.arange(len(fashion_mnist()[f"{source}_labels"])), rng)
    out = []
    for i in range(n):
        k = 0 if i in empty else int(rng.integers(min_items, max_items + 1))
        out.append(comp.compose(rng, pool.take(k)))
    return out


def save_jpeg(image: np.ndarray, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(path, format="JPEG", quality=90)


# ------------------------------------------------------------------------------------------------
def write_coco2014(root: Path, n_train: int = 24, n_test: int = 12, canvas_size: int = 112,
                   seed: int = 0) -> BuiltDataset:
    """COCO-2014 layout: train2014/, val2014/, annotations/instances_{train,val}2014.json.

    Image ids are spread out and listed out of order, category ids have gaps and are listed out
    of order, image 2 of each split has no annotation, and one annotation per split is a crowd.
    """
    root = Path(root)
    class_names = COCO2014_CLASSES
    category_id = dict(zip(class_names, COCO2014_CATEGORY_IDS))
    categories = [{"supercategory": "object", "id": COCO2014_CATEGORY_IDS[k],
                   "name": class_names[k]} for k in COCO2014_CATEGORY_JSON_ORDER]
    splits = {}
    for split, folder, source, n, code in (("train", "train2014", "train", n_train, 1),
                                           ("test", "val2014", "t10k", n_test, 2)):
        composed = compose_many(n, source, seed * 10 + code, canvas_size, empty=(2,))
        rng = np.random.default_rng(seed * 10 + code + 100)
        image_ids = [int(v) for v in rng.choice(np.arange(1, 600000), size=n, replace=False)]
        images, annotations, files = [], [], []
        labels = np.full((n, len(class_names)), -1, np.int8)
        for i, (img, image_id) in enumerate(zip(composed, image_ids)):
            file_name = f"COCO_{folder}_{image_id:012d}.jpg"
            save_jpeg(img.image, root / folder / file_name)
            files.append(file_name)
            images.append({"license": 3, "file_name": file_name,
                           "coco_url": f"http://images.cocodataset.org/{folder}/{file_name}",
                           "height": canvas_size, "width": canvas_size,
                           "date_captured": "2013-11-14 16:28:13",
                           "flickr_url": "http://farm4.staticflickr.com/0/0.jpg", "id": image_id})
            for item in img.items:
                x, y, w, h = item.bbox
                annotations.append({
                    "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]],
                    "area": float(item.area), "iscrowd": 1 if len(annotations) == 3 else 0,
                    "image_id": image_id, "bbox": [float(x), float(y), float(w), float(h)],
                    "category_id": category_id[COCO_FOR_FASHION[item.class_index]],
                    "id": 900000 + code * 1000 + len(annotations)})
                labels[i, class_names.index(COCO_FOR_FASHION[item.class_index])] = 1
        coco = {"info": {"description": "pu-mlc test fixture in the COCO 2014 layout",
                         "url": "http://cocodataset.org", "version": "1.0", "year": 2014,
                         "contributor": "pu-mlc tests", "date_created": "2015/09/01"},
                "licenses": [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/",
                              "id": 3, "name": "Attribution-NonCommercial-ShareAlike License"}],
                "images": images, "annotations": annotations, "categories": categories}
        write_json(root / "annotations" / f"instances_{folder}.json", coco)
        splits[split] = ExpectedSplit(tuple(files), labels, class_names)
    return BuiltDataset(root, splits)


# ------------------------------------------------------------------------------------------------
def voc_xml(file_name: str, width: int, height: int,
            objects: list[tuple[str, bool, tuple[int, int, int, int]]]) -> str:
    """A VOC-2007 annotation: objects are (name, difficult, (xmin, ymin, xmax, ymax))."""
    parts = [f"<annotation>\n\t<folder>VOC2007</folder>\n\t<filename>{escape(file_name)}"
             f"</filename>\n\t<source>\n\t\t<database>The VOC2007 Database</database>\n\t\t"
             f"<annotation>PASCAL VOC2007</annotation>\n\t\t<image>flickr</image>\n\t</source>"
             f"\n\t<size>\n\t\t<width>{width}</width>\n\t\t<height>{height}</height>\n\t\t"
             f"<depth>3</depth>\n\t</size>\n\t<segmented>0</segmented>\n"]
    for name, difficult, (x0, y0, x1, y1) in objects:
        parts.append(f"\t<object>\n\t\t<name>{escape(name)}</name>\n\t\t<pose>Unspecified</pose>"
                     f"\n\t\t<truncated>0</truncated>\n\t\t<difficult>{int(difficult)}"
                     f"</difficult>\n\t\t<bndbox>\n\t\t\t<xmin>{x0}</xmin>\n\t\t\t<ymin>{y0}"
                     f"</ymin>\n\t\t\t<xmax>{x1}</xmax>\n\t\t\t<ymax>{y1}</ymax>\n\t\t</bndbox>"
                     f"\n\t</object>\n")
    parts.append("</annotation>\n")
    return "".join(parts)


def write_voc2007(root: Path, n_trainval: int = 16, n_test: int = 10, canvas_size: int = 112,
                  seed: int = 0) -> BuiltDataset:
    """VOC-2007 layout under ``root/VOCdevkit/VOC2007``, Fashion-MNIST classes as VOC names.

    About a quarter of the objects are difficult. Image 0 of trainval has a class present only
    as a difficult object (its label must be -1); image 1 has one class both as a difficult and
    as a normal object (+1).
    """
    voc = Path(root) / "VOCdevkit" / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    (voc / "Annotations").mkdir(parents=True, exist_ok=True)
    splits = {}
    next_id = 5
    for split, list_name, source, n, code in (("train", "trainval", "train", n_trainval, 1),
                                              ("test", "test", "t10k", n_test, 2)):
        composed = compose_many(n, source, seed * 10 + code + 50, canvas_size, min_items=2,
                                max_items=3)
        rng = np.random.default_rng(seed * 10 + code + 150)
        ids, items_per_image = [], []
        labels = np.full((n, len(VOC_CLASSES)), -1, np.int8)
        for i, img in enumerate(composed):
            image_id = f"{next_id:06d}"
            next_id += int(rng.integers(1, 4))
            difficult = [bool(rng.random() < 0.25) for _ in img.items]
            classes = [it.class_index for it in img.items]
            if split == "train" and i == 0:      # class of item 1 only as difficult
                difficult = [False] + [True] * (len(classes) - 1)
                classes[1:] = [classes[1]] * (len(classes) - 1)
                if classes[1] == classes[0]:
                    classes[1:] = [(classes[0] + 1) % 10] * (len(classes) - 1)
            if split == "train" and i == 1:      # one class as difficult and as normal
                classes[1] = classes[0]
                difficult[0], difficult[1] = True, False
            objects, marks = [], []
            for it, cls, diff in zip(img.items, classes, difficult):
                x, y, w, h = it.bbox
                name = VOC_FOR_FASHION[cls]
                objects.append((name, diff, (x + 1, y + 1, x + w, y + h)))
                marks.append((VOC_CLASSES.index(name), diff))
                if not diff:
                    labels[i, VOC_CLASSES.index(name)] = 1
            save_jpeg(img.image, voc / "JPEGImages" / f"{image_id}.jpg")
            (voc / "Annotations" / f"{image_id}.xml").write_text(
                voc_xml(f"{image_id}.jpg", canvas_size, canvas_size, objects))
            ids.append(image_id)
            items_per_image.append(marks)
        (voc / "ImageSets" / "Main" / f"{list_name}.txt").write_text("\n".join(ids) + "\n")
        splits[split] = ExpectedSplit(tuple(f"{i}.jpg" for i in ids), labels, VOC_CLASSES,
                                      items_per_image)
    return BuiltDataset(Path(root), splits)


# ------------------------------------------------------------------------------------------------
def write_coco_format(root: Path, n_train: int = 24, n_val: int = 8, n_test: int = 12,
                      canvas_size: int = 112, seed: int = 0) -> BuiltDataset:
    """The demo builder's ``coco`` layout, small; expected labels read back from its json."""
    build_demo_dataset(root, seed=seed, n_train=n_train, n_val=n_val, n_test=n_test,
                       canvas_size=canvas_size, source_dir=FASHION_MNIST_DIR)
    splits = {}
    for split in ("train", "val", "test"):
        coco = json.loads((Path(root) / "annotations" / f"instances_{split}.json").read_text())
        splits[split] = labels_from_coco_json(coco)
    return BuiltDataset(Path(root), splits)


def labels_from_coco_json(coco: dict) -> ExpectedSplit:
    """Labels straight from a COCO json (plain Python, no pycocotools): json image order,
    categories sorted by id."""
    cat_ids = sorted(c["id"] for c in coco["categories"])
    names = {c["id"]: c["name"] for c in coco["categories"]}
    row = {im["id"]: i for i, im in enumerate(coco["images"])}
    labels = np.full((len(coco["images"]), len(cat_ids)), -1, np.int8)
    for a in coco["annotations"]:
        labels[row[a["image_id"]], cat_ids.index(a["category_id"])] = 1
    return ExpectedSplit(tuple(im["file_name"] for im in coco["images"]), labels,
                         tuple(names[c] for c in cat_ids))


def annotated(root: Path, split: str = "test") -> tuple[list[str], np.ndarray]:
    """(file names, positives (N, C) bool) of a COCO-format split, read back with pycocotools
    (json image order, categories sorted by id): what a test recomputes a score from."""
    from pycocotools.coco import COCO

    coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
    cats = sorted(coco.getCatIds())
    images = coco.dataset["images"]
    positives = np.zeros((len(images), len(cats)), bool)
    for i, image in enumerate(images):
        for a in coco.loadAnns(coco.getAnnIds(imgIds=image["id"])):
            positives[i, cats.index(a["category_id"])] = True
    return [im["file_name"] for im in images], positives


# --- broken variants ----------------------------------------------------------------------------
def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def copy_dataset(src: Path, dst: Path) -> Path:
    """A writable copy of a fixture dataset (fixtures are shared: never damage them in place)."""
    shutil.copytree(src, dst)
    return dst


def truncate_file(path: Path, keep: Optional[int] = None) -> None:
    """Cut a file (by default to half its size), as an interrupted download leaves it."""
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: len(data) // 2 if keep is None else keep])


def garbage_file(path: Path, size: int = 2000, seed: int = 0) -> None:
    """Overwrite a file with random bytes (not any image format)."""
    Path(path).write_bytes(np.random.default_rng(seed).integers(0, 256, size, np.uint8)
                           .tobytes())
