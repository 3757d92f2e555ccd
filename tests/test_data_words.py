"""Class word vectors: the paper's shipped 300-d matrices (COCO2014, VOC2007), GloVe 6B-50d of
the class names, or the user's .npy file."""

import hashlib
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from pu_mlc.data import (COCO2014_CLASSES, FASHION_MNIST_CLASSES, VOC_CLASSES,
                         class_word_vectors, published_word_vectors_path)
from pu_mlc.data import words as words_module
from pu_mlc.data.coco import read_coco_split
from pu_mlc.data.words import class_words, fallback_vector, glove_table
from pu_mlc.errors import DataError


#: Digests from shared/reference/word_vectors/README.md (written out here, not read from the code).
PUBLISHED_SHA256 = {
    "COCO2014": ("coco2014_glove300.npy",
                 "0c00dc368a8219cf5e1822adfd4918881803eddd6013b2bdb062892b6b93a20e"),
    "VOC2007": ("voc2007_glove300.npy",
                "dcb25e816c85a385b792917b8130c951cee41782c81b58c2a48b4f466b72d374"),
}
#: The reference copies, beside the repository (present in the workspace and in CI).
REFERENCE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "word_vectors"
CLASSES = {"COCO2014": COCO2014_CLASSES, "VOC2007": VOC_CLASSES}
#: MS-COCO 2014 category ids: 1..90 without the 10 the dataset never used.
COCO2014_IDS = [i for i in range(1, 91) if i not in (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)]


def glove(word):
    vectors, index = glove_table()
    return np.asarray(vectors[index[word]], dtype=np.float32)


def test_glove_vectors_are_c_by_50_float32():
    out = class_word_vectors(VOC_CLASSES)
    assert out.shape == (20, 50) and out.dtype == np.float32
    assert np.isfinite(out).all() and (np.linalg.norm(out, axis=1) > 0).all()


def test_a_one_word_class_gets_its_glove_vector():
    np.testing.assert_array_equal(class_word_vectors(["horse"])[0], glove("horse"))


def test_multi_word_names_average_their_word_vectors():
    out = class_word_vectors(["traffic light", "Ankle boot", "T-shirt/top"])
    np.testing.assert_allclose(out[0], (glove("traffic") + glove("light")) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[1], (glove("ankle") + glove("boot")) / 2, rtol=1e-6)
    np.testing.assert_allclose(out[2], (glove("t-shirt") + glove("top")) / 2, rtol=1e-6)


def test_voc_compound_names_are_split_into_sensible_words():
    _, index = glove_table()
    assert class_words("diningtable", index) == (["dining", "table"], [])
    assert class_words("pottedplant", index) == (["potted", "plant"], [])
    assert class_words("tvmonitor", index) == (["tv", "monitor"], [])
    assert class_words("aeroplane", index) == (["aeroplane"], [])
    out = class_word_vectors(["pottedplant"])
    np.testing.assert_allclose(out[0], (glove("potted") + glove("plant")) / 2, rtol=1e-6)


def test_every_builtin_class_name_is_fully_known_to_glove(caplog):
    with caplog.at_level(logging.WARNING, logger="pu_mlc.data.words"):
        class_word_vectors(list(VOC_CLASSES) + list(FASHION_MNIST_CLASSES))
    assert caplog.text == ""


def test_an_unknown_word_is_left_out_with_a_warning_naming_class_and_word(caplog):
    with caplog.at_level(logging.WARNING, logger="pu_mlc.data.words"):
        out = class_word_vectors(["red qzxwvbnm"])
    assert "'red qzxwvbnm'" in caplog.text and "'qzxwvbnm'" in caplog.text
    np.testing.assert_array_equal(out[0], glove("red"))


def test_a_class_without_known_words_gets_a_fixed_vector_and_a_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="pu_mlc.data.words"):
        a = class_word_vectors(["qzxwvbnm", "horse"])
        b = class_word_vectors(["qzxwvbnm"])
    assert "no word of the name" in caplog.text
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[0], fallback_vector("qzxwvbnm", 50))
    assert not np.allclose(a[0], fallback_vector("other", 50))


def test_a_npy_file_of_the_right_shape_is_used_as_is(tmp_path):
    arr = np.arange(30, dtype=np.float64).reshape(3, 10)
    np.save(tmp_path / "w.npy", arr)
    out = class_word_vectors(["a", "b", "c"], str(tmp_path / "w.npy"))
    assert out.dtype == np.float32 and np.array_equal(out, arr.astype(np.float32))


@pytest.mark.parametrize("shape", [(4, 10), (3,), (3, 2, 2)])
def test_a_npy_file_of_the_wrong_shape_names_the_file_and_both_shapes(tmp_path, shape):
    path = tmp_path / "w.npy"
    np.save(path, np.zeros(shape, np.float32))
    with pytest.raises(DataError) as e:
        class_word_vectors(["a", "b", "c"], path)
    msg = str(e.value)
    assert str(path) in msg and str(shape) in msg and "(3, d)" in msg


