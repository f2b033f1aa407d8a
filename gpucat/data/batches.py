"""The examples a run trains on, and which of them each iteration takes.

Training reads examples through a data source (dataset.Source: a ``Dataset`` in memory or
streaming.H5Source on disk), numbering them in four index spaces, each with its own word:

- a *row* is an example's index in its source;
- a *position* numbers the examples a run trains on (``TrainingSet``): the source rows
  left after the validation split, in order, then (``--flip``) their mirrored copies;
- a data-parallel process owns one contiguous block of positions [start, stop)
  (distributed.shard_bounds; a single process owns them all): an example's *local* index
  is its position minus start (shards.py holds the block on the device, or streams it);
- a *column* is an example's place in iteration i's batch, the same on every process.

``Batches`` says which positions iteration i trains on and turns them into local indices
and columns where they meet (``Batches.__call__``). The conversion to the training dtype,
``rows / divisor`` in that dtype, is for 8-bit pixels bit for bit the reference
preprocessing (float64 x / 255 rounded to the dtype: checked for all 256 values); it
happens on the device, or on NumPy in the thread that reads a streamed batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucat.data.dataset import IMAGE_SHAPE, N_FEATURES
from gpucat.errors import GpucatError

SHUFFLE, DROPOUT, SPLIT = 1, 2, 3  # random streams (host_rng): shuffles, masks, validation
WINDOW = 2048  # examples a shuffle window holds when the data is read in compressed chunks


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
    y = np.asarray(labels) > 0.5
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
    """The examples a run trains on, by position: the ``source``'s rows ``source_rows`` in
    order, then, with ``flip``, the same rows mirrored. A source itself (a subset of one, for
    scoring)."""

    source: Any
    source_rows: np.ndarray
    flip: bool = False

    def __post_init__(self):
        if self.flip and self.source.n_features != N_FEATURES:
            raise GpucatError(
                f"--flip mirrors 64x64 RGB images; this data has {self.source.n_features} "
                "features per example."
            )
        self.n_features, self.divisor = self.source.n_features, self.source.divisor
        self.stored, self.origin = self.source.stored, self.source.origin
        self.chunk_rows = self.source.chunk_rows

    @property
    def n_examples(self) -> int:
        return self.source_rows.size * (2 if self.flip else 1)

    def rows_of(self, positions: np.ndarray) -> np.ndarray:
        """The source rows of these positions (a mirrored copy's is its original's)."""
        return self.source_rows[positions % self.source_rows.size]

    def labels(self) -> np.ndarray:
        y = self.source.labels()[self.source_rows]
        return np.concatenate([y, y]) if self.flip else y

    def read(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, labels) of the examples at these positions (mirrored copies made here)."""
        rows, y = self.source.read(self.rows_of(positions))
        if self.flip:
            flipped = positions >= self.source_rows.size
            if flipped.any():
                rows = np.array(rows)  # a copy of our own before changing it
                rows[flipped] = mirrored_rows(rows[flipped])
        return rows, y

    def will_need(self, positions: np.ndarray) -> None:
        """Tell the source which examples come next (one read in chunks decodes them ahead)."""
        self.source.will_need(self.rows_of(positions))


@dataclass
class Batch:
    """Iteration i's examples held by this process: X (n_x, k) and Y (1, k) on the device
    (None when it holds none), their positions, their columns in the whole batch (for the
    dropout masks), the number of examples in the whole batch over all processes (the
    mean's divisor), and the epoch."""

    X: Any
    Y: Any
    positions: np.ndarray
    columns: Any
    n_examples: int
    epoch: int


