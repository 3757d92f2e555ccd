"""Class word vectors: GloVe 6B-50d of the class names, or the user's .npy file."""

import logging

import numpy as np
import pytest

from pu_mlc.data import FASHION_MNIST_CLASSES, VOC_CLASSES, class_word_vectors
from pu_mlc.data.words import class_words, fallback_vector, glove_table
from pu_mlc.errors import DataError


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