def test_a_missing_npy_file_is_named(tmp_path):
    with pytest.raises(DataError, match=r"word vector file .*nope\.npy.* not found"):
        class_word_vectors(["a"], tmp_path / "nope.npy")


def test_a_file_that_is_not_npy_is_named(tmp_path):
    path = tmp_path / "w.npy"
    path.write_text("not numpy")
    with pytest.raises(DataError, match=r"w\.npy .* not a readable \.npy"):
        class_word_vectors(["a"], path)


# ------------------------------------------------------------------------------------------------
# The paper's 300-d matrices, shipped in the package


@pytest.mark.parametrize("dataset", ["COCO2014", "VOC2007"])
def test_auto_gives_the_shipped_300d_matrix_for_the_paper_datasets(dataset):
    file_name, digest = PUBLISHED_SHA256[dataset]
    path = published_word_vectors_path(dataset)
    assert path.name == file_name and path.is_file()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert words_module.PUBLISHED_WORD_VECTORS[dataset].sha256 == digest
    out = class_word_vectors(CLASSES[dataset], "auto", dataset=dataset)
    assert out.shape == (len(CLASSES[dataset]), 300) and out.dtype == np.float32
    np.testing.assert_array_equal(out, np.load(path).astype(np.float32))
    np.testing.assert_array_equal(class_word_vectors(CLASSES[dataset], "published",
                                                     dataset=dataset), out)
    assert (np.linalg.norm(out, axis=1) > 0).all()


@pytest.mark.parametrize("dataset", ["COCO2014", "VOC2007"])
def test_the_shipped_matrices_are_byte_identical_to_the_reference_copies(dataset):
    file_name, digest = PUBLISHED_SHA256[dataset]
    reference = REFERENCE_DIR / file_name
    if not reference.is_file():
        pytest.skip(f"no reference copy at {reference}")
    assert hashlib.sha256(reference.read_bytes()).hexdigest() == digest
    assert published_word_vectors_path(dataset).read_bytes() == reference.read_bytes()


def test_the_shipped_folder_documents_provenance_license_row_order_and_digests():
    readme = (words_module.WORD_VECTORS_DIR / "README.md").read_text()
    for needle in ("PDDL", "GloVe", "Pennington", "category-id order", "tvmonitor",
                   *(digest for _, digest in PUBLISHED_SHA256.values())):
        assert needle in readme


def test_the_dataset_name_is_matched_case_insensitively_but_coco_format_has_no_matrix():
    assert published_word_vectors_path("coco2014") == published_word_vectors_path("COCO2014")
    assert published_word_vectors_path("voc2007").name == "voc2007_glove300.npy"
    assert published_word_vectors_path("coco") is None
    assert published_word_vectors_path(None) is None


@pytest.mark.parametrize("dataset", [None, "coco"])
def test_auto_gives_glove_50_for_other_datasets(dataset):
    out = class_word_vectors(COCO2014_CLASSES, "auto", dataset=dataset)
    assert out.shape == (80, 50)
    np.testing.assert_array_equal(out, class_word_vectors(COCO2014_CLASSES, "glove"))
    np.testing.assert_array_equal(class_word_vectors(FASHION_MNIST_CLASSES, dataset=dataset),
                                  class_word_vectors(FASHION_MNIST_CLASSES, "glove"))


def test_glove_and_files_ignore_the_dataset(tmp_path):
    assert class_word_vectors(VOC_CLASSES, "glove", dataset="VOC2007").shape == (20, 50)
    arr = np.ones((20, 7), np.float32)
    np.save(tmp_path / "w.npy", arr)
    np.testing.assert_array_equal(
        class_word_vectors(VOC_CLASSES, tmp_path / "w.npy", dataset="VOC2007"), arr)


def test_published_for_a_dataset_without_a_matrix_is_refused_naming_the_alternatives():
    with pytest.raises(DataError, match=r"'coco' has no published word vectors.*"
                                        r"COCO2014, VOC2007.*--word-vectors glove"):
        class_word_vectors(FASHION_MNIST_CLASSES, "published", dataset="coco")


@pytest.mark.parametrize("source", ["auto", "published"])
def test_classes_in_another_order_are_refused_naming_dataset_class_and_fix(source):
    names = list(VOC_CLASSES)
    names[3], names[4] = names[4], names[3]
    with pytest.raises(DataError) as e:
        class_word_vectors(names, source, dataset="VOC2007")
    msg = str(e.value)
    assert "VOC2007" in msg and "class 3 is 'bottle'" in msg and "'boat'" in msg
    assert "--word-vectors glove" in msg and ".npy" in msg


def test_a_renamed_coco_class_is_refused_naming_it():
    names = ["motorbike" if n == "motorcycle" else n for n in COCO2014_CLASSES]
    with pytest.raises(DataError, match=r"COCO2014.*class 3 is 'motorbike'.*'motorcycle'"
                                        r".*--word-vectors glove"):
        class_word_vectors(names, dataset="COCO2014")


