"""The published transforms, run on the training device over a batch of encoded images.

At 448 px a modern GPU consumes images faster than a handful of CPU loader processes can
decode and bicubic-resize them with PIL. With the ``tensor`` pipeline the loaders only read file
bytes (:class:`~pu_mlc.data.dataset.EncodedImageDataset`); these transforms decode the batch
(``torchvision.io.decode_jpeg(list, device='cuda')`` for JPEGs on CUDA, ``decode_image`` on the
CPU for anything else) and apply the same augmentations as ``pu_mlc.data.transforms`` with
tensor ops, so they run on CPU too.

How close to the PIL path: the resizes are antialiased bicubic (Keys a = -0.5, PIL's kernel) done
as two separable passes, width then height, each rounded and clamped to 0..255 as PIL does with
its 8-bit intermediate image. On the CPU, with the same JPEG decoder (libjpeg-turbo), the test
transform then equals PIL's to within 2/255 per pixel value (mean difference below 0.1/255;
``tests/test_data_device_transforms.py`` checks this), i.e. within 0.035 after ImageNet
normalisation. On CUDA the JPEG decoder is nvJPEG, whose IDCT may differ from libjpeg by a few
levels; the resize arithmetic is the same. Random crops and flips follow the same distribution as
the PIL path but are drawn from this transform's own CPU ``torch.Generator``, so individual draws
differ from a PIL run. ``fit`` re-seeds it at every epoch start from (seed, rank, epoch)
(:meth:`DeviceTrainTransform.reseed`), so a resumed run draws exactly what an uninterrupted one
does.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections import defaultdict
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .transforms import IMAGENET_MEAN, IMAGENET_STD, crop_sides

log = logging.getLogger(__name__)

DeviceLike = Union[str, torch.device]
_JPEG_MAGIC = (0xFF, 0xD8, 0xFF)


@contextlib.contextmanager
def _quiet_torchvision_io():
    """torchvision >= 0.29 warns that its decoders move to TorchCodec; they still work, and
    torch 2.11-era torchvision has no alternative, so the warning is silenced around our calls."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning,
                                message=".*decoding and encoding capabilities of TorchVision")
        yield


def is_jpeg(data: torch.Tensor) -> bool:
    """Whether the encoded bytes start with the JPEG SOI marker."""
    return data.numel() >= 3 and tuple(int(v) for v in data[:3].tolist()) == _JPEG_MAGIC


def _decode_cpu(data: torch.Tensor) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image
    try:
        with _quiet_torchvision_io():
            return decode_image(data, mode=ImageReadMode.RGB)
    except RuntimeError:
        # Formats torchvision cannot read (e.g. some CMYK JPEGs, BMP): fall back to PIL.
        import io

        import numpy as np
        from PIL import Image
        with Image.open(io.BytesIO(data.numpy().tobytes())) as img:
            arr = np.asarray(img.convert("RGB"))
        return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def decode_batch(encoded: Sequence[torch.Tensor], device: DeviceLike) -> list[torch.Tensor]:
    """Decode encoded images to uint8 RGB tensors (3, H, W) on ``device``.

    On CUDA the JPEGs are decoded together by nvJPEG; everything else (PNG, greyscale, files
    nvJPEG refuses) is decoded on the CPU and moved. Greyscale is expanded to RGB and an alpha
    channel dropped, as ``PIL.Image.convert('RGB')`` does.
    """
    device = torch.device(device)
    out: list[Optional[torch.Tensor]] = [None] * len(encoded)
    if device.type == "cuda":
        from torchvision.io import ImageReadMode, decode_jpeg
        jpegs = [i for i, b in enumerate(encoded) if is_jpeg(b)]
        if jpegs:
            try:
                with _quiet_torchvision_io():
                    decoded = decode_jpeg([encoded[i] for i in jpegs], mode=ImageReadMode.RGB,
                                          device=device)
                for i, img in zip(jpegs, decoded):
                    out[i] = img
            except RuntimeError as e:      # one bad/unsupported file fails the whole call
                log.debug("batched nvJPEG decode failed (%s); decoding this batch on the CPU", e)
    for i, data in enumerate(encoded):
        if out[i] is None:
            out[i] = _decode_cpu(data).to(device, non_blocking=True)
    return out  # type: ignore[return-value]


