"""Shards: one process's block [start, stop) of training positions on its device.

``DeviceShard`` keeps the block's examples on the device (a float copy for full-batch
training, else uint8 rows converted batch by batch); ``StreamedShard`` reads each batch
from a source on disk (streaming.H5Source) instead, the next one in a background thread
while this one trains; ``make_shard`` picks one for a run (``is_streamed``). A shard's
examples are numbered by *local* index, a position minus ``start`` (batches.py names the
index spaces).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import numpy as np

from gpucat.backends import Device
from gpucat.data.batches import WINDOW, TrainingSet

CHUNK = 1024  # examples per pass when a cost or a prediction runs over a whole set (50 MB float32)
DEVICE_SHARE = 0.25  # a GPU keeps uint8 examples resident when they take at most this share


def labels_row(device: Device, y: np.ndarray, dtype: str) -> Any:
    """Host labels (k,) -> a device (1, k) row of the training dtype."""
    return device.asarray(np.asarray(y, dtype=np.float64).reshape(1, -1), dtype)


class Shard:
    """One process's block [start, stop) of training positions, with its labels resident on
    the device; ``DeviceShard`` keeps the examples there too, StreamedShard reads
    them from disk as training asks for them."""

    streams = False  # read batch by batch from disk, the next one ahead

    def __init__(self, device: Device, train: TrainingSet, start: int, stop: int, dtype: str):
        self.device, self.dtype, self.train = device, dtype, train
        self.divisor = train.divisor
        self.start, self.stop = start, stop
        self.X = self.U = None
        self.Y = labels_row(device, train.labels()[start:stop], dtype)

    @property
    def n_examples(self) -> int:
        return self.stop - self.start

    def owns(self, positions: np.ndarray) -> np.ndarray:
        """Which of these positions lie in this block (a boolean mask)."""
        return (positions >= self.start) & (positions < self.stop)

    def local(self, positions: np.ndarray) -> np.ndarray:
        """These positions (of this block) as local indices."""
        return positions - self.start

    def chunks(self, size: int | None = None) -> Iterator[tuple[Any, Any]]:
        """(X, Y) for consecutive pieces of the block: a whole-set cost in bounded memory."""
        size = size or CHUNK
        for a in range(0, self.n_examples, size):
            b = min(
                a + size, self.n_examples
            )  # the array API leaves out-of-range slice ends unspecified
            yield self._piece(a, b), self.Y[:, a:b]

    def _piece(self, a: int, b: int) -> Any:
        """Float columns of the block's examples a..b-1."""
        raise NotImplementedError

    def prefetch(self, local: np.ndarray, after: np.ndarray | None = None) -> None:
        """Start reading the examples ``local`` (the next batch) ahead; resident ones need not."""

    def close(self) -> None:
        """Let go of what reads the examples (a streamed shard's thread)."""


class DeviceShard(Shard):
    """One process's block [start, stop) of training positions, resident on the device.

    Full-batch training keeps one float copy (``columns()``). Mini-batch training keeps the
    rows as stored (uint8: 1 byte a pixel) and converts each batch as it is taken. Without
    ``examples``, the labels alone: batches then hold X = None."""

    def __init__(
        self,
        device: Device,
        train: TrainingSet,
        start: int,
        stop: int,
        dtype: str,
        full_batch: bool,
        examples: bool = True,
    ):
        super().__init__(device, train, start, stop, dtype)
        if examples:
            rows, _ = train.read(np.arange(start, stop))
            if full_batch:
                self.X = device.to_columns(rows, dtype, self.divisor)
            else:
                self.U = device.asarray(np.ascontiguousarray(rows))

    def columns(self) -> tuple[Any, Any]:
        """(X, Y) of the whole block, floats on the device (full-batch training; a block
        kept as stored is converted whole for the occasion)."""
        if self.X is None and self.U is not None:
            return self.batch(np.arange(self.n_examples))
        return self.X, self.Y

    def batch(self, local: np.ndarray) -> tuple[Any, Any]:
        """(X, Y) of the block's examples ``local`` (indices into the block), in that order."""
        xp, b = self.device.xp, self.device
        idx = b.asarray(local)
        Y = xp.take(self.Y, idx, axis=1)
        if self.X is not None:
            return xp.take(self.X, idx, axis=1), Y
        return (None if self.U is None else self._convert(xp.take(self.U, idx, axis=0))), Y

    def chunks(self, size: int | None = None) -> Iterator[tuple[Any, Any]]:
        return iter([(self.X, self.Y)]) if self.X is not None else super().chunks(size)

    def _piece(self, a: int, b: int) -> Any:
        return self._convert(self.U[a:b, :])

    def _convert(self, U) -> Any:
        return self.device.as_float(U, self.dtype, self.divisor)


