"""The training set by position, the validation split, the batches and the shards that hold
them: each index space (batches.py) at its edges, and what a shard hands the trainer."""

from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest

from gpucat.backends import get_device
from gpucat.data import batches, shards
from gpucat.data.batches import (
    Batches,
    TrainingSet,
    mirrored_rows,
    split_training,
    stratified_split,
)
from gpucat.data.dataset import Dataset
from gpucat.errors import GpucatError


def pictures(n, labels=None, chunk_rows=1):
    rows = np.random.default_rng(n).integers(1, 256, (n, 12288), dtype=np.uint8)
    y = np.arange(n) % 2 if labels is None else np.asarray(labels)
    return Dataset(rows, y.reshape(1, -1).astype(np.float64), "pics.h5", chunk_rows=chunk_rows)


# -- the validation split ---------------------------------------------------------------


def test_the_split_takes_a_rounded_share_of_each_class_in_order():
    labels = np.array([0] * 7 + [1] * 5)
    train, val = stratified_split(labels, 0.4, seed=2)
    assert (labels[val] == 0).sum() == round(0.4 * 7) and (labels[val] == 1).sum() == round(0.4 * 5)
    assert np.all(np.diff(val) > 0) and np.all(np.diff(train) > 0)
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(12))
    assert train.dtype.kind == "i" and val.dtype.kind == "i"


def test_a_split_that_takes_nothing_leaves_integer_indices():
    train, val = stratified_split(np.array([0, 1, 1]), 0.01, seed=0)
    assert val.size == 0 and train.dtype.kind == "i" and train.tolist() == [0, 1, 2]


@pytest.mark.parametrize("fraction", [0.01, 1.0])
def test_a_split_that_empties_a_side_is_refused(fraction):
    with pytest.raises(
        GpucatError,
        match=re.escape(f"--validation {fraction} leaves an empty training or validation set."),
    ):
        split_training(pictures(6), fraction, False, seed=0)


def test_one_training_example_is_enough():
    train, val = split_training(pictures(5, [0, 0, 1, 1, 1]), 0.75, False, seed=0)
    assert train.n_examples == 1 and val.size == 4


@pytest.mark.parametrize("validation", [0, 0.5])
def test_flip_doubles_the_training_set_with_or_without_validation(validation):
    data = pictures(8)
    train, val = split_training(data, validation, True, seed=0)
    assert train.flip and train.n_examples == 2 * (8 - val.size)
    plain, _ = split_training(data, validation, False, seed=0)
    assert not plain.flip and plain.n_examples == 8 - val.size
    assert plain.labels().shape == (8 - val.size,)


# -- the training set by position -------------------------------------------------------


def test_flip_refuses_data_that_is_not_pictures():
    data = Dataset(np.ones((3, 5)), np.zeros((1, 3)), "features", divisor=1.0)
    with pytest.raises(
        GpucatError,
        match=re.escape("--flip mirrors 64x64 RGB images; this data has 5 features per example."),
    ):
        TrainingSet(data, np.arange(3), flip=True)


def test_positions_past_the_originals_are_their_mirrored_copies():
    data = pictures(4)
    train = TrainingSet(data, np.array([1, 3]), flip=True)
    rows, y = train.read(np.array([1, 2, 3]))
    np.testing.assert_array_equal(rows[0], data.rows[3])  # the last original: as stored
    np.testing.assert_array_equal(rows[1], mirrored_rows(data.rows[[1]])[0])  # the first copy
    np.testing.assert_array_equal(rows[2], mirrored_rows(data.rows[[3]])[0])
    assert y.tolist() == [1.0, 1.0, 1.0] and train.labels().tolist() == [1.0, 1.0, 1.0, 1.0]
    assert not np.array_equal(mirrored_rows(data.rows[[1]])[0], data.rows[1])


# -- batches ----------------------------------------------------------------------------


