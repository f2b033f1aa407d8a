"""The data layer's checks and conversions, edge by edge: what an h5 file, arrays or a data
folder may hold, how pixels are scaled, where the course files are looked for, and the one
message each problem gets (naming the file and what to do). Each test pins a behaviour a
user would notice if it changed (docs/testing.md, the mutation run)."""

from __future__ import annotations

import os
import re

import h5py
import numpy as np
import pytest

from gpucat.data import course
from gpucat.data.dataset import Dataset, as_rows, check_images, check_labels, divisor_for
from gpucat.data.h5 import BLOCK, BLOCKED_FROM, load_h5, not_hdf5_reason, read_unit, storage
from gpucat.errors import GpucatError

SHAPE = (64, 64, 3)


def images(n, dtype=np.uint8, seed=0, high=256):
    return np.random.default_rng(seed).integers(0, high, (n, *SHAPE)).astype(dtype)


def write(path, x, y, **kw):
    with h5py.File(path, "w") as f:
        f.create_dataset("train_set_x", data=x, **kw)
        f.create_dataset("train_set_y", data=y)
    return path


# -- scaling: what pixels are divided by ------------------------------------------------


@pytest.mark.parametrize(
    "dtype, divisor",
    [
        (np.uint8, 255.0),
        (np.uint16, 65535.0),
        (np.int32, 255.0),
        (np.float32, 1.0),
        (np.float64, 1.0),
    ],
)
def test_arrays_are_divided_by_their_full_scale(dtype, divisor):
    assert divisor_for(np.dtype(dtype)) == divisor
    data = np.full((2, 5), 3, dtype)
    assert Dataset.from_arrays(data, [0, 1]).divisor == divisor


def test_arrays_are_examples_of_finite_numbers_with_a_label_each():
    d = Dataset.from_arrays(images(3), np.array([[0], [1], [1]]))
    assert d.origin == "arrays" and d.Y.tolist() == [[0.0, 1.0, 1.0]]
    with pytest.raises(
        GpucatError, match=re.escape("arrays: inputs must be examples, one a row; got one number.")
    ):
        Dataset.from_arrays(5)
    nan = np.ones((2, 4))
    nan[1, 2] = np.nan
    for bad, dtype in ((nan, "float64"), (np.full((2, 4), "a"), "<U1")):
        with pytest.raises(
            GpucatError, match=re.escape(f"mine: inputs must be finite numbers, got dtype {dtype}.")
        ):
            Dataset.from_arrays(bad, origin="mine")
    with pytest.raises(GpucatError, match=re.escape("mine: 3 images but 2 labels")):
        Dataset.from_arrays(images(3), [0, 1], origin="mine")


def test_integer_images_of_another_width_become_uint8_over_255():
    binary = (images(2) % 2).astype(np.int16)  # 0 and 1 as integers: dark pixels, over 255
    rows, divisor = as_rows(binary)
    assert divisor == 255.0 and rows.dtype == np.uint8 and rows.max() == 1
    x = images(3, np.int16)
    rows, divisor = as_rows(x)
    assert rows.dtype == np.uint8 and rows.shape == (3, 12288) and divisor == 255.0
    np.testing.assert_array_equal(rows, x.reshape(3, -1))


def test_float_images_are_scaled_by_what_they_hold():
    unit = np.linspace(0, 1, 3 * 12288).reshape(3, *SHAPE)  # largest value exactly 1.0
    rows, divisor = as_rows(unit)
    assert divisor == 1.0 and rows.dtype == np.float64
    np.testing.assert_array_equal(rows, unit.reshape(3, -1))
    whole = images(2).astype(np.float32)  # whole numbers 0..255: stored as uint8, over 255
    rows, divisor = as_rows(whole)
    assert divisor == 255.0 and rows.dtype == np.uint8 and rows.shape == (2, 12288)
    np.testing.assert_array_equal(rows, whole.reshape(2, -1))
    fraction = np.full((1, *SHAPE), 1.5)  # above 1, not whole: 0..255, kept as floats
    fraction[0, 0, 0, 0] = 2.0
    rows, divisor = as_rows(fraction)
    assert divisor == 255.0 and rows.dtype == np.float64 and rows.shape == (1, 12288)


