"""The published PIL transforms and their on-device counterparts (run here on the CPU)."""

import io

import numpy as np
import pytest
import skimage.data
import torch
from PIL import Image

from pu_mlc.data import (IMAGENET_MEAN, IMAGENET_STD, DeviceTestTransform, DeviceTrainTransform,
                         crop_sides, load_dataset, test_transform, train_transform)
from pu_mlc.data.dataset import read_bytes
from pu_mlc.data.device_transforms import decode_batch, resize_like_pil
from pu_mlc.data.transforms import RandomSquareCrop

#: Largest per-pixel difference allowed between the device and PIL test transforms on the CPU,
#: in 0..255 units (the docstring of pu_mlc.data.device_transforms states this bound).
PIL_BOUND_LEVELS = 2
PIL_BOUND_MEAN_LEVELS = 0.1


def photo(size=None) -> Image.Image:
    img = Image.fromarray(skimage.data.astronaut())
    return img.resize(size, Image.BICUBIC) if size else img


def jpeg_bytes(img: Image.Image) -> torch.Tensor:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=90)
    return torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8)


def test_crop_sides_are_the_published_ones():
    assert crop_sides(512) == (512, 448, 384, 320, 256)
    assert crop_sides(640) == (640, 576, 512, 448, 384, 320)   # the published 640 special case
    assert crop_sides(256) == (256, 224, 192, 160, 128)


def test_train_transform_gives_normalised_crop_sized_tensors():
    torch.manual_seed(0)
    x = train_transform(64, 48)(photo())
    assert x.shape == (3, 48, 48) and x.dtype == torch.float32
    # a mid-grey image maps to (0.5 - mean) / std exactly where the crop lands
    grey = train_transform(64, 48)(Image.new("RGB", (100, 80), (128, 128, 128)))
    expected = (128 / 255 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(grey.mean(dim=(1, 2)), expected, atol=1e-5)


def test_train_crops_take_every_published_side_and_no_other():
    torch.manual_seed(0)
    crop = RandomSquareCrop(crop_sides(512))
    img = Image.new("RGB", (512, 512))
    seen = {crop(img).size for _ in range(200)}
    assert seen == {(s, s) for s in (512, 448, 384, 320, 256)}


def test_train_crops_land_at_varied_positions():
    torch.manual_seed(0)
    arr = np.zeros((64, 64, 3), np.uint8)
    arr[..., 0] = np.arange(64)[None, :]         # red channel encodes the column
    arr[..., 1] = np.arange(64)[:, None]         # green channel encodes the row
    crop = RandomSquareCrop((32,))
    corners = {np.asarray(crop(Image.fromarray(arr)))[0, 0, :2].tobytes() for _ in range(50)}
    assert len(corners) > 20


def test_test_transform_is_deterministic_and_sized():
    img = photo()
    a, b = test_transform(96)(img), test_transform(96)(img)
    assert a.shape == (3, 96, 96) and torch.equal(a, b)


def test_resize_like_pil_matches_pil_bicubic_within_two_levels():
    img = photo()
    x = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)[None].float()
    for size in [(448, 448), (96, 96), (700, 600), (200, 512)]:
        ours = resize_like_pil(x, size)[0].permute(1, 2, 0).numpy()
        ref = np.asarray(img.resize(size[::-1], Image.BICUBIC)).astype(np.float32)
        diff = np.abs(ours - ref)
        assert diff.max() <= PIL_BOUND_LEVELS and diff.mean() < PIL_BOUND_MEAN_LEVELS, size


