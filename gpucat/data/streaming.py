"""Streaming: training examples read from disk as training asks for them.

``H5Source`` is a course-layout h5 file of uint8 images that stays on disk and reads the
examples asked for by the fastest path its layout allows; ``StreamedShard`` hands a
process's block of them out batch by batch, reading the next batch in a background thread
while this one trains; ``make_shard`` decides, for a run, whether its examples stream
(``is_streamed``) or sit on the device (sources.DeviceShard).
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from gpucat.backends import Device, memory_available
from gpucat.data.dataset import IMAGE_SHAPE, N_FEATURES, Source, check_labels
from gpucat.data.h5 import ROW, load_h5, read_h5, read_unit, storage, stored_names
from gpucat.data.sources import (
    DEVICE_SHARE,
    WINDOW,
    DeviceShard,
    Shard,
    TrainingSet,
)
from gpucat.errors import GpucatError

ALIGN = 4096  # O_DIRECT reads: offset, length and buffer on this boundary
WORKERS = max(2, os.cpu_count() or 1)  # threads reading and decompressing chunks
DIRECT_FROM = 0.5  # files larger than this share of available memory bypass the page cache


class H5Source(Source):
    """A course-layout h5 file of uint8 images that stays on disk: ``read`` fetches just the
    examples asked for (a mini-batch, a chunk), so memory holds a few batches whatever the
    file's size, by the fastest path the file's layout allows (``storage``):

    - plain (contiguous, as `gpucat prepare` writes, or uncompressed chunks): each image at
      a known byte offset, read with os.preadv straight into the batch (a run of adjacent
      images in one call), no HDF5 call, the GIL let go; the page cache does the rest. (A
      memory map reads faster, but the kernel maps the page cache's large folios around
      each image into the process: 1 GB resident after 600 batches of a 1.2 GB file.)
    - compressed chunks of ``chunk_rows`` images, and a large plain file's blocks
      (``read_unit``): each whole, read in worker threads that let go of the GIL (gzip: the
      raw chunk inflated by zlib-ng; other filters through h5py; a block with O_DIRECT,
      past the page cache) and kept in a cache of a few
      shuffle windows, so that the sampler, which takes a chunk's images together
      (sources.Batches), reads each chunk once an epoch; ``will_need`` starts on the next
      windows' chunks ahead of time.

    The labels (8 bytes an example) are read and checked up front."""

    divisor = 255.0
    n_features = N_FEATURES
    streams = True

    def __init__(self, path: str | os.PathLike):
        self.path, self.source = Path(path), str(path)

        def header(f, x, y):
            stored = storage(x) if x.dtype == np.uint8 and x.ndim == 4 else ("h5py", None)
            return x.name, x.shape, x.dtype, np.asarray(y[()]), stored_names(f, x.shape[0]), stored

        self._x, shape, dtype, labels, self.names, self.storage = read_h5(path, header)
        if len(shape) != 4 or tuple(shape[1:]) != IMAGE_SHAPE or dtype != np.uint8:
            raise GpucatError(
                f"{path}: streaming needs uint8 images (m, 64, 64, 3), found {dtype} {shape}."
            )
        if shape[0] == 0:
            raise GpucatError(f"{path}: the file holds no images.")
        self.Y = check_labels(labels, shape[0], self.path)
        self.n = self.m = shape[0]
        kind, how = self.storage
        self.chunk_rows = read_unit(kind, how, self.n)
        if kind == "plain" and int(how.max()) + ROW > self.path.stat().st_size:
            raise GpucatError(f"{path}: the file ends before its last image; it is truncated.")
        self._setup()

    def _setup(self):
        import threading

        self._file = self._fd = self._direct = self._pool = None
        self._lock = threading.Lock()  # h5py calls and the chunk cache, one thread at a time
        self._cache: OrderedDict = OrderedDict()  # chunk -> Future of its images
        self.capacity = 64  # chunks kept (keep_chunks raises it to a shard's windows)
        # O_DIRECT only for a file the page cache cannot hold: one that fits is read through
        # the cache, and a second epoch finds it there
        self.direct = self.path.stat().st_size > DIRECT_FROM * memory_available()

    def keep_chunks(self, count: int) -> None:
        self.capacity = max(self.capacity, count)

    def labels(self) -> np.ndarray:
        return self.Y.reshape(-1)

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows (k, 12288) uint8, labels (k,)) of the examples ``idx``, in that order."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.chunk_rows > 1:
            rows = np.empty((idx.size, ROW), np.uint8)
            chunk = idx // self.chunk_rows
            for c in np.unique(chunk).tolist():
                mine = chunk == c
                rows[mine] = self._chunk(c).result()[idx[mine] - c * self.chunk_rows]
        elif self.storage[0] == "plain":
            rows = self._plain(idx)
        else:
            rows = self._runs(idx)
        return rows, self.labels()[idx]

    @staticmethod
    def _in_runs(idx: np.ndarray, keys: np.ndarray, step: int, read) -> np.ndarray:
        """The rows of ``idx``, read a run at a time: sorted by ``keys`` (their place in the
        file), each run of keys ``step`` apart read by ``read(rows, first key)`` into its
        slice, then put back in idx's order."""
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        rows = np.empty((idx.size, ROW), np.uint8)
        starts = np.flatnonzero(np.diff(keys, prepend=keys[:1] - 2 * step) != step).tolist()
        for a, b in zip(starts, [*starts[1:], idx.size]):
            read(rows[a:b], int(keys[a]))
        out = np.empty_like(rows)
        out[order] = rows
        return out

    def _opened(self, attr: str, opener):
        """The descriptor kept in ``attr``, opened by ``opener`` on first use."""
        with self._lock:
            if getattr(self, attr) is None:
                setattr(self, attr, opener())
            return getattr(self, attr)

    def _pread(self, fd: int, buf: np.ndarray, at: int, need: int) -> None:
        """Read the file from byte ``at`` into ``buf`` until ``need`` bytes came; a short
        read (a signal, a network file, O_DIRECT at the file's end) goes on from there."""
        view, got = memoryview(buf).cast("B"), 0
        while got < need:
            k = os.preadv(fd, [view[got:]], at + got)
            if k <= 0:
                raise GpucatError(f"{self.path}: the file ends early; was it truncated?")
            got += k

    def _plain(self, idx: np.ndarray) -> np.ndarray:
        fd = self._opened("_fd", lambda: os.open(self.path, os.O_RDONLY))
        read = lambda rows, at: self._pread(fd, rows, at, rows.nbytes)  # noqa: E731
        return self._in_runs(idx, self.storage[1][idx], ROW, read)

    def _block(self, lo: int, hi: int) -> np.ndarray:
        """Images lo..hi-1 of a plain file in one read, which bypasses the page cache
        (O_DIRECT, where the OS and file system allow it) when the file is too large for it
        (``direct``): such a file is read once an epoch and cannot stay cached, and copying it
        through the cache cost more CPU than the training step left free (docs/performance.md)."""
        at = self.storage[1][lo:hi]
        fd = self._opened("_direct", lambda: _open_direct(self.path)) if self.direct else False
        if fd is False or (np.diff(at) != ROW).any():  # not one run on disk
            return self._plain(np.arange(lo, hi))
        first, n = int(at[0]), (hi - lo) * ROW
        start = first - first % ALIGN
        buf = _aligned(first + n - start)
        self._pread(fd, buf, start, first + n - start)
        return buf[first - start :][:n].reshape(hi - lo, ROW)

    def will_need(self, rows: np.ndarray) -> None:
        """Start reading (decompressing) the chunks of these examples in the background."""
        if self.chunk_rows > 1:  # in the order they will be needed
            chunks, first = np.unique(np.asarray(rows) // self.chunk_rows, return_index=True)
            for c in chunks[np.argsort(first)].tolist():
                self._chunk(c)

    def _chunk(self, c: int):
        """The Future of chunk c's images, from the cache or newly submitted."""
        from concurrent.futures import ThreadPoolExecutor

        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="gpucat-chunks")
            future = self._cache.get(c)
            if future is None:
                future = self._cache[c] = self._pool.submit(self._decode, c)
                while len(self._cache) > self.capacity:
                    self._cache.popitem(last=False)  # the least recently asked for
            else:
                self._cache.move_to_end(c)
            return future

    def _decode(self, c: int) -> np.ndarray:
        k = self.chunk_rows
        lo, hi = c * k, min(c * k + k, self.n)
        if self.storage[0] == "plain":
            return self._block(lo, hi)
        zlib = _zlib()
        try:
            with self._lock:
                x = self._dataset()
                if self.storage[0] != "gzip":
                    return x[lo:hi].reshape(hi - lo, ROW)
                mask, raw = x.id.read_direct_chunk((lo, 0, 0, 0))
            data = raw if mask & 1 else zlib.decompress(raw)  # without the GIL
            return np.frombuffer(data, np.uint8).reshape(k, ROW)[: hi - lo]
        except (zlib.error, OSError, ValueError) as e:
            raise GpucatError(
                f"{self.path}: images {lo}-{hi - 1} cannot be read ({e}); the file is damaged."
            ) from None

    def _runs(self, idx: np.ndarray) -> np.ndarray:
        """Through h5py, one slice per run of consecutive examples (h5py's own point
        selection is ~20x slower on a file of many chunks)."""

        def read(rows, lo):
            with self._lock:
                block = rows.reshape(-1, *IMAGE_SHAPE)
                self._dataset().read_direct(block, np.s_[lo : lo + len(rows)])

        return self._in_runs(idx, idx, 1, read)

    def _dataset(self):
        if self._file is None:
            import h5py

            try:
                self._file = h5py.File(self.path, "r")
            except OSError as e:
                raise GpucatError(f"{self.path}: cannot be read as HDF5 ({e}).") from None
        return self._file[self._x]

    @property
    def images(self):
        """Pictures by index, read when asked for (for --mislabeled)."""
        source = self

        class _Lazy:
            def __getitem__(self, k):
                return source.read(np.array([k]))[0].reshape(IMAGE_SHAPE)

        return _Lazy()

    def __del__(self):
        for fd in (getattr(self, "_fd", None), getattr(self, "_direct", None)):
            if fd is not None and fd is not False:
                os.close(fd)

    def __getstate__(self):  # open files, threads and locks do not pickle: made anew
        drop = ("_file", "_fd", "_direct", "_pool", "_lock", "_cache")
        return {k: v for k, v in self.__dict__.items() if k not in drop}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._setup()


