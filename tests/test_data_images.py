"""check_images finds unreadable images before training starts."""

import logging

import numpy as np
import pytest
from PIL import Image

import builders
from pu_mlc.data import check_images, load_dataset
from pu_mlc.data.images import image_problem
from pu_mlc.errors import DataError


@pytest.fixture
def coco_copy(tmp_path, coco_format_root):
    return builders.copy_dataset(coco_format_root, tmp_path / "c")


def test_a_clean_split_passes_unchanged(coco_format_root):
    split = load_dataset("coco", coco_format_root)["test"]
    checked, bad = check_images(split, workers=2)
    assert bad == [] and checked.files == split.files


def test_a_truncated_jpeg_stops_with_its_name_and_the_skip_flag(coco_copy):
    split = load_dataset("coco", coco_copy)["train"]
    builders.truncate_file(split.path(3))
    with pytest.raises(DataError) as e:
        check_images(split, workers=2)
    msg = str(e.value)
    assert split.files[3] in msg and "1 of 24 images" in msg
    assert "--skip-bad-images" in msg and "truncated" in msg


def test_garbage_and_missing_files_are_reported_with_their_count(coco_copy):
    split = load_dataset("coco", coco_copy)["train"]
    builders.garbage_file(split.path(0))
    split.path(5).unlink()
    with pytest.raises(DataError) as e:
        check_images(split, workers=2)
    msg = str(e.value)
    assert "2 of 24 images" in msg and split.files[0] in msg and split.files[5] in msg
    assert "missing" in msg


def test_many_bad_images_are_listed_first_few_then_counted(coco_copy):
    split = load_dataset("coco", coco_copy)["train"]
    for i in range(7):
        split.path(i).write_bytes(b"")
    with pytest.raises(DataError) as e:
        check_images(split, workers=2)
    assert "7 of 24 images" in str(e.value) and "and 2 more" in str(e.value)


def test_skip_bad_drops_and_counts_the_unreadable_images(coco_copy, caplog):
    split = load_dataset("coco", coco_copy)["train"]
    builders.truncate_file(split.path(3))
    builders.garbage_file(split.path(10))
    with caplog.at_level(logging.WARNING, logger="pu_mlc.data.images"):
        checked, bad = check_images(split, skip_bad=True, workers=2)
    assert bad == [split.files[3], split.files[10]]
    assert len(checked) == 22 and split.files[3] not in checked.files
    keep = [i for i in range(24) if i not in (3, 10)]
    assert np.array_equal(checked.labels, split.labels[keep])
    assert "skipped 2 unreadable image(s)" in caplog.text


def test_a_jpeg_with_trailing_bytes_after_its_end_marker_is_accepted(tmp_path):
    path = tmp_path / "a.jpg"
    Image.fromarray(np.full((32, 32, 3), 120, np.uint8)).save(path, quality=90)
    path.write_bytes(path.read_bytes() + b"\x00" * 5000)     # EOI no longer in the last 4 KiB
    assert image_problem(path) is None


@pytest.mark.parametrize("mode,ext", [("L", "png"), ("RGBA", "png"), ("RGB", "png"),
                                      ("L", "jpg")])
def test_greyscale_rgba_and_png_images_are_readable(tmp_path, mode, ext):
    path = tmp_path / f"a.{ext}"
    Image.new(mode, (20, 16)).save(path)
    assert image_problem(path) is None


def test_a_truncated_png_is_rejected(tmp_path):
    path = tmp_path / "a.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(path)
    builders.truncate_file(path)
    assert image_problem(path) is not None


def cut_mid_stream(path) -> None:
    """Half the file, then a whole copy appended (an interrupted download restarted into the same
    file): header and end-of-image marker intact, the entropy-coded data broken."""
    whole = path.read_bytes()
    builders.truncate_file(path)
    path.write_bytes(path.read_bytes() + whole)


def test_a_jpeg_damaged_mid_stream_passes_the_header_check_but_not_the_full_decode(coco_copy):
    split = load_dataset("coco", coco_copy)["train"]
    path = split.path(6)
    cut_mid_stream(path)
    with Image.open(path) as img:           # what a header check sees: a fine JPEG
        img.verify()
    assert path.read_bytes()[-2:] == b"\xff\xd9"
    why = image_problem(path)
    assert why is not None and why.startswith("damaged image data: decoding fails")
    with pytest.raises(DataError) as e:
        check_images(split, workers=2)
    assert split.files[6] in str(e.value) and "--skip-bad-images" in str(e.value)
    checked, bad = check_images(split, skip_bad=True, workers=2)
    assert bad == [split.files[6]] and len(checked) == 23


def test_a_loader_that_meets_an_undecodable_image_names_it(coco_copy):
    """A file damaged after the check (or on failing storage): the error names it."""
    from pu_mlc.data import MultiLabelImageDataset

    split = load_dataset("coco", coco_copy)["train"]
    dataset = MultiLabelImageDataset(split, split.labels, transform=None)
    cut_mid_stream(split.path(2))
    with pytest.raises(DataError) as e:
        dataset[2]
    assert str(split.path(2)) in str(e.value) and "--skip-bad-images" in str(e.value)