def is_streamed(device: Device, train: TrainingSet, n_examples: int, full_batch: bool) -> bool:
    """Whether a block of ``n_examples`` training positions is read from disk batch by batch: when the
    source stays on disk and training is in mini-batches, always where device memory is host
    memory (the CPU), on a GPU when the uint8 block exceeds a quarter of its free memory."""
    if full_batch or not train.source.streams:
        return False
    need = n_examples * train.n_features
    return device.host_memory or need > DEVICE_SHARE * device.free_memory()


def make_shard(
    device: Device, train: TrainingSet, start: int, stop: int, dtype, full_batch, examples=True
):
    """This process's block of training positions on the device: resident (a float copy for
    full-batch training, else uint8; only the labels when ``examples`` is False: the Gram
    solver reads X itself), or streamed from the source batch by batch (``is_streamed``)."""
    if examples and is_streamed(device, train, stop - start, full_batch):
        return StreamedShard(device, train, start, stop, dtype)
    return DeviceShard(device, train, start, stop, dtype, full_batch, examples)


class StreamedShard(Shard):
    """A block of training positions read from its source as training asks for it: each
    mini-batch's rows (uint8) are read from disk, the next batch's in a background thread
    while this one trains (on NumPy also converted to floats there: NumPy lets go of the GIL
    in its copies and conversions), so memory holds a few batches whatever the data set's
    size. Only the labels stay resident."""

    streams = True

    def __init__(self, device: Device, train: TrainingSet, start: int, stop: int, dtype: str):
        from concurrent.futures import ThreadPoolExecutor

        super().__init__(device, train, start, stop, dtype)
        self._reader = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gpucat-prefetch")
        self._ahead: tuple[np.ndarray, Any] | None = None
        self._blas = _leave_a_core()
        if train.chunk_rows > 1:  # the chunks of two windows ahead and of the one in use
            train.source.keep_chunks(4 * -(-WINDOW // train.chunk_rows))

    def _rows(self, local: np.ndarray) -> np.ndarray:
        return self.train.read(self.start + np.asarray(local))[0]

    def _staged(self, local: np.ndarray, after: np.ndarray | None = None) -> Any:
        """The rows of ``local`` read and staged for the device (device.stage_rows: on NumPy
        already converted), in the reading thread; ``after``: the examples that follow, whose
        chunks the source may start on."""
        if after is not None and after.size:
            self.train.will_need(after + self.start)
        return self.device.stage_rows(self._rows(local), self.dtype, self.divisor)

    def prefetch(self, local: np.ndarray, after: np.ndarray | None = None) -> None:
        """Start reading these examples (the next batch) in the background, and tell the
        source which come after them (``after``), all in the reading thread."""
        if local.size or (after is not None and after.size):
            self._ahead = (np.array(local), self._reader.submit(self._staged, local, after))

    def batch(self, local: np.ndarray) -> tuple[Any, Any]:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and np.array_equal(ahead[0], local):
            staged = ahead[1].result()
        else:
            staged = self._staged(local)
        d = self.device
        X = d.staged_columns(staged, self.dtype, self.divisor)
        return X, d.xp.take(self.Y, d.asarray(np.asarray(local)), axis=1)

    def _piece(self, a: int, b: int) -> Any:
        return self.device.to_columns(self._rows(np.arange(a, b)), self.dtype, self.divisor)

    def close(self) -> None:
        self._reader.shutdown(wait=True)
        if self._blas is not None:
            self._blas.restore_original_limits()


def _leave_a_core():
    """While batches are read (and decompressed) in the background, BLAS gets one thread
    fewer than the machine has cores, at least one: a mini-batch step gains little from the
    last BLAS thread, and a BLAS thread fighting the readers for a core stalls its partners
    (docs/performance.md measures it). Returns the limits to restore, or None."""
    from threadpoolctl import threadpool_info, threadpool_limits

    now = max((d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"), default=1)
    fewer = max(1, min(now, (os.cpu_count() or 1) - 1))
    return threadpool_limits(fewer, user_api="blas") if fewer < now else None
