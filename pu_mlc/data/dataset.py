"""PyTorch datasets over a :class:`~pu_mlc.data.splits.Split` and its training targets.

Two pipelines feed the model. :class:`MultiLabelImageDataset` is the published one: loader
processes open each image with PIL and apply the PIL transforms. :class:`EncodedImageDataset`
only reads the file bytes; decoding and augmentation then run on the training device
(``pu_mlc.data.device_transforms``), so a fast GPU is not starved by a few CPU loader processes.
Both return the sample index, so evaluation can put sharded outputs back in dataset order.
"""

from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..errors import DataError
from .splits import Split


def _checked_targets(split: Split, targets: np.ndarray) -> torch.Tensor:
    targets = np.asarray(targets)
    if targets.shape != split.labels.shape:
        raise ValueError(f"targets of shape {targets.shape} do not match the {split.name} split "
                         f"({split.labels.shape})")
    return torch.from_numpy(targets.astype(np.float32))


def open_rgb(path) -> Image.Image:
    """Open an image file as RGB (greyscale, palette, RGBA, CMYK all converted)."""
    with Image.open(path) as img:
        return img.convert("RGB")


class MultiLabelImageDataset(Dataset):
    """(image tensor, float32 target (C,), index) per image; images decoded by PIL as RGB.

    ``targets`` is int8 (N, C) in {-1, 0, +1}: partial labels for training, full labels for
    evaluation. ``transform`` maps a PIL RGB image to a tensor (see ``pu_mlc.data.transforms``).
    """

    def __init__(self, split: Split, targets: np.ndarray,
                 transform: Optional[Callable[[Image.Image], torch.Tensor]]):
        self.split = split
        self.targets = _checked_targets(split, targets)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        path = self.split.path(i)
        try:
            img = open_rgb(path)
        except (OSError, SyntaxError, ValueError) as err:
            # check_images decoded every image before training; a file that fails now changed
            # since (or is on failing storage): name it instead of a bare PIL traceback.
            raise DataError(f"image {path} of the {self.split.name} split cannot be decoded "
                            f"({type(err).__name__}: {err}); it was readable when the run "
                            f"started, so it changed or its storage fails: restore the file, "
                            f"or remove it and pass --skip-bad-images") from None
        x = self.transform(img) if self.transform is not None else img
        return x, self.targets[i], i


def read_bytes(path) -> torch.Tensor:
    """The file's bytes as a 1-D uint8 tensor (what ``torchvision.io.decode_*`` takes)."""
    data = np.fromfile(path, dtype=np.uint8)
    return torch.from_numpy(data)


class EncodedImageDataset(Dataset):
    """(encoded file bytes as a uint8 1-D tensor, float32 target (C,), index) per image.

    For the device pipeline: the loader only reads files; ``DeviceTrainTransform`` /
    ``DeviceTestTransform`` decode and augment a whole batch on the training device. Batch with
    :func:`encoded_collate` (the byte tensors differ in length).
    """

    def __init__(self, split: Split, targets: np.ndarray):
        self.split = split
        self.targets = _checked_targets(split, targets)

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        return read_bytes(self.split.path(i)), self.targets[i], i


def encoded_collate(batch: Sequence[tuple[torch.Tensor, torch.Tensor, int]]
                    ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
    """Collate for :class:`EncodedImageDataset`: (list of byte tensors, targets (N, C), indices)."""
    data = [b[0] for b in batch]
    targets = torch.stack([b[1] for b in batch])
    indices = torch.tensor([b[2] for b in batch], dtype=torch.int64)
    return data, targets, indices