def resize_like_pil(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased bicubic resize of float images (N, C, H, W) in 0..255 to ``size`` = (h, w).

    Two separable passes (width, then height), each rounded and clamped to 0..255, which is what
    PIL's 8-bit ``Image.resize(..., BICUBIC)`` computes (to within 2 levels).
    """
    h, w = size
    if x.shape[-1] != w:
        x = F.interpolate(x, size=(x.shape[-2], w), mode="bicubic", antialias=True,
                          align_corners=False).round_().clamp_(0, 255)
    if x.shape[-2] != h:
        x = F.interpolate(x, size=(h, w), mode="bicubic", antialias=True,
                          align_corners=False).round_().clamp_(0, 255)
    return x


def _resize_all(images: Sequence[torch.Tensor], size: tuple[int, int]) -> torch.Tensor:
    """Resize images of any sizes to one size; images of equal shape are resized together."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, img in enumerate(images):
        groups[tuple(img.shape[-2:])].append(i)
    first = images[0]
    out = torch.empty((len(images), 3, *size), dtype=torch.float32, device=first.device)
    for idx in groups.values():
        batch = torch.stack([images[i] for i in idx]).float()
        out[idx] = resize_like_pil(batch, size)
    return out


class _Normalise:
    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean = torch.tensor([float(m) * 255.0 for m in mean]).view(1, 3, 1, 1)
        self.std = torch.tensor([float(s) * 255.0 for s in std]).view(1, 3, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.device != x.device:     # moved once, not every batch
            self.mean, self.std = self.mean.to(x.device), self.std.to(x.device)
        return (x - self.mean) / self.std


class DeviceTestTransform:
    """Evaluation transform on the device: decode, bicubic resize to ``crop x crop``, normalise.

    ``__call__(encoded, device)`` returns a float32 tensor (N, 3, crop, crop).
    """

    def __init__(self, crop_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD):
        self.crop_size = int(crop_size)
        self.normalise = _Normalise(mean, std)

    def __call__(self, encoded: Sequence[torch.Tensor], device: DeviceLike) -> torch.Tensor:
        images = decode_batch(encoded, device)
        x = _resize_all(images, (self.crop_size, self.crop_size))
        return self.normalise(x)


class DeviceTrainTransform:
    """Training transform on the device, same augmentations as ``train_transform``.

    Per image: bicubic resize to ``scale x scale``, random square crop (side from
    ``crop_sides(scale)``, uniform position), bicubic resize to ``crop x crop``, horizontal flip
    with probability 1/2, normalise. The random draws come from a CPU ``torch.Generator`` seeded
    with ``seed`` (give each process its own) and re-seeded by :meth:`reseed`, so runs are
    reproducible on any device.
    """

    def __init__(self, scale_size: int, crop_size: int, mean: Sequence[float] = IMAGENET_MEAN,
                 std: Sequence[float] = IMAGENET_STD, seed: int = 0):
        self.scale_size = int(scale_size)
        self.crop_size = int(crop_size)
        self.sides = crop_sides(self.scale_size)
        self.normalise = _Normalise(mean, std)
        self.generator = torch.Generator().manual_seed(int(seed))

    def reseed(self, seed: int) -> None:
        """Restart the random draws from ``seed`` (``fit`` does this at every epoch start)."""
        self.generator.manual_seed(int(seed))

    def sample_params(self, n: int) -> list[tuple[int, int, int, bool]]:
        """(side, top, left, flip) for ``n`` images, drawn from this transform's generator."""
        g = self.generator
        params = []
        for _ in range(n):
            side = self.sides[int(torch.randint(len(self.sides), (1,), generator=g))]
            top = int(torch.randint(self.scale_size - side + 1, (1,), generator=g))
            left = int(torch.randint(self.scale_size - side + 1, (1,), generator=g))
            flip = bool(torch.rand((), generator=g) < 0.5)
            params.append((side, top, left, flip))
        return params

    def __call__(self, encoded: Sequence[torch.Tensor], device: DeviceLike) -> torch.Tensor:
        images = decode_batch(encoded, device)
        scaled = _resize_all(images, (self.scale_size, self.scale_size))
        params = self.sample_params(len(images))
        c = self.crop_size
        out = torch.empty((len(images), 3, c, c), dtype=torch.float32, device=scaled.device)
        by_side: dict[int, list[int]] = defaultdict(list)
        for i, (side, _, _, _) in enumerate(params):
            by_side[side].append(i)
        for side, idx in by_side.items():
            crops = []
            for i in idx:
                _, top, left, _ = params[i]
                crops.append(scaled[i, :, top:top + side, left:left + side])
            out[idx] = resize_like_pil(torch.stack(crops), (c, c))
        flips = [i for i, p in enumerate(params) if p[3]]
        if flips:
            out[flips] = out[flips].flip(-1)
        return self.normalise(out)