def shard_of(data, start=0, stop=None, full=False, examples=True, dtype="float64"):
    train = TrainingSet(data, np.arange(data.n_examples))
    stop = train.n_examples if stop is None else stop
    return shards.DeviceShard(get_device("cpu"), train, start, stop, dtype, full, examples)


def test_a_full_batch_is_the_process_block_by_position():
    data = pictures(10)
    batch = Batches(shard_of(data, 4, 10, full=True), 10, None, seed=1)(0)
    assert batch.positions.tolist() == [4, 5, 6, 7, 8, 9] and batch.columns == slice(4, 10)
    assert batch.n_examples == 10 and batch.X.shape == (12288, 6)
    np.testing.assert_array_equal(batch.X, data.X[:, 4:10])


def test_a_process_holding_none_of_a_batch_gets_no_examples():
    data = pictures(10)
    b = Batches(shard_of(data, 0, 5), 10, 4, seed=1)
    for i in range(6):
        batch = b(i)
        mine = b.positions(i) < 5
        assert batch.positions.tolist() == b.positions(i)[mine].tolist()
        if not mine.any():
            assert batch.X is None and batch.Y is None and batch.columns.size == 0
            break
    else:
        pytest.fail("no batch without this process's examples in six: pick another seed")


def test_chunks_of_two_are_shuffled_chunk_aware():
    data = pictures(40, chunk_rows=2)
    b = Batches(shard_of(data), 40, 8, seed=5)
    order = b.order(0)
    np.testing.assert_array_equal(np.sort(order), np.arange(40))
    chunk = order // 2  # one window holds every chunk here: examples mixed across chunks
    assert (np.diff(chunk) != 0).sum() > 20


def test_a_window_takes_whole_chunks_rounded_up(monkeypatch):
    """WINDOW 8 over chunks of 3: windows of 3 chunks (9 examples), each shuffled within, so
    an epoch's last 3 examples are seldom one chunk (a window of 8 / 3 chunks would make
    the last chunk a window of its own)."""
    monkeypatch.setattr(batches, "WINDOW", 8)
    b = Batches(shard_of(pictures(27, chunk_rows=3)), 27, 9, seed=4)
    ends = []
    for epoch in range(6):
        chunk = b.order(epoch) // 3
        for w in range(3):  # each run of 9 examples is 3 whole chunks
            assert np.bincount(chunk[9 * w : 9 * w + 9]).tolist().count(3) == 3
        ends.append(len(set(chunk[-3:].tolist())))
    assert max(ends) > 1


# -- shards -----------------------------------------------------------------------------


def test_a_resident_block_gives_its_columns_batches_and_pieces():
    data = pictures(7)
    X = data.X
    full = shard_of(data, full=True)
    np.testing.assert_array_equal(full.batch(np.array([5, 0]))[0], X[:, [5, 0]])
    (only,) = list(full.chunks(3))  # a float copy is whole already
    np.testing.assert_array_equal(only[0], X)
    rows = shard_of(data)  # uint8 rows, converted as asked
    np.testing.assert_array_equal(rows.columns()[0], X)
    pieces = list(rows.chunks(3))
    assert [p[0].shape[1] for p in pieces] == [3, 3, 1]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in pieces], axis=1), X)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in pieces], axis=1), data.Y)
    assert [p[0].shape[1] for p in rows.chunks()] == [7]  # CHUNK examples a piece
    labels_only = shard_of(data, examples=False)
    X0, Y0 = labels_only.columns()
    assert X0 is None and Y0.tolist() == data.Y.tolist()


def test_a_gpu_streams_a_block_above_its_share_of_free_memory():
    data = pictures(4)
    data.streams = True  # as a source on disk
    train = TrainingSet(data, np.arange(4))
    need = 4 * 12288
    gpu = SimpleNamespace(host_memory=False, free_memory=lambda: need / shards.DEVICE_SHARE)
    assert not shards.is_streamed(gpu, train, 4, full_batch=False)  # exactly its share
    assert shards.is_streamed(gpu, train, 5, full_batch=False)
    assert not shards.is_streamed(gpu, train, 5, full_batch=True)
    cpu = SimpleNamespace(host_memory=True, free_memory=lambda: 1e18)
    assert shards.is_streamed(cpu, train, 1, full_batch=False)
    data.streams = False
    assert not shards.is_streamed(cpu, train, 1, full_batch=False)


