"""Dataset readers: COCO-2014, any COCO-format folder, VOC-2007, and their error messages."""

import json
import shutil

import numpy as np
import pytest

import builders
from pu_mlc.data import (COCO2014_CLASSES, FASHION_MNIST_CLASSES, Split, VOC_CLASSES,
                         load_dataset)
from pu_mlc.errors import DataError


# --- COCO-2014 ----------------------------------------------------------------------------------
def test_coco2014_labels_equal_the_instances_written(coco2014_dataset):
    splits = load_dataset("COCO2014", coco2014_dataset.root)
    assert set(splits) == {"train", "test"}
    for name, expected in coco2014_dataset.splits.items():
        s = splits[name]
        assert s.files == expected.files
        assert s.labels.dtype == np.int8
        assert np.array_equal(s.labels, expected.labels)
    assert splits["train"].image_dir == coco2014_dataset.root / "train2014"
    assert splits["test"].image_dir == coco2014_dataset.root / "val2014"


def test_coco2014_columns_follow_sorted_category_ids_not_json_order(coco2014_root):
    s = load_dataset("COCO2014", coco2014_root)["train"]
    assert s.class_names == COCO2014_CLASSES                # the official order (ascending ids)
    json_order = [c["name"] for c in builders.read_json(
        coco2014_root / "annotations" / "instances_train2014.json")["categories"]]
    assert list(s.class_names) != json_order


def test_coco2014_keeps_images_without_annotations_as_all_negative(coco2014_dataset):
    s = load_dataset("COCO2014", coco2014_dataset.root)["train"]
    coco = builders.read_json(coco2014_dataset.root / "annotations" / "instances_train2014.json")
    annotated = {a["image_id"] for a in coco["annotations"]}
    empty = [i for i, im in enumerate(coco["images"]) if im["id"] not in annotated]
    assert empty == [2]
    assert (s.labels[2] == -1).all()
    assert len(s) == len(coco["images"])


def test_coco2014_keeps_json_image_order(coco2014_root):
    coco = builders.read_json(coco2014_root / "annotations" / "instances_val2014.json")
    ids = [im["id"] for im in coco["images"]]
    assert ids != sorted(ids)
    s = load_dataset("COCO2014", coco2014_root)["test"]
    assert list(s.files) == [im["file_name"] for im in coco["images"]]


def test_crowd_annotations_count_as_positive_labels(coco2014_root):
    coco = builders.read_json(coco2014_root / "annotations" / "instances_train2014.json")
    crowd = [a for a in coco["annotations"] if a["iscrowd"] == 1]
    assert len(crowd) == 1
    s = load_dataset("COCO2014", coco2014_root)["train"]
    row = [im["id"] for im in coco["images"]].index(crowd[0]["image_id"])
    col = sorted(builders.COCO2014_CATEGORY_IDS).index(crowd[0]["category_id"])
    assert s.labels[row, col] == 1


def test_dataset_names_are_case_insensitive(coco2014_root):
    assert len(load_dataset("coco2014", coco2014_root)["train"]) == 24


def test_an_unknown_dataset_name_is_refused_naming_the_choices(coco2014_root):
    with pytest.raises(ValueError, match="COCO2014, VOC2007, coco"):
        load_dataset("imagenet", coco2014_root)


