"""The data-source seam: how training examples arrive.

A *source* (data.Source: ``n`` examples of ``n_features`` values, a ``divisor``,
``labels()``, ``read(idx) -> (rows, labels)``, and defaults for what only a streamed
source needs) is a ``Dataset`` in memory, or a streaming.H5Source that stays on disk and
reads the rows asked for. Either way the rows stay as stored (uint8 pixels) until they
reach the device.

The trainer numbers the examples it trains on by *position*: the source rows left after
the validation split, in order, then (``--flip``) their mirrored copies. A data-parallel
process owns one contiguous block of positions (distributed.shard_bounds); a single
process owns them all. ``DeviceShard`` puts a block on the device and hands out
(mini-)batches as float columns; streaming.StreamedShard reads each batch from a source on
disk instead, the next one in a background thread. ``Batches`` says which positions each
iteration trains on. The conversion to the training dtype, ``rows / divisor`` in that
dtype, is for 8-bit pixels bit for bit the reference preprocessing (float64 x / 255 rounded
to the dtype: checked for all 256 values); it happens on the device, or on NumPy in the
thread that reads a streamed batch.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucat.backends import Device
from gpucat.data.dataset import IMAGE_SHAPE, N_FEATURES
from gpucat.errors import GpucatError

SHUFFLE, DROPOUT, SPLIT = 1, 2, 3  # random streams (host_rng): shuffles, masks, validation
WINDOW = 2048  # examples a shuffle window holds when the data is read in compressed chunks
CHUNK = 1024  # examples per pass when a cost or a prediction runs over a whole set (50 MB float32)
DEVICE_SHARE = 0.25  # a GPU keeps uint8 examples resident when they take at most this share


def host_rng(seed: int, stream: int, counter: int) -> np.random.Generator:
    """The host generator for one (seed, stream, counter): identical on every device.

    Random streams are counter-based: the numbers for (seed, stream, counter) never depend on
    what was drawn before, so a resumed run draws exactly what an uninterrupted one would."""
    return np.random.default_rng([seed, stream, counter])


def stratified_split(
    labels: np.ndarray, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): each class gives round(fraction * count) examples to
    validation, chosen by a seeded shuffle; both lists keep the original order."""
    y = np.asarray(labels).reshape(-1) > 0.5
    rng = host_rng(seed, SPLIT, 0)
    val = []
    for cls in (False, True):
        idx = np.flatnonzero(y == cls)
        val.extend(rng.permutation(idx)[: int(round(fraction * idx.size))].tolist())
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(y.size), val_idx)
    return train_idx, val_idx


def mirrored_rows(rows: np.ndarray) -> np.ndarray:
    """The same for images stored as rows (k, 12288)."""
    k = rows.shape[0]
    return rows.reshape(k, *IMAGE_SHAPE)[:, :, ::-1, :].reshape(k, N_FEATURES)


@dataclass
class TrainingSet:
    """The examples a run trains on, by position: ``source`` rows ``rows`` in order, then,
    with ``flip``, the same rows mirrored. A source itself (a subset of one, for scoring)."""

    source: Any
    rows: np.ndarray
    flip: bool = False

    def __post_init__(self):
        if self.flip and self.source.n_features != N_FEATURES:
            raise GpucatError(
                f"--flip mirrors 64x64 RGB images; this data has {self.source.n_features} "
                "features per example."
            )
        self.n_features, self.divisor = self.source.n_features, self.source.divisor
        self.stored = self.source.stored
        self.chunk_rows = self.source.chunk_rows

    @property
    def size(self) -> int:
        return self.rows.size * (2 if self.flip else 1)

    n = size

    def labels(self) -> np.ndarray:
        y = self.source.labels()[self.rows]
        return np.concatenate([y, y]) if self.flip else y

    def read(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, labels) of the examples at these positions (mirrored copies made here)."""
        n = self.rows.size
        rows, y = self.source.read(self.rows[positions % n])
        if self.flip:
            flipped = positions >= n
            if flipped.any():
                rows = np.array(rows)  # a copy of our own before changing it
                rows[flipped] = mirrored_rows(rows[flipped])
        return rows, y

    def will_need(self, positions: np.ndarray) -> None:
        """Tell the source which examples come next (one read in chunks decodes them ahead)."""
        self.source.will_need(self.rows[positions % self.rows.size])


@dataclass
class Batch:
    """Iteration i's examples held by this process: X (n_x, k) and Y (1, k) on the device
    (None when it holds none), their global training positions, their columns in the whole
    batch (for the dropout masks), the batch's size over all processes, and the epoch."""

    X: Any
    Y: Any
    positions: np.ndarray
    columns: Any
    size: int
    epoch: int