def test_a_later_block_is_sized_by_its_own_examples(monkeypatch):
    data = pictures(8)
    data.streams = True
    train = TrainingSet(data, np.arange(8))
    seen = []
    monkeypatch.setattr(shards, "is_streamed", lambda d, t, n, full: seen.append(n) or False)
    shard = shards.make_shard(get_device("cpu"), train, 6, 8, "float32", False)
    assert seen == [2] and isinstance(shard, shards.DeviceShard) and shard.dtype == "float32"
    assert shard.U.shape == (2, 12288) and shard.X is None  # mini-batches: rows as stored
    full = shards.make_shard(get_device("cpu"), train, 6, 8, "float32", True)
    assert full.X.shape == (12288, 2) and full.X.dtype == np.float32


def streamed(data, start=0, stop=None, dtype="float32"):
    train = TrainingSet(data, np.arange(data.n_examples))
    stop = train.n_examples if stop is None else stop
    return shards.StreamedShard(get_device("cpu"), train, start, stop, dtype)


def test_a_streamed_block_gives_batches_and_pieces_in_its_dtype():
    data = pictures(7)
    shard = streamed(data, 2, 7)
    try:
        X, Y = shard.batch(np.array([4, 0]))
        assert X.dtype == np.float32 and Y.dtype == np.float32
        np.testing.assert_array_equal(X, data.X[:, [6, 2]].astype(np.float32))
        pieces = list(shard.chunks(2))
        assert [p[0].shape[1] for p in pieces] == [2, 2, 1]
        np.testing.assert_array_equal(
            np.concatenate([p[0] for p in pieces], axis=1), data.X[:, 2:7].astype(np.float32)
        )
    finally:
        shard.close()


def test_nothing_to_read_ahead_starts_no_read():
    shard = streamed(pictures(3))
    try:
        shard.prefetch(np.array([], np.int64), None)
        assert shard._ahead is None
    finally:
        shard.close()


def test_closing_a_streamed_block_waits_for_its_reader_and_gives_blas_back(monkeypatch):
    import threading
    import time

    restored = []
    limits = SimpleNamespace(restore_original_limits=lambda: restored.append(True))
    monkeypatch.setattr(shards, "_leave_a_core", lambda: limits)
    shard = streamed(pictures(3))
    slow = shard._staged
    monkeypatch.setattr(shard, "_staged", lambda *a: time.sleep(0.3) or slow(*a))
    shard.prefetch(np.array([0, 1]))
    shard.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("gpucat-prefetch")]
    assert restored == [True]  # BLAS gets back the threads streaming took


@pytest.mark.parametrize(
    "blas, cores, limit",
    [(8, 4, 3), (8, None, 1), (2, 8, None), (1, 1, None), (None, 2, None)],
)
def test_streaming_leaves_blas_a_core_fewer(monkeypatch, blas, cores, limit):
    """One BLAS thread fewer than the machine's cores, at least one, never more than BLAS
    had (None: no BLAS found, or nothing to take away)."""
    import threadpoolctl

    pools = [{"user_api": "openmp", "num_threads": 16}]
    pools += [] if blas is None else [{"user_api": "blas", "num_threads": blas}]
    calls = []
    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: pools)
    monkeypatch.setattr(
        threadpoolctl,
        "threadpool_limits",
        lambda n, user_api: calls.append((n, user_api)) or "limits",
    )
    monkeypatch.setattr(shards.os, "cpu_count", lambda: cores)
    got = shards._leave_a_core()
    assert calls == ([] if limit is None else [(limit, "blas")])
    assert got == (None if limit is None else "limits")