def test_unlabelled_data_has_nan_labels():
    d = Dataset.from_arrays(images(3))
    labels = d.labels()
    assert labels.shape == (3,) and labels.dtype == np.float64 and np.isnan(labels).all()


def test_an_example_is_named_by_its_name_else_its_file_and_index():
    d = Dataset(images(2).reshape(2, -1), None, "/some/dir/mine.h5", names=["a.png", "b.png"])
    assert d.name(1) == "b.png"
    d.names = None
    assert d.name(1) == "mine.h5[1]"


# -- checks of images and labels --------------------------------------------------------


def test_images_of_another_size_are_refused_with_their_shape(tmp_path):
    path = write(tmp_path / "small.h5", images(2)[:, :32, :32], np.array([0, 1]))
    with pytest.raises(
        GpucatError,
        match=re.escape(f"{path}: images must have shape (m, 64, 64, 3), found (2, 32, 32, 3)."),
    ):
        load_h5(path)


def test_a_file_of_no_images_is_refused_and_one_image_is_enough(tmp_path):
    empty = write(tmp_path / "empty.h5", np.zeros((0, *SHAPE), np.uint8), np.zeros(0))
    with pytest.raises(GpucatError, match=re.escape(f"{empty}: the file holds no images.")):
        load_h5(empty)
    one = load_h5(write(tmp_path / "one.h5", images(1), np.array([1])))
    assert one.n_examples == 1 and one.Y.tolist() == [[1.0]]


def test_pixels_must_be_numbers_in_0_to_255(tmp_path):
    ok = images(2).astype(np.float64)
    ok[0, 0, 0, 0] = 255.0  # the largest pixel value is allowed
    assert load_h5(write(tmp_path / "ok.h5", ok, np.array([0, 1]))).divisor == 255.0
    for name, value in (("high.h5", 255.5), ("negative.h5", -1.0)):
        bad = ok.copy()
        bad[1, 5, 5, 1] = value
        path = write(tmp_path / name, bad, np.array([0, 1]))
        with pytest.raises(GpucatError, match=re.escape(f"{path}: pixels must lie in 0..255.")):
            load_h5(path)
    text = np.full((1, *SHAPE), "a", dtype="S1")
    with pytest.raises(
        GpucatError, match=re.escape("x.h5: pixels must be numbers, found dtype |S1.")
    ):
        check_images(text, "x.h5")


def test_labels_are_checked_against_the_images_and_named(tmp_path):
    path = write(tmp_path / "short.h5", images(3), np.array([0, 1, 1]))
    with h5py.File(path, "a") as f:
        del f["train_set_y"]
        f.create_dataset("train_set_y", data=np.array([0, 1]))
    with pytest.raises(
        GpucatError,
        match=re.escape(f"{path}: 3 images but 2 labels; each image needs exactly one label."),
    ):
        load_h5(path)
    with pytest.raises(
        GpucatError,
        match=re.escape("l.h5: 2 images but 3 labels; each image needs exactly one label."),
    ):
        check_labels(np.array([0, 1, 1]), 2, "l.h5")
    with pytest.raises(
        GpucatError, match=re.escape("l.h5: labels must be numbers 0 or 1, found dtype <U3.")
    ):
        check_labels(np.array(["cat", "dog"]), 2, "l.h5")
    labels = check_labels(np.array([0, 1], np.uint8), 2, "l.h5")
    assert labels.dtype == np.float64 and labels.tolist() == [[0.0, 1.0]]


def test_a_label_other_than_0_or_1_is_named_with_its_file(tmp_path):
    path = write(tmp_path / "three.h5", images(3), np.array([0, 2, 1]))
    with pytest.raises(
        GpucatError,
        match=re.escape(f"{path}: labels must be 0 (non-cat) or 1 (cat); found 2 at example 1."),
    ):
        load_h5(path)


