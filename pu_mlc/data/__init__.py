"""Datasets, labels and image pipelines of PU-MLC.

Readers turn a dataset root into :class:`Split` objects (image paths + full labels);
:func:`partial_labels` applies the published seed-0 MLC-PL mask; :func:`check_images` finds
unreadable files before training; the PIL transforms (``transforms``) and their on-device
counterparts (``device_transforms``) prepare images; ``demo`` builds the Fashion-MNIST
multi-label dataset used by the built-in demo and the tests.
"""

from .dataset import EncodedImageDataset, MultiLabelImageDataset, encoded_collate
from .demo import build_demo_dataset
from .device_transforms import DeviceTestTransform, DeviceTrainTransform
from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist, read_idx
from .images import check_images
from .partial import holdout_indices, label_cooccurrence, partial_labels
from .registry import load_dataset
from .splits import Split
from .transforms import (IMAGENET_MEAN, IMAGENET_STD, crop_sides, test_transform,
                         train_transform)
from .voc import VOC_CLASSES
from .words import COCO2014_CLASSES, class_word_vectors, published_word_vectors_path

__all__ = [
    "Split", "load_dataset", "VOC_CLASSES", "COCO2014_CLASSES",
    "partial_labels", "label_cooccurrence", "holdout_indices",
    "IMAGENET_MEAN", "IMAGENET_STD", "crop_sides", "train_transform", "test_transform",
    "MultiLabelImageDataset", "EncodedImageDataset", "encoded_collate",
    "DeviceTrainTransform", "DeviceTestTransform",
    "check_images", "class_word_vectors", "published_word_vectors_path",
    "read_idx", "load_fashion_mnist", "FASHION_MNIST_CLASSES", "build_demo_dataset",
]