class Batches:
    """Which examples iteration i trains on: all M training positions (full batch), or batch
    k of epoch e in a seeded shuffle of them drawn on the host — the same order on every
    device and every process, whichever part of it a process holds (its shard's block).

    The shuffle is a pure function of (seed, epoch, layout). Data its file compresses in
    chunks of several examples (``chunk_rows`` > 1) is shuffled chunk-aware, as tf.data and
    WebDataset do: the chunks in a random order, taken a window of ``WINDOW`` examples at a
    time, the examples shuffled within each window; so each chunk is decompressed once an
    epoch. Any other data is shuffled whole. The same data held in memory (load_h5 keeps the
    file's layout) gets the same batches, on any number of processes."""

    def __init__(self, shard, M: int, batch_size: int | None, seed: int):
        self.shard, self.M, self.seed = shard, M, seed
        self.size = min(batch_size or M, M)
        self.full = self.size == M
        self.per_epoch = -(-M // self.size)
        self._orders: dict[int, np.ndarray] = {}
        self._block = np.arange(shard.start, shard.stop)  # full batch: this process's all
        train = shard.train
        self.chunk = train.chunk_rows
        if self.chunk > 1 and not self.full:  # each position's chunk, numbered 0, 1, ...
            rows = train.rows[np.arange(M) % train.rows.size] // self.chunk
            self._chunk_of = np.unique(rows, return_inverse=True)[1].reshape(-1)
            self.window = -(-WINDOW // self.chunk)  # chunks a window takes

    def order(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s order of the M training positions."""
        if epoch not in self._orders:
            rng = host_rng(self.seed, SHUFFLE, epoch)
            if self.chunk == 1:
                order = rng.permutation(self.M)
            else:
                n = int(self._chunk_of.max()) + 1
                rank = np.empty(n, np.int64)
                rank[rng.permutation(n)] = np.arange(n)
                window = rank[self._chunk_of] // self.window
                order = np.lexsort((rng.random(self.M), window))  # by window, then at random
            self._orders = {k: v for k, v in self._orders.items() if k == epoch - 1}
            self._orders[epoch] = order
        return self._orders[epoch]

    def epoch(self, i: int) -> int:
        return i // self.per_epoch

    def size_of(self, i: int) -> int:
        """The global size of iteration i's batch (an epoch's last one may be short)."""
        return min(self.size, self.M - (i % self.per_epoch) * self.size)

    def members(self, i: int) -> np.ndarray:
        """The global positions of iteration i's batch, in batch order."""
        epoch, k = divmod(i, self.per_epoch)
        return self.order(epoch)[k * self.size : (k + 1) * self.size]

    def __call__(self, i: int) -> Batch:
        s = self.shard
        if self.full:
            X, Y = s.columns()
            return Batch(X, Y, self._block, slice(s.start, s.stop), self.M, i)
        members = self.members(i)
        mine = np.flatnonzero((members >= s.start) & (members < s.stop))
        X, Y = s.batch(members[mine] - s.start) if mine.size else (None, None)
        if s.streams:  # read the next batch from disk while this one trains
            local = lambda p: p[(p >= s.start) & (p < s.stop)] - s.start  # noqa: E731
            after = None
            if self.chunk > 1:  # and the chunks of the two windows after it, ahead
                epoch, k = divmod(i + 1, self.per_epoch)
                after = self.order(epoch)[k * self.size : k * self.size + 2 * WINDOW]
                if after.size < 2 * WINDOW:  # the rest from the next epoch's start
                    rest = self.order(epoch + 1)[: 2 * WINDOW - after.size]
                    after = local(np.concatenate([after, rest]))
                else:
                    after = local(after)
            s.prefetch(local(self.members(i + 1)), after)
        return Batch(X, Y, members[mine], mine, members.size, self.epoch(i))


def split_training(source, validation: float, flip: bool, seed: int):
    """(training set, validation rows of the source): the validation examples are held out
    first (stratified, seeded), then the mirrored copies are added to the training set only."""
    all_rows = np.arange(source.n)
    if not validation:
        return TrainingSet(source, all_rows, flip), all_rows[:0]
    train_rows, val_rows = stratified_split(source.labels(), validation, seed)
    if val_rows.size == 0 or train_rows.size == 0:
        raise GpucatError(f"--validation {validation} leaves an empty training or validation set.")
    return TrainingSet(source, train_rows, flip), val_rows


def labels_row(device: Device, y: np.ndarray, dtype: str) -> Any:
    """Host labels (k,) -> a device (1, k) row of the training dtype."""
    return device.asarray(np.asarray(y, dtype=np.float64).reshape(1, -1), dtype)


class Shard:
    """One process's block [start, stop) of training positions, with its labels resident on
    the device; ``DeviceShard`` keeps the examples there too, streaming.StreamedShard reads
    them from disk as training asks for them."""

    streams = False  # read batch by batch from disk, the next one ahead

    def __init__(self, device: Device, train: TrainingSet, start: int, stop: int, dtype: str):
        self.device, self.dtype, self.train = device, dtype, train
        self.divisor = train.source.divisor
        self.start, self.stop = start, stop
        self.X = self.U = None
        self.Y = labels_row(device, train.labels()[start:stop], dtype)

    @property
    def m(self) -> int:
        return self.stop - self.start

    def chunks(self, size: int | None = None) -> Iterator[tuple[Any, Any]]:
        """(X, Y) for consecutive pieces of the block: a whole-set cost in bounded memory."""
        size = size or CHUNK
        for a in range(0, self.m, size):
            b = min(a + size, self.m)  # the array API leaves out-of-range slice ends unspecified
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
            return self.batch(np.arange(self.m))
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
