"""The two torch datasets: decoded PIL images, and raw bytes for the device pipeline."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from pu_mlc.data import (EncodedImageDataset, MultiLabelImageDataset, Split, encoded_collate,
                         load_dataset, partial_labels, test_transform)


def test_items_are_image_target_and_index(coco_format_root):
    split = load_dataset("coco", coco_format_root)["train"]
    targets = partial_labels(split.labels, 0.5)
    ds = MultiLabelImageDataset(split, targets, test_transform(64))
    x, y, i = ds[7]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert y.dtype == torch.float32 and y.tolist() == targets[7].astype(float).tolist()
    assert i == 7 and len(ds) == 24


def test_a_loader_batches_images_targets_and_indices(coco_format_root):
    split = load_dataset("coco", coco_format_root)["test"]
    loader = DataLoader(MultiLabelImageDataset(split, split.labels, test_transform(32)),
                        batch_size=5)
    x, y, i = next(iter(loader))
    assert x.shape == (5, 3, 32, 32) and y.shape == (5, 10) and i.tolist() == [0, 1, 2, 3, 4]


def test_greyscale_and_rgba_images_are_converted_to_rgb(tmp_path):
    Image.new("L", (30, 20), 200).save(tmp_path / "grey.png")
    Image.new("RGBA", (30, 20), (10, 20, 30, 0)).save(tmp_path / "rgba.png")
    Image.new("L", (30, 20), 90).save(tmp_path / "grey.jpg")
    split = Split("test", tmp_path, ("grey.png", "rgba.png", "grey.jpg"),
                  np.array([[1, -1]] * 3, np.int8), ("a", "b"), "hand-made")
    ds = MultiLabelImageDataset(split, split.labels, transform=None)
    for k in range(3):
        img, _, _ = ds[k]
        assert img.mode == "RGB" and img.size == (30, 20)
    assert ds[1][0].getpixel((0, 0)) == (10, 20, 30)


def test_encoded_items_are_the_file_bytes(coco_format_root):
    split = load_dataset("coco", coco_format_root)["val"]
    ds = EncodedImageDataset(split, split.labels)
    data, y, i = ds[3]
    assert data.dtype == torch.uint8 and data.dim() == 1
    assert data.numpy().tobytes() == split.path(3).read_bytes()
    assert i == 3 and y.shape == (10,)


def test_encoded_collate_keeps_a_list_of_byte_tensors(coco_format_root):
    split = load_dataset("coco", coco_format_root)["val"]
    loader = DataLoader(EncodedImageDataset(split, split.labels), batch_size=4,
                        collate_fn=encoded_collate)
    data, y, i = next(iter(loader))
    assert isinstance(data, list) and len(data) == 4
    assert all(d.dtype == torch.uint8 for d in data)
    assert y.shape == (4, 10) and y.dtype == torch.float32 and i.tolist() == [0, 1, 2, 3]


def test_targets_of_the_wrong_shape_are_refused(coco_format_root):
    split = load_dataset("coco", coco_format_root)["val"]
    with pytest.raises(ValueError, match="do not match"):
        MultiLabelImageDataset(split, split.labels[:, :3], None)
