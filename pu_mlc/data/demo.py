"""The built-in demo dataset: a real multi-label task composed from Fashion-MNIST photos.

COCO and VOC cannot be downloaded everywhere this project runs, yet the demo and the tests must
exercise the code path a COCO run takes. This builder places 1..4 real Fashion-MNIST items at
random positions and sizes on a canvas (optionally over a random crop of one of scikit-image's
bundled CC0 photos and textures, darkened so the items stay visible), composites each item with
its own intensity as alpha (the black Fashion-MNIST background disappears), optionally tints it,
and writes a COCO-format dataset: ``annotations/instances_{train,val,test}.json`` plus
``train/``, ``val/``, ``test/`` image folders, one instance (bbox, area, category_id,
``iscrowd`` 0) per item. ``load_dataset('coco', out_dir)`` reads it like any COCO dataset; the
labels of an image are the classes of its items.

Train and val images use items of the Fashion-MNIST *train* split (disjoint pools), test images
items of *t10k*. The build is deterministic: the same seed and parameters give byte-identical
json and image files (fixed JPEG settings, sorted json keys) on the same Pillow/NumPy versions,
which ``manifest.json`` records together with every parameter and the sha256 of the source
files. It is written to a temporary sibling folder and renamed at the end, so an interrupted
build never leaves half a dataset.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np
from PIL import Image

from ..errors import ConfigError, DataError
from .fashion_mnist import (DEFAULT_SOURCE_DIR, FASHION_MNIST_CLASSES, fashion_mnist_files,
                            load_fashion_mnist, sha256_file)

log = logging.getLogger(__name__)

#: scikit-image photos/textures shipped inside the wheel (CC0); others are fetched from the web.
BACKGROUND_NAMES = ("grass", "gravel", "brick", "coffee", "chelsea", "astronaut")
FORMAT_VERSION = 1
JPEG_SETTINGS = {"quality": 90, "subsampling": 0, "optimize": False, "progressive": False}
PNG_SETTINGS = {"compress_level": 6, "optimize": False}
_ALPHA_GAIN = 2.5          # item intensity -> opacity: mid-grey item pixels are fully opaque
_MAX_OVERLAP = 0.15        # an item may cover at most this fraction of another item's box


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def package_version() -> str:
    """Version of the installed pu-mlc distribution (``pu_mlc.__version__`` in a checkout)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("pu-mlc")
    except PackageNotFoundError:
        import pu_mlc
        return str(getattr(pu_mlc, "__version__", "unknown"))


@functools.lru_cache(maxsize=1)
def load_backgrounds() -> tuple[tuple[str, np.ndarray], ...]:
    """(name, uint8 RGB array) of the bundled scikit-image backgrounds, loaded once."""
    try:
        import skimage.data
    except ImportError as e:
        raise ConfigError('the demo dataset\'s backgrounds need scikit-image (the "demo" extra): '
                          'pip install "pu-mlc[demo]", or build without backgrounds '
                          '(--no-backgrounds)') from e

    out = []
    for name in BACKGROUND_NAMES:
        arr = np.asarray(getattr(skimage.data, name)())
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        out.append((name, np.ascontiguousarray(arr[..., :3], dtype=np.uint8)))
    return tuple(out)


# ------------------------------------------------------------------------------------------------
@dataclass
class PlacedItem:
    """One Fashion-MNIST item on a canvas: its class (0-based), COCO box and pool index."""

    class_index: int
    bbox: tuple[int, int, int, int]          # x, y, w, h (tight box of the visible item)
    area: int                                # pixels where the item is at least half opaque
    source_index: int                        # index in the Fashion-MNIST split it came from


@dataclass
class ComposedImage:
    image: np.ndarray                        # (H, W, 3) uint8
    items: list[PlacedItem] = field(default_factory=list)
    background: Optional[dict] = None        # {'name', 'box'} of the background crop

    @property
    def classes(self) -> list[int]:
        """Sorted distinct class indices present (the image's labels)."""
        return sorted({it.class_index for it in self.items})