def test_only_uint8_images_are_shuffled_by_their_files_chunks(tmp_path):
    x = images(8)
    gz = dict(chunks=(4, *SHAPE), compression="gzip")
    assert load_h5(write(tmp_path / "u8.h5", x, np.zeros(8), **gz)).chunk_rows == 4
    floats = load_h5(write(tmp_path / "f32.h5", x.astype(np.float32), np.zeros(8), **gz))
    assert floats.chunk_rows == 1  # read whole, never streamed: shuffled whole


def test_labels_stored_as_a_column_are_read(tmp_path):
    d = load_h5(write(tmp_path / "column.h5", images(3), np.array([[0], [1], [1]])))
    assert d.Y.tolist() == [[0.0, 1.0, 1.0]] and d.origin == str(tmp_path / "column.h5")


def test_a_file_needs_exactly_one_image_and_one_label_dataset(tmp_path):
    path = write(tmp_path / "two.h5", images(2), np.array([0, 1]))
    with h5py.File(path, "a") as f:
        f.create_dataset("test_set_x", data=images(2))
    with pytest.raises(
        GpucatError, match=re.escape(f"{path}: expected one '*_set_x' and one '*_set_y' dataset")
    ):
        load_h5(path)


def test_a_missing_file_names_the_fetch_command(tmp_path):
    path = tmp_path / "nowhere.h5"
    with pytest.raises(
        GpucatError, match=re.escape(f"{path}: no such file; run `gpucat fetch-data`")
    ):
        load_h5(path)


def test_names_a_prepared_file_keeps(tmp_path):
    path = write(tmp_path / "named.h5", images(2), np.array([0, 1]))
    with h5py.File(path, "a") as f:
        f.create_dataset("names", data=np.array([7, 8]))  # numbers, not strings: as text
    assert load_h5(path).names == ["7", "8"]


# -- files that are not HDF5 ------------------------------------------------------------


@pytest.mark.parametrize(
    "head, reason",
    [
        (b"\n  <!DOCTYPE html>\n<head><title>GitHub</title></head>", "is an HTML web page"),
        (b"junk before the page <html lang='en'>", "is an HTML web page"),
        (b"", "is empty"),
        (b"PK\x03\x04 a zip file", "is not an HDF5 file (wrong signature)"),
        (b"x" * 600 + b"<html>", "is not an HDF5 file (wrong signature)"),  # 512 bytes looked at
    ],
)
def test_why_a_file_is_not_hdf5(tmp_path, head, reason):
    path = tmp_path / "f.h5"
    path.write_bytes(head)
    assert not_hdf5_reason(path).startswith(reason)
    with pytest.raises(GpucatError, match=re.escape(f"{path} {reason}")):
        load_h5(path)


def test_an_html_reason_says_to_take_the_raw_file(tmp_path):
    path = tmp_path / "page.h5"
    path.write_bytes(b"<html><body>GitHub</body></html>")
    assert not_hdf5_reason(path) == (
        "is an HTML web page, not an HDF5 file (a browser's 'save page' of the GitHub page "
        "instead of the raw file)"
    )


# -- how images lie in a file (for reading them in pieces) ------------------------------


def image_bytes_at(path, offsets):
    with open(path, "rb") as f:
        out = []
        for o in offsets.tolist():
            f.seek(o)
            out.append(np.frombuffer(f.read(12288), np.uint8))
    return np.stack(out)


@pytest.mark.skipif(not hasattr(os, "preadv"), reason="plain reads need os.preadv (POSIX)")
@pytest.mark.parametrize("chunks", [None, (4, 64, 64, 3)])
def test_plain_storage_gives_each_images_byte_offset(tmp_path, chunks):
    x = images(10)
    path = write(tmp_path / "plain.h5", x, np.zeros(10), chunks=chunks)
    with h5py.File(path, "r") as f:
        kind, offsets = storage(f["train_set_x"])
    assert kind == "plain" and offsets.dtype == np.int64 and offsets.shape == (10,)
    np.testing.assert_array_equal(image_bytes_at(path, offsets), x.reshape(10, -1))