class Batches:
    """Which positions iteration i trains on: all ``n_examples`` of them (full batch), or
    batch k of epoch e in a seeded shuffle of them drawn on the host: the same order on every
    device and every process, whichever part of it a process holds (its shard's block).

    The shuffle is a pure function of (seed, epoch, layout). Data its file compresses in
    chunks of several examples (``chunk_rows`` > 1) is shuffled chunk-aware, as tf.data and
    WebDataset do: the chunks in a random order, taken a window of ``WINDOW`` examples at a
    time, the examples shuffled within each window; so each chunk is decompressed once an
    epoch. Any other data is shuffled whole. The same data held in memory (load_h5 keeps the
    file's layout) gets the same batches, on any number of processes."""

    def __init__(self, shard, n_examples: int, batch_size: int | None, seed: int):
        self.shard, self.n_examples, self.seed = shard, n_examples, seed
        self.batch_size = min(batch_size or n_examples, n_examples)
        self.full = self.batch_size == n_examples
        self.per_epoch = -(-n_examples // self.batch_size)
        self._orders: dict[int, np.ndarray] = {}
        self._block = np.arange(shard.start, shard.stop)  # full batch: this process's all
        train = shard.train
        self.chunk = train.chunk_rows
        if self.chunk > 1 and not self.full:  # each position's chunk, numbered 0, 1, ...
            rows = train.rows_of(np.arange(n_examples)) // self.chunk
            self._chunk_of = np.unique(rows, return_inverse=True)[1]
            self.window = -(-WINDOW // self.chunk)  # chunks a window takes

    def order(self, epoch: int) -> np.ndarray:
        """Epoch ``epoch``'s order of the positions."""
        if epoch not in self._orders:
            rng = host_rng(self.seed, SHUFFLE, epoch)
            if self.chunk == 1:
                order = rng.permutation(self.n_examples)
            else:
                n = int(self._chunk_of.max()) + 1
                rank = np.empty(n, np.int64)
                rank[rng.permutation(n)] = np.arange(n)
                window = rank[self._chunk_of] // self.window
                # by window, then at random
                order = np.lexsort((rng.random(self.n_examples), window))
            self._orders = {k: v for k, v in self._orders.items() if k == epoch - 1}
            self._orders[epoch] = order
        return self._orders[epoch]

    def epoch(self, i: int) -> int:
        return i // self.per_epoch

    def size_of(self, i: int) -> int:
        """The number of examples in iteration i's whole batch (an epoch's last may be short)."""
        return min(self.batch_size, self.n_examples - (i % self.per_epoch) * self.batch_size)

    def positions(self, i: int) -> np.ndarray:
        """The positions of iteration i's batch in batch order (column k's at k)."""
        epoch, k = divmod(i, self.per_epoch)
        return self.order(epoch)[k * self.batch_size : (k + 1) * self.batch_size]

    def positions_from(self, i: int, count: int) -> np.ndarray:
        """``count`` positions from the start of iteration i's batch on, going on into the
        next epoch where this one ends."""
        epoch, k = divmod(i, self.per_epoch)
        taken = self.order(epoch)[k * self.batch_size : k * self.batch_size + count]
        if taken.size < count:
            taken = np.concatenate([taken, self.order(epoch + 1)[: count - taken.size]])
        return taken

    def __call__(self, i: int) -> Batch:
        s = self.shard
        if self.full:
            X, Y = s.columns()
            return Batch(X, Y, self._block, slice(s.start, s.stop), self.n_examples, i)
        positions = self.positions(i)
        columns = np.flatnonzero(s.owns(positions))  # the batch's columns this process holds
        X, Y = s.batch(s.local(positions[columns])) if columns.size else (None, None)
        if s.streams:  # read the next batch from disk while this one trains
            after = None
            if self.chunk > 1:  # and the chunks of the two windows after it, ahead
                after = self.positions_from(i + 1, 2 * WINDOW)
                after = s.local(after[s.owns(after)])
            following = self.positions(i + 1)
            s.prefetch(s.local(following[s.owns(following)]), after)
        return Batch(X, Y, positions[columns], columns, positions.size, self.epoch(i))


def split_training(source, validation: float, flip: bool, seed: int):
    """(training set, validation rows of the source): the validation examples are held out
    first (stratified, seeded), then the mirrored copies are added to the training set only."""
    all_rows = np.arange(source.n_examples)
    if not validation:
        return TrainingSet(source, all_rows, flip), all_rows[:0]
    train_rows, val_rows = stratified_split(source.labels(), validation, seed)
    if val_rows.size == 0 or train_rows.size == 0:
        raise GpucatError(f"--validation {validation} leaves an empty training or validation set.")
    return TrainingSet(source, train_rows, flip), val_rows