class DemoComposer:
    """Composes canvases from given Fashion-MNIST items; all randomness from the caller's rng.

    ``item_scale`` = (lo, hi) is the item side as a fraction of the canvas side (0.125..0.25 on
    a 224 canvas gives 28..56 px items).
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray, *, canvas_size: int = 224,
                 item_scale: tuple[float, float] = (0.125, 0.25), backgrounds: bool = True,
                 tints: bool = True):
        self.images = images
        self.labels = labels
        self.canvas_size = int(canvas_size)
        self.side_range = (max(4, int(round(item_scale[0] * canvas_size))),
                           max(4, int(round(item_scale[1] * canvas_size))))
        self.backgrounds = load_backgrounds() if backgrounds else ()
        self.tints = tints

    def _background(self, rng: np.random.Generator) -> tuple[np.ndarray, Optional[dict]]:
        s = self.canvas_size
        if not self.backgrounds:
            return np.zeros((s, s, 3), np.float32), None
        k = int(rng.integers(len(self.backgrounds)))
        name, arr = self.backgrounds[k]
        h, w = arr.shape[:2]
        side = int(rng.integers(int(0.4 * min(h, w)), min(h, w) + 1))
        top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
        crop = Image.fromarray(arr[top:top + side, left:left + side])
        bg = np.asarray(crop.resize((s, s), Image.BILINEAR), dtype=np.float32) / 255.0
        if rng.random() < 0.5:
            bg = bg[:, ::-1]
        # Tone: compress to a dark band (items are bright), random brightness, mild colour cast.
        hi = rng.uniform(0.25, 0.5)
        cast = rng.uniform(0.7, 1.0, size=3).astype(np.float32)
        bg = (0.04 + hi * bg) * cast
        return bg, {"name": name, "box": [left, top, side, side]}

    def _place(self, rng: np.random.Generator, side: int,
               boxes: list[tuple[int, int, int, int]]) -> tuple[int, int]:
        s = self.canvas_size
        x = y = 0
        for _ in range(20):
            x, y = int(rng.integers(s - side + 1)), int(rng.integers(s - side + 1))
            if all(_overlap((x, y, side, side), b) <= _MAX_OVERLAP for b in boxes):
                break
        return x, y

    def compose(self, rng: np.random.Generator, item_indices: Sequence[int]) -> ComposedImage:
        """A canvas holding the items ``item_indices`` (indices into ``images``/``labels``)."""
        canvas, bg_info = self._background(rng)
        canvas = np.ascontiguousarray(canvas)
        placed: list[PlacedItem] = []
        squares: list[tuple[int, int, int, int]] = []
        lo, hi = self.side_range
        for idx in item_indices:
            side = int(rng.integers(lo, hi + 1))
            item = Image.fromarray(self.images[idx]).resize((side, side), Image.BICUBIC)
            v = np.asarray(item, dtype=np.float32) / 255.0
            alpha = np.clip(v * _ALPHA_GAIN, 0.0, 1.0)[..., None]
            if self.tints:
                tint = rng.uniform(0.45, 1.0, size=3).astype(np.float32)
                tint /= tint.max()
            else:
                tint = np.ones(3, np.float32)
            fill = np.clip(0.15 + v, 0.0, 1.0)[..., None] * tint
            x, y = self._place(rng, side, squares)
            squares.append((x, y, side, side))
            region = canvas[y:y + side, x:x + side]
            canvas[y:y + side, x:x + side] = region * (1.0 - alpha) + fill * alpha
            placed.append(self._box(alpha[..., 0], x, y, int(self.labels[idx]), int(idx)))
        image = np.clip(np.rint(canvas * 255.0), 0, 255).astype(np.uint8)
        return ComposedImage(image, placed, bg_info)

    @staticmethod
    def _box(alpha: np.ndarray, x: int, y: int, cls: int, idx: int) -> PlacedItem:
        visible = alpha > 0.05
        rows, cols = np.flatnonzero(visible.any(1)), np.flatnonzero(visible.any(0))
        if rows.size == 0:                       # an all-black item: keep its square
            bbox = (x, y, alpha.shape[1], alpha.shape[0])
        else:
            bbox = (x + int(cols[0]), y + int(rows[0]), int(cols[-1] - cols[0] + 1),
                    int(rows[-1] - rows[0] + 1))
        return PlacedItem(cls, bbox, int((alpha >= 0.5).sum()), idx)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> float:
    """Intersection area over the smaller box's area."""
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    if w <= 0 or h <= 0:
        return 0.0
    return (w * h) / min(a[2] * a[3], b[2] * b[3])


class ItemPool:
    """Item indices handed out without replacement, reshuffled when exhausted (deterministic)."""

    def __init__(self, indices: np.ndarray, rng: np.random.Generator):
        self.indices = np.asarray(indices)
        self.rng = rng
        self._order = rng.permutation(self.indices)
        self._next = 0

    def take(self, k: int) -> list[int]:
        out = []
        for _ in range(k):
            if self._next == len(self._order):
                self._order, self._next = self.rng.permutation(self.indices), 0
            out.append(int(self._order[self._next]))
            self._next += 1
        return out


# ------------------------------------------------------------------------------------------------
def encode_image(image: np.ndarray, image_format: str) -> bytes:
    """Encode with fixed settings, so equal arrays give equal bytes."""
    buf = io.BytesIO()
    if image_format == "jpg":
        Image.fromarray(image).save(buf, format="JPEG", **JPEG_SETTINGS)
    else:
        Image.fromarray(image).save(buf, format="PNG", **PNG_SETTINGS)
    return buf.getvalue()