def test_a_missing_root_names_the_path_and_the_layout(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("COCO2014", tmp_path / "nowhere")
    assert "nowhere" in str(e.value) and "train2014/" in str(e.value)


def test_a_missing_coco2014_annotation_file_names_the_expected_path(tmp_path, coco2014_root):
    root = builders.copy_dataset(coco2014_root, tmp_path / "c")
    (root / "annotations" / "instances_val2014.json").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("COCO2014", root)
    msg = str(e.value)
    assert str(root / "annotations" / "instances_val2014.json") in msg
    assert "COCO2014 layout" in msg


def test_a_missing_image_folder_is_named(tmp_path, coco2014_root):
    root = builders.copy_dataset(coco2014_root, tmp_path / "c")
    shutil.rmtree(root / "val2014")
    with pytest.raises(DataError, match=r"image folder .*val2014.* not found"):
        load_dataset("COCO2014", root)


def test_annotation_json_that_is_not_json_is_named_with_the_fix(tmp_path, coco2014_root):
    root = builders.copy_dataset(coco2014_root, tmp_path / "c")
    path = root / "annotations" / "instances_train2014.json"
    path.write_text('{"images": [}')
    with pytest.raises(DataError) as e:
        load_dataset("COCO2014", root)
    assert str(path) in str(e.value) and "not valid JSON" in str(e.value)
    assert "line 1" in str(e.value)


@pytest.mark.parametrize("key", ["images", "categories"])
def test_annotation_json_without_a_required_field_names_it(tmp_path, coco2014_root, key):
    root = builders.copy_dataset(coco2014_root, tmp_path / "c")
    path = root / "annotations" / "instances_train2014.json"
    data = builders.read_json(path)
    del data[key]
    builders.write_json(path, data)
    with pytest.raises(DataError) as e:
        load_dataset("COCO2014", root)
    assert str(path) in str(e.value) and f"no '{key}' field" in str(e.value)


def test_an_annotation_pointing_at_an_unknown_image_names_the_ids(tmp_path, coco2014_root):
    root = builders.copy_dataset(coco2014_root, tmp_path / "c")
    path = root / "annotations" / "instances_train2014.json"
    data = builders.read_json(path)
    data["annotations"][4]["image_id"] = 777777777
    builders.write_json(path, data)
    with pytest.raises(DataError) as e:
        load_dataset("COCO2014", root)
    msg = str(e.value)
    assert str(path) in msg and "777777777" in msg
    assert str(data["annotations"][4]["id"]) in msg


def test_an_annotation_with_an_unknown_category_names_the_ids(tmp_path, coco2014_root):
    root = builders.copy_dataset(coco2014_root, tmp_path / "c")
    path = root / "annotations" / "instances_val2014.json"
    data = builders.read_json(path)
    data["annotations"][0]["category_id"] = 91
    builders.write_json(path, data)
    with pytest.raises(DataError) as e:
        load_dataset("COCO2014", root)
    assert str(path) in str(e.value) and "category_id 91" in str(e.value)


def test_train_and_test_with_different_class_lists_are_refused(tmp_path, coco2014_root):
    root = builders.copy_dataset(coco2014_root, tmp_path / "c")
    path = root / "annotations" / "instances_val2014.json"
    data = builders.read_json(path)
    data["categories"] = [c for c in data["categories"] if c["id"] != 90]
    data["annotations"] = [a for a in data["annotations"] if a["category_id"] != 90]
    builders.write_json(path, data)
    with pytest.raises(DataError) as e:
        load_dataset("COCO2014", root)
    msg = str(e.value)
    assert "instances_train2014.json" in msg and "instances_val2014.json" in msg
    assert "disagree" in msg and "toothbrush" in msg          # id 90, left out of val


# --- coco (any COCO-format dataset) -------------------------------------------------------------
def test_coco_format_labels_equal_the_instances_written(coco_format_dataset):
    splits = load_dataset("coco", coco_format_dataset.root)
    assert set(splits) == {"train", "val", "test"}
    for name, expected in coco_format_dataset.splits.items():
        assert splits[name].files == expected.files
        assert np.array_equal(splits[name].labels, expected.labels)
        assert splits[name].class_names == FASHION_MNIST_CLASSES
        assert splits[name].image_dir == coco_format_dataset.root / name


def test_coco_format_without_val_json_has_no_val_split(tmp_path, coco_format_root):
    root = builders.copy_dataset(coco_format_root, tmp_path / "c")
    (root / "annotations" / "instances_val.json").unlink()
    assert set(load_dataset("coco", root)) == {"train", "test"}


def test_coco_format_missing_test_json_names_the_path_and_layout(tmp_path, coco_format_root):
    root = builders.copy_dataset(coco_format_root, tmp_path / "c")
    (root / "annotations" / "instances_test.json").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("coco", root)
    assert "instances_test.json" in str(e.value) and "coco layout" in str(e.value)


def test_a_json_that_is_a_list_is_refused_naming_the_file(tmp_path, coco_format_root):
    root = builders.copy_dataset(coco_format_root, tmp_path / "c")
    path = root / "annotations" / "instances_train.json"
    path.write_text(json.dumps([1, 2, 3]))
    with pytest.raises(DataError, match=r"instances_train\.json holds a JSON list"):
        load_dataset("coco", root)


def test_duplicate_image_ids_are_refused_naming_the_id(tmp_path, coco_format_root):
    root = builders.copy_dataset(coco_format_root, tmp_path / "c")
    path = root / "annotations" / "instances_test.json"
    data = builders.read_json(path)
    data["images"][1]["id"] = data["images"][0]["id"]
    builders.write_json(path, data)
    with pytest.raises(DataError, match=r"instances_test\.json: images id 1 appears twice"):
        load_dataset("coco", root)


# --- VOC-2007 -----------------------------------------------------------------------------------
def test_voc2007_labels_equal_the_objects_written_without_difficult_ones(voc2007_dataset):
    splits = load_dataset("VOC2007", voc2007_dataset.root)
    assert set(splits) == {"train", "test"}
    for name, expected in voc2007_dataset.splits.items():
        assert splits[name].files == expected.files
        assert np.array_equal(splits[name].labels, expected.labels)
        assert splits[name].class_names == VOC_CLASSES


def test_voc2007_has_the_20_classes_in_the_usual_order(voc2007_root):
    s = load_dataset("VOC2007", voc2007_root)["train"]
    assert s.class_names[0] == "aeroplane" and s.class_names[-1] == "tvmonitor"
    assert len(s.class_names) == 20 and s.class_names[10] == "diningtable"


def test_a_class_present_only_as_difficult_is_negative(voc2007_dataset):
    items = voc2007_dataset.splits["train"].items[0]
    only_difficult = {c for c, d in items if d} - {c for c, d in items if not d}
    assert only_difficult, "fixture must hold a class present only as difficult"
    s = load_dataset("VOC2007", voc2007_dataset.root)["train"]
    for c in only_difficult:
        assert s.labels[0, c] == -1


def test_a_class_both_difficult_and_normal_is_positive(voc2007_dataset):
    items = voc2007_dataset.splits["train"].items[1]
    both = {c for c, d in items if d} & {c for c, d in items if not d}
    assert both
    s = load_dataset("VOC2007", voc2007_dataset.root)["train"]
    for c in both:
        assert s.labels[1, c] == 1


def test_voc2007_root_may_be_the_voc2007_folder_itself(voc2007_root):
    a = load_dataset("VOC2007", voc2007_root)
    b = load_dataset("VOC2007", voc2007_root / "VOCdevkit" / "VOC2007")
    assert a["test"].files == b["test"].files
    assert np.array_equal(a["test"].labels, b["test"].labels)


def test_a_folder_without_voc_is_refused_naming_the_layout(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset("VOC2007", tmp_path)
    assert "Annotations" in str(e.value) and "VOCdevkit/VOC2007" in str(e.value)


def test_a_voc_xml_that_does_not_parse_is_named(tmp_path, voc2007_root):
    root = builders.copy_dataset(voc2007_root, tmp_path / "v")
    voc = root / "VOCdevkit" / "VOC2007"
    first = (voc / "ImageSets" / "Main" / "test.txt").read_text().split()[0]
    xml = voc / "Annotations" / f"{first}.xml"
    xml.write_text(xml.read_text()[:150])
    with pytest.raises(DataError) as e:
        load_dataset("VOC2007", root)
    assert str(xml) in str(e.value) and "not valid XML" in str(e.value)


def test_a_list_file_naming_an_id_without_xml_is_refused(tmp_path, voc2007_root):
    root = builders.copy_dataset(voc2007_root, tmp_path / "v")
    lst = root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "trainval.txt"
    lst.write_text(lst.read_text() + "999999\n")
    with pytest.raises(DataError) as e:
        load_dataset("VOC2007", root)
    msg = str(e.value)
    assert "trainval.txt" in msg and "'999999'" in msg and "999999.xml" in msg


def test_a_missing_voc_list_file_names_the_path(tmp_path, voc2007_root):
    root = builders.copy_dataset(voc2007_root, tmp_path / "v")
    (root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main" / "test.txt").unlink()
    with pytest.raises(DataError, match=r"image list .*test\.txt not found"):
        load_dataset("VOC2007", root)


def test_a_voc_object_of_an_unknown_class_is_named(tmp_path, voc2007_root):
    root = builders.copy_dataset(voc2007_root, tmp_path / "v")
    voc = root / "VOCdevkit" / "VOC2007"
    first = (voc / "ImageSets" / "Main" / "trainval.txt").read_text().split()[0]
    xml = voc / "Annotations" / f"{first}.xml"
    xml.write_text(builders.voc_xml(f"{first}.jpg", 112, 112, [("zebra", False, (1, 1, 5, 5))]))
    with pytest.raises(DataError, match=r"object named 'zebra'"):
        load_dataset("VOC2007", root)


# --- Split --------------------------------------------------------------------------------------
def test_split_subset_keeps_files_and_labels_aligned(coco2014_root):
    s = load_dataset("COCO2014", coco2014_root)["train"]
    sub = s.subset(np.array([5, 0, 7]))
    assert isinstance(sub, Split) and len(sub) == 3
    assert sub.files == (s.files[5], s.files[0], s.files[7])
    assert np.array_equal(sub.labels, s.labels[[5, 0, 7]])
    assert sub.class_names == s.class_names and sub.image_dir == s.image_dir
