"""Shared, session-scoped datasets for the whole test suite (tiny, real images, built once).

- ``coco_format_root``: the demo builder's ``coco`` layout (24 train / 8 val / 12 test images,
  112 px); ``coco_format_dataset`` adds the labels read back from its json.
- ``coco2014_root``: COCO-2014 layout (24 train2014 / 12 val2014 images, 112 px; category ids
  with gaps listed out of order; image 2 of each split has no annotation).
- ``voc2007_root``: a folder holding ``VOCdevkit/VOC2007`` (16 trainval / 10 test images, 112 px;
  10 of the 20 VOC names used; difficult objects, a class only difficult in trainval image 0).
The ``*_dataset`` fixtures are :class:`tests.builders.BuiltDataset` (root + expected labels).
Fixtures are shared: copy them (``builders.copy_dataset``) before damaging anything.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import builders  # noqa: E402


@pytest.fixture(scope="session")
def fashion_mnist_dir() -> Path:
    return builders.FASHION_MNIST_DIR


@pytest.fixture(scope="session")
def coco_format_dataset(tmp_path_factory) -> builders.BuiltDataset:
    return builders.write_coco_format(tmp_path_factory.mktemp("coco_format") / "demo")


@pytest.fixture(scope="session")
def coco_format_root(coco_format_dataset) -> Path:
    return coco_format_dataset.root


@pytest.fixture(scope="session")
def coco2014_dataset(tmp_path_factory) -> builders.BuiltDataset:
    return builders.write_coco2014(tmp_path_factory.mktemp("coco2014"))


@pytest.fixture(scope="session")
def coco2014_root(coco2014_dataset) -> Path:
    return coco2014_dataset.root


@pytest.fixture(scope="session")
def voc2007_dataset(tmp_path_factory) -> builders.BuiltDataset:
    return builders.write_voc2007(tmp_path_factory.mktemp("voc2007"))


@pytest.fixture(scope="session")
def voc2007_root(voc2007_dataset) -> Path:
    return voc2007_dataset.root