def coco_categories() -> list[dict]:
    return [{"id": k + 1, "name": name, "supercategory": "fashion"}
            for k, name in enumerate(FASHION_MNIST_CLASSES)]


def _validate(seed: int, n_train: int, n_val: int, n_test: int, canvas_size: int, min_items: int,
              max_items: int, item_scale: tuple[float, float], image_format: str) -> None:
    for name, value, least in (("seed", seed, 0), ("n_train", n_train, 1), ("n_val", n_val, 0),
                               ("n_test", n_test, 1), ("canvas_size", canvas_size, 16),
                               ("min_items", min_items, 1)):
        if int(value) != value or value < least:
            raise ConfigError(f"demo builder: {name} = {value!r} must be an integer >= {least}")
    if max_items < min_items:
        raise ConfigError(f"demo builder: max_items = {max_items} is below min_items = "
                          f"{min_items}")
    lo, hi = item_scale
    if not 0.0 < lo <= hi <= 1.0:
        raise ConfigError(f"demo builder: item_scale = {item_scale!r} must be (lo, hi) with "
                          f"0 < lo <= hi <= 1 (item side as a fraction of the canvas side)")
    if image_format not in ("jpg", "png"):
        raise ConfigError(f"demo builder: image_format = {image_format!r} must be 'jpg' or 'png'")