def test_device_test_transform_matches_the_pil_test_transform_on_cpu(coco_format_root):
    split = load_dataset("coco", coco_format_root)["test"]
    encoded = [read_bytes(split.path(i)) for i in range(6)]
    encoded.append(jpeg_bytes(photo((300, 220))))              # another size in the batch
    ours = DeviceTestTransform(64)(encoded, "cpu")
    pil = [Image.open(split.path(i)).convert("RGB") for i in range(6)]
    pil.append(Image.open(io.BytesIO(encoded[-1].numpy().tobytes())).convert("RGB"))
    ref = torch.stack([test_transform(64)(im) for im in pil])
    assert ours.shape == ref.shape == (7, 3, 64, 64) and ours.dtype == torch.float32
    bound = PIL_BOUND_LEVELS / 255 / min(IMAGENET_STD) + 1e-5
    assert (ours - ref).abs().max() <= bound
    assert (ours - ref).abs().mean() < PIL_BOUND_MEAN_LEVELS / 255 / min(IMAGENET_STD)


def test_device_decoding_handles_png_greyscale_and_rgba_like_pil():
    arrays = []
    for mode in ("L", "RGBA", "RGB"):
        rng = np.random.default_rng(0)
        img = Image.fromarray(rng.integers(0, 256, (24, 30, len(mode)), np.uint8).squeeze(),
                              mode=mode)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        arrays.append((torch.frombuffer(bytearray(buf.getvalue()), dtype=torch.uint8), img))
    decoded = decode_batch([a for a, _ in arrays], "cpu")
    for t, (_, img) in zip(decoded, arrays):
        assert t.shape == (3, 24, 30) and t.dtype == torch.uint8
        assert np.array_equal(t.permute(1, 2, 0).numpy(), np.asarray(img.convert("RGB")))


def test_device_train_transform_gives_normalised_crops_reproducibly(coco_format_root):
    split = load_dataset("coco", coco_format_root)["train"]
    encoded = [read_bytes(split.path(i)) for i in range(8)]
    a = DeviceTrainTransform(64, 48, seed=3)(encoded, "cpu")
    b = DeviceTrainTransform(64, 48, seed=3)(encoded, "cpu")
    c = DeviceTrainTransform(64, 48, seed=4)(encoded, "cpu")
    assert a.shape == (8, 3, 48, 48) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    lo = ((0 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).min()
    hi = ((1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)).max()
    assert a.min() >= lo - 1e-5 and a.max() <= hi + 1e-5


def test_device_train_crops_draw_every_side_and_both_flips():
    t = DeviceTrainTransform(512, 448, seed=0)
    params = t.sample_params(300)
    assert {p[0] for p in params} == {512, 448, 384, 320, 256}
    assert all(0 <= top <= 512 - s and 0 <= left <= 512 - s for s, top, left, _ in params)
    assert 100 < sum(p[3] for p in params) < 200


def test_device_train_transform_equals_pil_ops_for_the_same_draws():
    img = photo((120, 90))
    encoded = [jpeg_bytes(img)]
    t = DeviceTrainTransform(64, 40, seed=11)
    side, top, left, flip = DeviceTrainTransform(64, 40, seed=11).sample_params(1)[0]
    ours = t(encoded, "cpu")[0]
    pil = Image.open(io.BytesIO(encoded[0].numpy().tobytes())).convert("RGB")
    pil = pil.resize((64, 64), Image.BICUBIC).crop((left, top, left + side, top + side))
    pil = pil.resize((40, 40), Image.BICUBIC)
    if flip:
        pil = pil.transpose(Image.FLIP_LEFT_RIGHT)
    ref = test_transform(40)(pil)          # resize to 40 is then the identity
    bound = PIL_BOUND_LEVELS / 255 / min(IMAGENET_STD) + 1e-5
    assert (ours - ref).abs().max() <= 2 * bound        # two resizes, each within the bound


@pytest.mark.parametrize("cls", [DeviceTrainTransform, DeviceTestTransform])
def test_device_transforms_accept_a_single_image_batch(cls, coco_format_root):
    split = load_dataset("coco", coco_format_root)["val"]
    t = cls(40, 32) if cls is DeviceTrainTransform else cls(32)
    assert t([read_bytes(split.path(0))], torch.device("cpu")).shape == (1, 3, 32, 32)
