"""Reading Fashion-MNIST from its upstream idx files."""

import gzip
import struct

import numpy as np
import pytest

from pu_mlc.data import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from pu_mlc.errors import DataError


def idx_bytes(arr: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + \
        arr.astype(np.uint8).tobytes()


def test_the_installed_fashion_mnist_has_the_upstream_shapes(fashion_mnist_dir):
    data = load_fashion_mnist(fashion_mnist_dir)
    assert data["train_images"].shape == (60000, 28, 28)
    assert data["t10k_images"].shape == (10000, 28, 28)
    assert data["train_labels"].shape == (60000,) and data["t10k_labels"].shape == (10000,)
    assert data["train_images"].dtype == np.uint8
    assert np.bincount(data["t10k_labels"]).tolist() == [1000] * 10
    assert len(FASHION_MNIST_CLASSES) == 10 and FASHION_MNIST_CLASSES[9] == "Ankle boot"


@pytest.mark.parametrize("compress", [False, True])
def test_read_idx_reads_raw_and_gzipped_files(tmp_path, compress):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "a-idx3-ubyte"
    path.write_bytes(gzip.compress(idx_bytes(arr)) if compress else idx_bytes(arr))
    assert np.array_equal(read_idx(path), arr)


def test_an_idx_file_with_wrong_magic_is_named(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x01" + b"\x00" * 10)
    with pytest.raises(DataError, match=r"bad is not an idx file"):
        read_idx(path)


def test_a_truncated_idx_file_is_named_with_its_declared_shape(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(idx_bytes(np.zeros((5, 4), np.uint8))[:-3])
    with pytest.raises(DataError) as e:
        read_idx(path)
    assert "short" in str(e.value) and "(5, 4)" in str(e.value) and "truncated" in str(e.value)


def test_missing_fashion_mnist_says_how_to_install_it(tmp_path):
    with pytest.raises(DataError) as e:
        load_fashion_mnist(tmp_path)
    msg = str(e.value)
    assert str(tmp_path) in msg and "apt-get install dataset-fashion-mnist" in msg
    assert "train-images-idx3-ubyte.gz" in msg