@pytest.mark.parametrize("names, needle", [
    (COCO2014_CLASSES[:79], "the first missing class is 'toothbrush'"),
    (COCO2014_CLASSES + ("unicorn",), "the first extra class is 'unicorn'"),
])
def test_a_different_number_of_classes_is_refused(names, needle):
    with pytest.raises(DataError) as e:
        class_word_vectors(names, dataset="COCO2014")
    assert needle in str(e.value) and f"has {len(names)} classes" in str(e.value)


def published_copy(tmp_path, monkeypatch, dataset):
    """A copy of the shipped folder that the loader reads instead; returns the copied file."""
    folder = tmp_path / "word_vectors"
    shutil.copytree(words_module.WORD_VECTORS_DIR, folder)
    monkeypatch.setattr(words_module, "WORD_VECTORS_DIR", folder)
    return folder / PUBLISHED_SHA256[dataset][0]


def test_a_tampered_matrix_is_refused_naming_the_file_and_saying_to_reinstall(tmp_path,
                                                                               monkeypatch):
    path = published_copy(tmp_path, monkeypatch, "VOC2007")
    np.testing.assert_array_equal(class_word_vectors(VOC_CLASSES, dataset="VOC2007"),
                                  np.load(path).astype(np.float32))       # the copy is read
    arr = np.load(path)
    arr[5, 17] += 1e-3
    path.chmod(0o644)
    np.save(path, arr)
    with pytest.raises(DataError) as e:
        class_word_vectors(VOC_CLASSES, dataset="VOC2007")
    msg = str(e.value)
    assert str(path) in msg and "sha256" in msg and PUBLISHED_SHA256["VOC2007"][1] in msg
    assert "reinstall" in msg


def test_a_missing_matrix_is_refused_naming_the_file_and_saying_to_reinstall(tmp_path,
                                                                             monkeypatch):
    path = published_copy(tmp_path, monkeypatch, "COCO2014")
    path.unlink()
    with pytest.raises(DataError, match=r"coco2014_glove300\.npy .*missing.*reinstall"):
        class_word_vectors(COCO2014_CLASSES, "published", dataset="COCO2014")


def test_coco2014_classes_are_the_80_official_names_every_one_known_to_glove(caplog):
    assert len(COCO2014_CLASSES) == len(set(COCO2014_CLASSES)) == len(COCO2014_IDS) == 80
    assert COCO2014_CLASSES[:3] == ("person", "bicycle", "car")
    assert COCO2014_CLASSES[-2:] == ("hair drier", "toothbrush")
    with caplog.at_level(logging.WARNING, logger="pu_mlc.data.words"):
        class_word_vectors(COCO2014_CLASSES, "glove")
    assert caplog.text == ""


def test_the_coco_reader_gives_the_published_row_order_from_a_shuffled_category_list(tmp_path):
    # An instances json as MS-COCO ships it: the categories' ids have gaps; here they are also
    # listed out of order. The reader's class order (ids ascending) is the matrix's row order.
    order = np.random.default_rng(0).permutation(80)
    categories = [{"supercategory": "x", "id": COCO2014_IDS[k], "name": COCO2014_CLASSES[k]}
                  for k in order]
    images = [{"id": 7, "file_name": "a.jpg", "height": 8, "width": 8}]
    annotations = [{"id": 1, "image_id": 7, "category_id": 90, "iscrowd": 0}]
    ann = tmp_path / "instances_train2014.json"
    ann.write_text(json.dumps({"images": images, "annotations": annotations,
                               "categories": categories}))
    split = read_coco_split("train", ann, tmp_path)
    assert split.class_names == COCO2014_CLASSES
    assert split.labels[0, -1] == 1                                # id 90 = toothbrush
    assert class_word_vectors(split.class_names, dataset="COCO2014").shape == (80, 300)


def test_glove_class_vectors_are_cached_per_user_and_equal_the_computed_ones(
        tmp_path, monkeypatch, caplog):
    from pu_mlc.data import words as words_module

    monkeypatch.setenv("PU_MLC_CACHE_DIR", str(tmp_path / "cache"))
    names = ["dog", "dining table", "t-shirt"]
    computed, complete = words_module._glove_vectors_uncached(names)
    assert complete
    first = words_module._glove_vectors(names)
    assert np.array_equal(first, computed)
    assert len(list((tmp_path / "cache").glob("glove50-*.npy"))) == 1

    def no_table():
        raise AssertionError("the GloVe table was read despite the cache")

    monkeypatch.setattr(words_module, "glove_table", no_table)
    assert np.array_equal(words_module._glove_vectors(names), computed)
    # another class list is another entry (and needs the table)
    with pytest.raises(AssertionError, match="despite the cache"):
        words_module._glove_vectors(["dog", "cat"])


def test_names_with_unknown_words_are_not_cached_so_they_warn_every_time(tmp_path,
                                                                         monkeypatch, caplog):
    from pu_mlc.data import words as words_module

    monkeypatch.setenv("PU_MLC_CACHE_DIR", str(tmp_path / "cache"))
    for _ in range(2):
        caplog.clear()
        words_module._glove_vectors(["dog", "zqxjvbnm"])
        assert "not in GloVe 6B" in caplog.text
    assert not list((tmp_path / "cache").glob("glove50-*.npy"))
