"""A file streamed from disk (streaming.H5Source) at its edges: what it refuses and how it
says so, a file cut short, a source sent to another process."""

from __future__ import annotations

import os
import pickle
import re

import h5py
import numpy as np
import pytest

from gpucat.data.dataset import N_FEATURES
from gpucat.data.streaming import H5Source
from gpucat.errors import GpucatError


def write(path, n, labels=None, dtype=np.uint8, **kw):
    x = np.random.default_rng(n).integers(1, 256, (n, 64, 64, 3)).astype(dtype)
    with h5py.File(path, "w") as f:  # the labels first: the images end the file
        f["train_set_y"] = np.arange(n) % 2 if labels is None else np.asarray(labels)
        f.create_dataset("train_set_x", data=x, **kw)
    return path, x.reshape(n, N_FEATURES)


def test_a_streamed_file_is_named_by_its_path_and_one_image_is_enough(tmp_path):
    path, rows = write(tmp_path / "one.h5", 1, [1])
    with H5Source(path) as source:
        assert source.origin == str(path) and source.n_examples == 1
        got, y = source.read(np.array([0]))
        np.testing.assert_array_equal(got, rows)
        assert got.dtype == np.uint8 and y.tolist() == [1.0]


@pytest.mark.parametrize(
    "n, dtype, message",
    [
        (
            3,
            np.float32,
            "streaming needs uint8 images (m, 64, 64, 3), found float32 (3, 64, 64, 3).",
        ),
        (0, np.uint8, "the file holds no images."),
    ],
)
def test_what_streaming_refuses_is_one_message_naming_the_file(tmp_path, n, dtype, message):
    path, _ = write(tmp_path / "f.h5", n, dtype=dtype)
    with pytest.raises(GpucatError, match=re.escape(f"{path}: {message}")):
        H5Source(path)


def test_a_wrong_label_names_the_streamed_file(tmp_path):
    path, _ = write(tmp_path / "l.h5", 3, [0, 1, 5])
    with pytest.raises(
        GpucatError,
        match=re.escape(f"{path}: labels must be 0 (non-cat) or 1 (cat); found 5 at example 2."),
    ):
        H5Source(path)


def test_a_file_cut_inside_its_last_image_is_refused(tmp_path):
    path, _ = write(tmp_path / "cut.h5", 4)
    with h5py.File(path) as f:
        end = f["train_set_x"].id.get_offset() + 4 * N_FEATURES
    assert os.path.getsize(path) == end  # the images are the file's last bytes
    os.truncate(path, end - 1)
    with pytest.raises(GpucatError, match=re.escape(f"{path}: cannot be read as HDF5")) as e:
        H5Source(path)  # HDF5 checks the file's length against the end it recorded
    assert "the file is truncated or damaged" in str(e.value)


def test_a_read_past_the_end_is_one_message(tmp_path):
    path, _ = write(tmp_path / "p.h5", 2)
    with H5Source(path) as source:
        fd = os.open(path, os.O_RDONLY)
        try:
            buf = np.empty(100, np.uint8)
            with pytest.raises(
                GpucatError, match=re.escape(f"{path}: the file ends early; was it truncated?")
            ):
                source._pread(fd, buf, os.path.getsize(path) - 10, 100)
            source._pread(fd, buf, 0, 100)  # a whole read is no error
        finally:
            os.close(fd)


@pytest.mark.parametrize("kw", [{}, {"chunks": (4, 64, 64, 3), "compression": "gzip"}])
def test_a_source_sent_to_another_process_reads_the_same(tmp_path, kw):
    path, rows = write(tmp_path / "s.h5", 10, **kw)
    with H5Source(path) as source:
        source.read(np.arange(10))  # threads, descriptors and cache in use
        copy = pickle.loads(pickle.dumps(source))
    with copy:
        got, y = copy.read(np.array([9, 0, 5]))
        np.testing.assert_array_equal(got, rows[[9, 0, 5]])
        assert y.tolist() == [1.0, 0.0, 1.0] and copy.origin == str(path)