def _check_out_dir(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError(f"demo output {out_dir} exists and is not a directory; choose another "
                        f"path")
    for parent in out_dir.parents:                # a path under a file cannot be created
        if parent.exists():
            if not parent.is_dir():
                raise DataError(f"demo output {out_dir} cannot be created: {parent} is not a "
                                f"directory; choose another path")
            break
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise DataError(f"demo output directory {out_dir} is not empty; choose an empty or new "
                        f"directory, or pass overwrite=True (--overwrite) to replace it")


def build_demo_dataset(out_dir: Union[str, Path], *, seed: int = 0, n_train: int = 2000,
                       n_val: int = 400, n_test: int = 800, canvas_size: int = 224,
                       min_items: int = 1, max_items: int = 4,
                       item_scale: tuple[float, float] = (0.125, 0.25),
                       backgrounds: bool = True, tints: bool = True,
                       source_dir: Union[str, Path] = DEFAULT_SOURCE_DIR,
                       image_format: str = "jpg", overwrite: bool = False) -> dict:
    """Write the Fashion-MNIST multi-label demo in the ``coco`` layout; return its manifest.

    ``n_val = 0`` writes no val split. ``item_scale`` is the item side as a fraction of
    ``canvas_size``. Refuses a non-empty ``out_dir`` unless ``overwrite``.
    """
    start = time.perf_counter()
    out_dir = Path(out_dir).expanduser().absolute()
    item_scale = (float(item_scale[0]), float(item_scale[1]))
    _validate(seed, n_train, n_val, n_test, canvas_size, min_items, max_items, item_scale,
              image_format)
    _check_out_dir(out_dir, overwrite)
    files = fashion_mnist_files(source_dir)
    data = load_fashion_mnist(source_dir)
    params = {"seed": int(seed), "n_train": int(n_train), "n_val": int(n_val),
              "n_test": int(n_test), "canvas_size": int(canvas_size),
              "min_items": int(min_items), "max_items": int(max_items),
              "item_scale": list(item_scale), "backgrounds": bool(backgrounds),
              "tints": bool(tints), "source_dir": str(Path(source_dir)),
              "image_format": image_format}

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.building-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        (tmp / "annotations").mkdir()
        splits = _write_splits(tmp, data, params)
        manifest = _manifest(tmp, params, files, splits)
        (tmp / "manifest.json").write_bytes(
            json.dumps(manifest, sort_keys=True, indent=2).encode() + b"\n")
        _swap_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("demo dataset written to %s in %.1f s: %s", out_dir, time.perf_counter() - start,
             ", ".join(f"{k} {v['images']} images" for k, v in manifest["splits"].items()))
    return manifest


def _write_splits(root: Path, data: dict[str, np.ndarray], params: dict) -> dict[str, dict]:
    seed = params["seed"]
    train_labels = data["train_labels"]
    # Disjoint item pools for train and val images, both from the Fashion-MNIST train split.
    order = np.random.default_rng([seed, 0]).permutation(len(train_labels))
    n_tv = params["n_train"] + params["n_val"]
    n_val_pool = int(round(len(order) * params["n_val"] / n_tv)) if params["n_val"] else 0
    n_val_pool = min(max(n_val_pool, 1 if params["n_val"] else 0), len(order) - 1)
    plan = [("train", "train", np.sort(order[n_val_pool:]), params["n_train"], 1),
            ("val", "train", np.sort(order[:n_val_pool]), params["n_val"], 2),
            ("test", "t10k", np.arange(len(data["t10k_labels"])), params["n_test"], 3)]
    stats = {}
    for split, source, pool_indices, n, code in plan:
        if n == 0:
            continue
        composer = DemoComposer(data[f"{source}_images"], data[f"{source}_labels"],
                                canvas_size=params["canvas_size"],
                                item_scale=tuple(params["item_scale"]),
                                backgrounds=params["backgrounds"], tints=params["tints"])
        rng = np.random.default_rng([seed, code])
        stats[split] = _write_split(root, split, source, composer, ItemPool(pool_indices, rng),
                                    rng, n, params)
    return stats


def _write_split(root: Path, split: str, source: str, composer: DemoComposer, pool: ItemPool,
                 rng: np.random.Generator, n: int, params: dict) -> dict:
    folder = root / split
    folder.mkdir()
    ext = params["image_format"]
    images, annotations = [], []
    counts = np.zeros(len(FASHION_MNIST_CLASSES), np.int64)
    items_hist = np.zeros(params["max_items"] + 1, np.int64)
    for i in range(n):
        k = int(rng.integers(params["min_items"], params["max_items"] + 1))
        composed = composer.compose(rng, pool.take(k))
        file_name = f"{split}_{i:06d}.{ext}"
        (folder / file_name).write_bytes(encode_image(composed.image, ext))
        image_id = i + 1
        images.append({"id": image_id, "file_name": file_name, "width": params["canvas_size"],
                       "height": params["canvas_size"], "license": 1,
                       "fashion_mnist": {"split": source,
                                         "indices": [it.source_index for it in composed.items]},
                       "background": composed.background})
        for it in composed.items:
            annotations.append({"id": len(annotations) + 1, "image_id": image_id,
                                "category_id": it.class_index + 1, "bbox": list(it.bbox),
                                "area": it.area, "iscrowd": 0,
                                "fashion_mnist_index": it.source_index})
        counts[composed.classes] += 1
        items_hist[k] += 1
    coco = {"info": {"description": "pu-mlc demo: Fashion-MNIST items composed on CC0 "
                                    "scikit-image backgrounds",
                     "version": str(FORMAT_VERSION), "contributor": "pu-mlc",
                     "fashion_mnist_split": source},
            "licenses": [{"id": 1, "name": "Fashion-MNIST (Zalando SE) MIT; backgrounds CC0 "
                                           "(scikit-image data)", "url": ""}],
            "categories": coco_categories(), "images": images, "annotations": annotations}
    ann_path = root / "annotations" / f"instances_{split}.json"
    ann_path.write_bytes(_json_bytes(coco))
    return {"images": n, "annotations": len(annotations), "fashion_mnist_split": source,
            "mean_items_per_image": round(len(annotations) / n, 4),
            "mean_labels_per_image": round(float(counts.sum()) / n, 4),
            "items_per_image": {str(k): int(items_hist[k])
                                for k in range(params["min_items"], params["max_items"] + 1)},
            "class_frequency": {name: round(float(counts[c]) / n, 4)
                                for c, name in enumerate(FASHION_MNIST_CLASSES)},
            "class_images": {name: int(counts[c]) for c, name in enumerate(FASHION_MNIST_CLASSES)}}


def _manifest(root: Path, params: dict, files: dict[str, Path], splits: dict) -> dict:
    import PIL
    written = sorted(p for p in (root / "annotations").iterdir())
    return {
        "name": "pu-mlc Fashion-MNIST multi-label demo",
        "format_version": FORMAT_VERSION,
        "layout": "coco",
        "seed": params["seed"],
        "parameters": params,
        "package_version": package_version(),
        "versions": {"numpy": np.__version__, "pillow": PIL.__version__},
        "encoding": {"jpg": JPEG_SETTINGS, "png": PNG_SETTINGS}[params["image_format"]],
        "classes": list(FASHION_MNIST_CLASSES),
        "source": {"name": "Fashion-MNIST", "license": "MIT (Zalando SE)",
                   "dir": params["source_dir"],
                   "sha256": {p.name: sha256_file(p) for p in files.values()}},
        "backgrounds": {"names": list(BACKGROUND_NAMES) if params["backgrounds"] else [],
                        "license": "CC0 (scikit-image bundled data)"},
        "splits": splits,
        "annotation_sha256": {f"annotations/{p.name}": sha256_file(p) for p in written},
    }


def _swap_into_place(tmp: Path, out_dir: Path) -> None:
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
        if old.exists():
            shutil.rmtree(old)
        out_dir.rename(old)
        tmp.rename(out_dir)
        shutil.rmtree(old)
    else:
        tmp.rename(out_dir)
