"""A file streamed from disk (streaming.H5Source) at its edges: what it refuses and how it
says so, a file cut short, a source sent to another process."""

from __future__ import annotations

import os
import pickle
import re

import h5py
import numpy as np
import pytest

from gpucat.data import streaming
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


def test_uint8_images_of_another_size_are_refused(tmp_path):
    path = tmp_path / "small.h5"
    with h5py.File(path, "w") as f:
        f["train_set_y"] = np.array([0, 1])
        f["train_set_x"] = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(
        GpucatError,
        match=re.escape(
            f"{path}: streaming needs uint8 images (m, 64, 64, 3), found uint8 (2, 32, 32, 3)."
        ),
    ):
        H5Source(path)


@pytest.mark.parametrize(
    "kw",
    [
        {"chunks": (4, 64, 64, 3), "compression": "lzf"},  # a filter other than gzip: h5py
        {"chunks": (4, 64, 64, 3), "compression": "gzip"},  # gzip: inflated here
        {"chunks": (2, 32, 64, 3)},  # chunks that cut images: h5py, a run at a time
    ],
)
def test_each_layout_reads_uint8_rows_in_the_order_asked(tmp_path, kw):
    path, rows = write(tmp_path / "c.h5", 10, **kw)
    with H5Source(path) as source:
        got, _ = source.read(np.array([9, 9, 0, 4, 5, 6]))
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, rows[[9, 9, 0, 4, 5, 6]])


def test_a_gzip_chunk_stored_unfiltered_is_read_as_it_is(tmp_path):
    """HDF5 marks a chunk its filter skipped (bit 0 of the filter mask): the bytes are the
    images themselves."""
    path, rows = write(tmp_path / "g.h5", 8, chunks=(4, 64, 64, 3), compression="gzip")
    with h5py.File(path, "r+") as f:
        f["train_set_x"].id.write_direct_chunk((4, 0, 0, 0), rows[4:8].tobytes(), filter_mask=1)
    with H5Source(path) as source:
        np.testing.assert_array_equal(source.read(np.arange(8))[0], rows)


def test_a_file_damaged_after_opening_names_itself(tmp_path):
    path, _ = write(tmp_path / "d.h5", 4, chunks=(2, 32, 64, 3))
    source = H5Source(path)
    path.write_bytes(b"not HDF5 any more")
    with pytest.raises(GpucatError, match=re.escape(f"{path}: cannot be read as HDF5")):
        source.read(np.array([0]))
    source.close()


def test_a_one_byte_read_at_the_end_is_a_whole_read(tmp_path):
    path, rows = write(tmp_path / "b.h5", 2)
    fd = os.open(path, os.O_RDONLY)
    try:
        with H5Source(path) as source:
            last = np.empty(1, np.uint8)
            source._pread(fd, last, os.path.getsize(path) - 1, 1)
        assert last[0] == rows[-1, -1]
    finally:
        os.close(fd)


def test_aligned_buffers_for_direct_reads():
    for n in (1, 4096, 5000):
        buf = streaming._aligned(n)
        assert buf.dtype == np.uint8 and buf.ctypes.data % streaming.ALIGN == 0
        assert buf.size == -(-n // streaming.ALIGN) * streaming.ALIGN


def test_a_file_system_refusing_o_direct_reads_through_the_cache(tmp_path, monkeypatch):
    path, _ = write(tmp_path / "r.h5", 2)

    def refuse(*a):
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(streaming.os, "open", refuse)
    assert streaming._open_direct(path) is False


def test_closing_a_source_refused_o_direct_closes_only_its_own_files(tmp_path, monkeypatch):
    path, _ = write(tmp_path / "n.h5", 2)
    source = H5Source(path)
    source.read(np.array([0]))
    source._direct = False  # as after the file system refused O_DIRECT
    closed, real = [], os.close
    monkeypatch.setattr(streaming.os, "close", lambda fd: closed.append(fd) or real(fd))
    own = source._fd
    source.close()
    assert closed == [own]  # False is no descriptor (it would be 0: standard input)


def test_a_dropped_source_lets_go_of_its_files_and_a_refused_one_says_nothing(
    tmp_path, monkeypatch
):
    import gc
    import sys

    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    path, _ = write(tmp_path / "k.h5", 2)
    source = H5Source(path)
    source.read(np.array([1]))
    fd = source._fd
    del source
    gc.collect()
    with pytest.raises(OSError):
        os.fstat(fd)
    bad, _ = write(tmp_path / "f.h5", 2, dtype=np.float32)
    with pytest.raises(GpucatError):
        H5Source(bad)
    gc.collect()
    assert unraisable == []


def test_closing_waits_for_decodes_in_flight(tmp_path, monkeypatch):
    import threading
    import time

    path, _ = write(tmp_path / "w.h5", 8, chunks=(4, 64, 64, 3), compression="gzip")
    source = H5Source(path)
    slow = source._decode
    monkeypatch.setattr(source, "_decode", lambda c: time.sleep(0.3) or slow(c))
    source.will_need(np.arange(8))  # both chunks started, not waited for
    source.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("gpucat-chunks")]
