"""The published image transforms (PIL path), run in DataLoader worker processes.

Train (SPEC section 4): bicubic resize to ``scale x scale``, a random square crop whose side is
drawn from ``scale x {1, .875, .75, .625, .5}`` (512 -> {512, 448, 384, 320, 256}) at a random
position, bicubic resize to ``crop x crop``, random horizontal flip, ``ToTensor``, normalise.
Test: bicubic resize to ``crop x crop``, ``ToTensor``, normalise. No Cutout, no RandAugment.
Randomness comes from ``torch``'s global CPU RNG; for training, ``pu_mlc.engine.data_setup``
seeds it per sample from (seed, rank, epoch, position), so the draws do not depend on the number
of loader processes and a resumed run repeats them exactly.
``pu_mlc.data.device_transforms`` holds the same augmentations on decoded tensors.
"""

from __future__ import annotations

from typing import Sequence

import torch
from PIL import Image
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: Crop sides as fractions of the scale size: the published list at scaleSize 512.
CROP_FRACTIONS = (1.0, 0.875, 0.75, 0.625, 0.5)
#: The published code special-cases scaleSize 640 with six sides (steps of 64, down to 320).
_PUBLISHED_SIDES = {640: (640, 576, 512, 448, 384, 320)}


def crop_sides(scale_size: int) -> tuple[int, ...]:
    """Sides of the random square crop at ``scale_size`` (largest first, no duplicates)."""
    if scale_size < 1:
        raise ValueError(f"scale_size = {scale_size} must be >= 1")
    if scale_size in _PUBLISHED_SIDES:
        return _PUBLISHED_SIDES[scale_size]
    sides = {max(1, int(round(scale_size * f))) for f in CROP_FRACTIONS}
    return tuple(sorted(sides, reverse=True))


class RandomSquareCrop(torch.nn.Module):
    """Crop a square of a side drawn uniformly from ``sides`` at a uniform random position.

    The published transform is ``RandomChoice([RandomCrop(s) for s in sides])``; this draws the
    same distribution in one module (side first, then the top-left corner).
    """

    def __init__(self, sides: Sequence[int]):
        super().__init__()
        self.sides = tuple(int(s) for s in sides)

    def forward(self, img: Image.Image) -> Image.Image:
        w, h = img.size
        side = self.sides[int(torch.randint(len(self.sides), (1,)).item())]
        if side > w or side > h:
            raise ValueError(f"crop side {side} is larger than the {w}x{h} image; resize to the "
                             f"scale size first")
        top = int(torch.randint(h - side + 1, (1,)).item())
        left = int(torch.randint(w - side + 1, (1,)).item())
        return img.crop((left, top, left + side, top + side))

    def extra_repr(self) -> str:
        return f"sides={self.sides}"


def train_transform(scale_size: int, crop_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                    std: Sequence[float] = IMAGENET_STD) -> T.Compose:
    """The published training transform: PIL image -> normalised float tensor (3, crop, crop)."""
    return T.Compose([
        T.Resize((scale_size, scale_size), interpolation=InterpolationMode.BICUBIC),
        RandomSquareCrop(crop_sides(scale_size)),
        T.Resize((crop_size, crop_size), interpolation=InterpolationMode.BICUBIC),
        T.RandomHorizontalFlip(),
        T.ToTensor(),
        T.Normalize(mean=list(mean), std=list(std)),
    ])


def test_transform(crop_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                   std: Sequence[float] = IMAGENET_STD) -> T.Compose:
    """The published evaluation transform: bicubic resize to ``crop x crop``, normalise."""
    return T.Compose([
        T.Resize((crop_size, crop_size), interpolation=InterpolationMode.BICUBIC),
        T.ToTensor(),
        T.Normalize(mean=list(mean), std=list(std)),
    ])


# pytest would collect a module-level name starting with "test" when imported into a test file.
test_transform.__test__ = False  # type: ignore[attr-defined]
