"""Fashion-MNIST from its upstream idx files: the real photos the built-in demo is made of.

No benchmark dataset can be downloaded where this project is tested, so the demo composes a
multi-label task from Fashion-MNIST (Zalando SE, MIT licence; Debian package
``dataset-fashion-mnist``). The reader takes the four upstream files, gzipped or not.
"""

from __future__ import annotations

import gzip
import hashlib
import logging
from pathlib import Path
from typing import Union

import numpy as np

from ..errors import DataError

log = logging.getLogger(__name__)

DEFAULT_SOURCE_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                         "Shirt", "Sneaker", "Bag", "Ankle boot")
#: key -> upstream file stem (the ``.gz`` or the unpacked file is accepted).
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "t10k_images": "t10k-images-idx3-ubyte",
    "t10k_labels": "t10k-labels-idx1-ubyte",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_INSTALL_HINT = ("install it with `apt-get install dataset-fashion-mnist`, or point at a "
                 "directory holding the four upstream idx files "
                 "({train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz])")


def read_idx(path: Union[str, Path]) -> np.ndarray:
    """Read an idx file (gzipped or raw): magic ``0 0 type ndim``, big-endian uint32 sizes, data."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        opener = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"idx file {path} cannot be read ({type(e).__name__}: {e}); "
                        f"{_INSTALL_HINT}") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path} is not an idx file (magic bytes {raw[:4].hex() or 'missing'}, "
                        f"expected 0000 <type> <ndim>); {_INSTALL_HINT}")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"idx file {path} ends inside its header ({len(raw)} bytes); the file is "
                        f"truncated; {_INSTALL_HINT}")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(f"idx file {path} declares shape {shape} ({expected} data bytes) but "
                        f"holds {len(raw) - header}; the file is truncated or corrupt; "
                        f"{_INSTALL_HINT}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(
        dtype.newbyteorder("="), copy=True)


def fashion_mnist_files(source_dir: Union[str, Path] = DEFAULT_SOURCE_DIR) -> dict[str, Path]:
    """Paths of the four upstream files in ``source_dir`` (``.gz`` preferred)."""
    source_dir = Path(source_dir)
    found, missing = {}, []
    for key, stem in FASHION_MNIST_FILES.items():
        for candidate in (source_dir / f"{stem}.gz", source_dir / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            missing.append(f"{stem}.gz")
    if missing:
        raise DataError(f"Fashion-MNIST not found in {source_dir} (missing {', '.join(missing)}); "
                        f"{_INSTALL_HINT}")
    return found


def load_fashion_mnist(source_dir: Union[str, Path] = DEFAULT_SOURCE_DIR) -> dict[str, np.ndarray]:
    """``{'train_images': (60000, 28, 28) uint8, 'train_labels': (60000,), 't10k_images',
    't10k_labels'}`` from the upstream idx files in ``source_dir``."""
    files = fashion_mnist_files(source_dir)
    data = {key: read_idx(path) for key, path in files.items()}
    for part in ("train", "t10k"):
        images, labels = data[f"{part}_images"], data[f"{part}_labels"]
        if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
            raise DataError(f"Fashion-MNIST {part} files {files[f'{part}_images']} and "
                            f"{files[f'{part}_labels']} have shapes {images.shape} and "
                            f"{labels.shape}; expected (N, 28, 28) and (N,); {_INSTALL_HINT}")
        if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
            raise DataError(f"Fashion-MNIST labels in {files[f'{part}_labels']} fall outside "
                            f"0..9; {_INSTALL_HINT}")
    return data


def sha256_file(path: Union[str, Path], chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file (for the demo manifest's provenance)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()