def test_space_never_written_is_read_through_h5py(tmp_path):
    with h5py.File(tmp_path / "unwritten.h5", "w") as f:
        f.create_dataset("contiguous", shape=(4, *SHAPE), dtype=np.uint8)
        part = f.create_dataset("chunked", shape=(12, *SHAPE), dtype=np.uint8, chunks=(4, *SHAPE))
        part[0:4] = images(4)  # the first chunk written, the others not
        part[8:12] = images(4, seed=1)
        assert storage(f["contiguous"]) == ("h5py", None)
        assert storage(f["chunked"]) == ("h5py", None)


def test_compressed_chunks_are_named_by_their_filter(tmp_path):
    with h5py.File(tmp_path / "packed.h5", "w") as f:
        f.create_dataset("gz", data=images(8), chunks=(4, *SHAPE), compression="gzip")
        f.create_dataset("lzf", data=images(8), chunks=(2, *SHAPE), compression="lzf")
        f.create_dataset("cut", data=images(8), chunks=(4, 32, 64, 3))
        assert storage(f["gz"]) == ("gzip", 4)
        assert storage(f["lzf"]) == ("chunks", 2)
        assert storage(f["cut"]) == ("h5py", None)


def test_the_sampler_takes_plain_images_in_blocks_only_in_large_files():
    assert read_unit("gzip", 4, 10) == 4 and read_unit("chunks", 2, 10) == 2
    assert read_unit("plain", None, BLOCKED_FROM) == 1
    assert read_unit("plain", None, BLOCKED_FROM + 1) == BLOCK
    assert read_unit("h5py", None, BLOCKED_FROM + 1) == 1


# -- the course files and where they are looked for -------------------------------------


def test_the_data_folder_is_the_flag_else_the_environment_else_the_embedded_copy(
    tmp_path, monkeypatch
):
    monkeypatch.delenv("GPUCAT_DATA_DIR", raising=False)
    assert course.resolve_data_dir() == course.default_data_dir()
    assert (course.default_data_dir() / course.TRAIN_FILE).is_file()
    monkeypatch.setenv("GPUCAT_DATA_DIR", str(tmp_path / "env"))
    assert course.resolve_data_dir() == tmp_path / "env"
    assert course.resolve_data_dir(tmp_path / "flag") == tmp_path / "flag"


def test_sha256_of_a_file_larger_than_one_read(tmp_path):
    import hashlib

    data = np.random.default_rng(3).integers(0, 256, 3 << 20, np.uint8).tobytes()
    (tmp_path / "big").write_bytes(data)
    assert course.sha256_of(tmp_path / "big") == hashlib.sha256(data).hexdigest()


def test_a_course_file_that_differs_says_how_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("GPUCAT_DATA_DIR", raising=False)
    write(tmp_path / course.TRAIN_FILE, images(2), np.array([0, 1]))
    digest = course.sha256_of(tmp_path / course.TRAIN_FILE)
    expected = course.SHA256[course.TRAIN_FILE]
    with pytest.raises(GpucatError) as e:
        course.load_course_data(tmp_path)
    assert str(e.value) == (
        f"{tmp_path / course.TRAIN_FILE} is not the published course file (SHA-256 "
        f"{digest[:12]}..., expected {expected[:12]}...); delete it and run `gpucat fetch-data` "
        "to download verified copies, and pass the folder it names as --data-dir, or train on "
        "your own file with --train PATH."
    )
    (tmp_path / course.TRAIN_FILE).write_bytes(b"<!doctype html><p>saved page</p>")
    with pytest.raises(
        GpucatError, match=re.escape(f"{tmp_path / course.TRAIN_FILE} is an HTML web page")
    ):
        course.load_course_data(tmp_path)
    (tmp_path / course.TRAIN_FILE).unlink()
    with pytest.raises(
        GpucatError,
        match=re.escape(f"{tmp_path / course.TRAIN_FILE}: no such file; run `gpucat fetch-data`"),
    ):
        course.load_course_data(tmp_path)
