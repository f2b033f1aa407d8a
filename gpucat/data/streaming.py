"""Streaming: a data source that stays on disk.

``H5Source`` is a course-layout h5 file of uint8 images that reads the examples asked for
by the fastest path its layout allows; shards.StreamedShard hands a process's block of
them out batch by batch, the next batch read in a background thread while this one trains.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from gpucat.backends import memory_available
from gpucat.data.dataset import IMAGE_SHAPE, N_FEATURES, Source, check_labels
from gpucat.data.h5 import ROW, load_h5, read_h5, read_unit, storage, stored_names
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
      each image into the process, whose resident memory then grows toward the file's
      size: docs/performance.md.)
    - compressed chunks of ``chunk_rows`` images, and a large plain file's blocks
      (``read_unit``): each whole, read in worker threads that let go of the GIL (gzip: the
      raw chunk inflated by zlib-ng; other filters through h5py; a block with O_DIRECT,
      past the page cache) and kept in a cache of a few
      shuffle windows, so that the sampler, which takes a chunk's images together
      (batches.Batches), reads each chunk once an epoch; ``will_need`` starts on the next
      windows' chunks ahead of time.

    The labels (8 bytes an example) are read and checked up front."""

    divisor = 255.0
    n_features = N_FEATURES
    streams = True

    def __init__(self, path: str | os.PathLike):
        self.path, self.origin = Path(path), str(path)

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
        self.n_examples = shape[0]
        kind, how = self.storage
        self.chunk_rows = read_unit(kind, how, self.n_examples)
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
        lo, hi = c * k, min(c * k + k, self.n_examples)
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
        selection is many times slower on a file of many chunks)."""

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
    def images(self) -> Pictures:
        """Pictures by index, read when asked for (for --mislabeled)."""
        return Pictures(self)

    def close(self, wait: bool = True) -> None:
        """Let go of the file's descriptors and the threads that read it (``wait``: until
        their reads are done); a later read opens them again."""
        with self._lock:
            pool, self._pool = self._pool, None
            self._cache.clear()
        if pool is not None:
            pool.shutdown(wait=wait, cancel_futures=True)
        with self._lock:
            for attr in ("_fd", "_direct"):
                fd, self.__dict__[attr] = getattr(self, attr), None
                if fd is not None and fd is not False:
                    os.close(fd)
            if self._file is not None:
                self._file.close()
                self._file = None

    def __enter__(self) -> H5Source:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        if "_lock" in self.__dict__:  # made whole (a refused file never was)
            self.close(wait=False)

    def __getstate__(self):  # open files, threads and locks do not pickle: made anew
        drop = ("_file", "_fd", "_direct", "_pool", "_lock", "_cache")
        return {k: v for k, v in self.__dict__.items() if k not in drop}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._setup()


class Pictures:
    """An H5Source's pictures by index, each read when asked for."""

    def __init__(self, source: H5Source):
        self.source = source

    def __getitem__(self, k: int) -> np.ndarray:
        return self.source.read(np.array([k]))[0].reshape(IMAGE_SHAPE)


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
    """zlib-ng (a dependency: it inflates these chunks faster, docs/performance.md), else
    zlib where its wheels are missing."""
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
