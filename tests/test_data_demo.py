"""The Fashion-MNIST multi-label demo builder."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO

import builders
from pu_mlc.data import FASHION_MNIST_CLASSES, build_demo_dataset, load_dataset
from pu_mlc.errors import ConfigError, DataError

SMALL = dict(n_train=10, n_val=4, n_test=6, canvas_size=96)


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo") / "d"
    return root, build_demo_dataset(root, seed=5, **SMALL)


def test_the_same_seed_gives_byte_identical_files(tmp_path, demo):
    root, _ = demo
    build_demo_dataset(tmp_path / "again", seed=5, **SMALL)
    a, b = tree_bytes(root), tree_bytes(tmp_path / "again")
    assert a.keys() == b.keys() and len(a) == 10 + 4 + 6 + 3 + 1
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]


def test_another_seed_gives_other_data(tmp_path, demo):
    root, _ = demo
    build_demo_dataset(tmp_path / "other", seed=6, **SMALL)
    for split in ("train", "val", "test"):
        name = f"annotations/instances_{split}.json"
        assert (root / name).read_bytes() != (tmp_path / "other" / name).read_bytes()
    assert (root / "train/train_000000.jpg").read_bytes() != \
        (tmp_path / "other/train/train_000000.jpg").read_bytes()


def test_pycocotools_reads_every_json(demo, capsys):
    root, _ = demo
    for split, n in (("train", 10), ("val", 4), ("test", 6)):
        coco = COCO(str(root / "annotations" / f"instances_{split}.json"))
        assert coco.getCatIds() == list(range(1, 11))
        assert [c["name"] for c in coco.loadCats(coco.getCatIds())] == list(FASHION_MNIST_CLASSES)
        assert len(coco.getImgIds()) == n
        for img in coco.loadImgs(coco.getImgIds()):
            assert (root / split / img["file_name"]).is_file()
            anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
            assert 1 <= len(anns) <= 4
            for a in anns:
                x, y, w, h = a["bbox"]
                assert a["iscrowd"] == 0 and 0 < a["area"] <= w * h
                assert 0 <= x and 0 <= y and x + w <= img["width"] and y + h <= img["height"]


def test_items_come_from_train_for_train_and_val_and_from_t10k_for_test(demo):
    root, _ = demo
    data = builders.fashion_mnist()
    used = {}
    for split, source in (("train", "train"), ("val", "train"), ("test", "t10k")):
        coco = builders.read_json(root / "annotations" / f"instances_{split}.json")
        used[split] = set()
        for img in coco["images"]:
            assert img["fashion_mnist"]["split"] == source
        for a in coco["annotations"]:
            # the recorded source item has the annotated class in the recorded split
            assert data[f"{source}_labels"][a["fashion_mnist_index"]] + 1 == a["category_id"]
            used[split].add(a["fashion_mnist_index"])
    assert not used["train"] & used["val"], "train and val must not share items"


def test_labels_are_the_set_of_item_classes(demo):
    root, _ = demo
    data = builders.fashion_mnist()
    splits = load_dataset("coco", root)
    for split, source in (("train", "train"), ("val", "train"), ("test", "t10k")):
        coco = builders.read_json(root / "annotations" / f"instances_{split}.json")
        for i, img in enumerate(coco["images"]):
            classes = {int(data[f"{source}_labels"][k]) for k in img["fashion_mnist"]["indices"]}
            assert set(np.flatnonzero(splits[split].labels[i] == 1)) == classes


def test_the_manifest_records_parameters_checksums_and_label_statistics(demo, fashion_mnist_dir):
    root, manifest = demo
    assert json.loads((root / "manifest.json").read_text()) == manifest
    assert manifest["seed"] == 5 and manifest["parameters"]["canvas_size"] == 96
    assert manifest["parameters"]["item_scale"] == [0.125, 0.25]
    assert "package_version" in manifest
    sums = manifest["source"]["sha256"]
    assert len(sums) == 4
    for name, digest in sums.items():
        assert hashlib.sha256((fashion_mnist_dir / name).read_bytes()).hexdigest() == digest
    train = manifest["splits"]["train"]
    coco = builders.read_json(root / "annotations" / "instances_train.json")
    assert train["images"] == 10 and train["annotations"] == len(coco["annotations"])
    labels = load_dataset("coco", root)["train"].labels
    assert train["mean_labels_per_image"] == pytest.approx((labels == 1).sum(1).mean(), abs=1e-4)
    assert train["class_images"]["Bag"] == int((labels[:, 8] == 1).sum())
    for path, digest in manifest["annotation_sha256"].items():
        assert hashlib.sha256((root / path).read_bytes()).hexdigest() == digest


def test_a_non_empty_output_dir_is_refused_unless_overwrite(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not empty.*overwrite"):
        build_demo_dataset(out, **SMALL)
    assert (out / "keep.txt").exists()
    build_demo_dataset(out, overwrite=True, **SMALL)
    assert not (out / "keep.txt").exists() and (out / "manifest.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]    # no temp or old folder left


def test_an_existing_empty_output_dir_is_used(tmp_path):
    (tmp_path / "d").mkdir()
    build_demo_dataset(tmp_path / "d", **SMALL)
    assert (tmp_path / "d" / "annotations" / "instances_test.json").is_file()


def test_n_val_zero_writes_no_val_split(tmp_path):
    build_demo_dataset(tmp_path / "d", n_train=4, n_val=0, n_test=3, canvas_size=64)
    assert set(load_dataset("coco", tmp_path / "d")) == {"train", "test"}


def test_png_output_is_supported(tmp_path):
    build_demo_dataset(tmp_path / "d", n_train=3, n_val=0, n_test=2, canvas_size=64,
                       image_format="png")
    assert (tmp_path / "d" / "test" / "test_000001.png").read_bytes()[:4] == b"\x89PNG"


def test_items_per_image_stay_within_min_and_max(tmp_path):
    m = build_demo_dataset(tmp_path / "d", n_train=30, n_val=0, n_test=2, canvas_size=64,
                           min_items=2, max_items=3, backgrounds=False)
    hist = m["splits"]["train"]["items_per_image"]
    assert set(hist) == {"2", "3"} and sum(hist.values()) == 30


def test_missing_fashion_mnist_stops_before_writing(tmp_path):
    with pytest.raises(DataError, match="apt-get install dataset-fashion-mnist"):
        build_demo_dataset(tmp_path / "d", source_dir=tmp_path / "none", **SMALL)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("bad", [dict(max_items=0), dict(item_scale=(0.5, 0.2)),
                                 dict(n_train=0), dict(image_format="gif")])
def test_bad_builder_parameters_are_refused_naming_them(tmp_path, bad):
    params = {**SMALL, **bad}
    with pytest.raises(ConfigError, match=next(iter(bad))):
        build_demo_dataset(tmp_path / "d", **params)