def _aligned(n: int) -> np.ndarray:
    """n bytes (rounded up to ALIGN) whose address is a multiple of ALIGN."""
    raw = np.empty(-(-n // ALIGN) * ALIGN + ALIGN, np.uint8)
    return raw[-raw.ctypes.data % ALIGN :][: raw.size - ALIGN]


def _open_direct(path: Path):
    """A descriptor reading ``path`` with O_DIRECT, checked by one aligned read; False
    where the OS (Windows, macOS), the file system (tmpfs) or the device refuses it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    except (AttributeError, OSError):
        return False
    try:
        os.preadv(fd, [memoryview(_aligned(ALIGN))], 0)
        return fd
    except OSError:
        os.close(fd)
        return False


@functools.cache
def _zlib():
    """zlib-ng (a dependency: it inflates these chunks 1.7x faster), else zlib where its
    wheels are missing."""
    try:
        from zlib_ng import zlib_ng

        return zlib_ng
    except ImportError:
        import zlib

        return zlib


def open_h5(path: str | os.PathLike):
    """An h5 data set: streamed from disk when its images are uint8, else read whole."""
    try:
        return H5Source(path)
    except GpucatError:
        return load_h5(path)  # other layouts and dtypes: checked and explained there


def is_streamed(device: Device, train: TrainingSet, m: int, full_batch: bool) -> bool:
    """Whether a block of m training positions is read from disk batch by batch: when the
    source stays on disk and training is in mini-batches, always where device memory is host
    memory (the CPU), on a GPU when the uint8 block exceeds a quarter of its free memory."""
    if full_batch or not train.source.streams:
        return False
    return device.host_memory or m * train.source.n_features > DEVICE_SHARE * device.free_memory()


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
        return self.train.read(np.asarray(local) + self.start)[0]

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
    (2 cores, batch 256: 8.7 ms a step from a contiguous file with one BLAS thread, 12.8
    with two; docs/performance.md). Returns the limits to restore, or None."""
    import os

    from threadpoolctl import threadpool_info, threadpool_limits

    now = max((d["num_threads"] for d in threadpool_info() if d["user_api"] == "blas"), default=1)
    fewer = max(1, min(now, (os.cpu_count() or 1) - 1))
    return threadpool_limits(fewer, user_api="blas") if fewer < now else None
