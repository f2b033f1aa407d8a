"""Loading and checking the cat / non-cat data: the course h5 files (other formats: inputs.py).

Every loader returns a host ``Dataset`` whose examples stay as stored (uint8 pixels); the
trainer converts them on the device. Any problem with a file is a GpucatError that names the
file and says what to do.
"""

from __future__ import annotations

import functools
import os
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpucat.errors import GpucatError

IMAGE_SHAPE = (64, 64, 3)  # height, width, RGB
N_FEATURES = 64 * 64 * 3  # 12288
TRAIN_FILE = "train_catvnoncat.h5"
TEST_FILE = "test_catvnoncat.h5"
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
FETCH_HINT = (
    "run `gpucat fetch-data` to download verified copies, and pass the folder it names as "
    "--data-dir"
)
# The published course files (the same bytes at every pinned download address). The project
# ships them in data/; they are checked against these whenever they are loaded by name.
SHA256 = {
    TRAIN_FILE: "fbe56ab67c3ae28d564e3a644189117976d6b31af0a3ce9bb17dbf22908af242",
    TEST_FILE: "6a9d39ce52fa85953c5834695b8534a30ed8cfd54971fb2f080b5a24d002b951",
}


@dataclass
class Dataset:
    """Examples as stored, one per row: ``rows`` (m, n_x), uint8 pixels in height-width-channel
    order (or float features), and labels Y (1, m) of 0.0 / 1.0 (None when unlabelled).

    The network's input is ``rows / divisor`` as columns. Training never makes that float
    matrix on the host: it converts each (mini-)batch on the device (sources.py). ``X``
    builds it in float64 on demand, for small uses such as tests and references.
    """

    rows: np.ndarray
    Y: np.ndarray | None
    source: str
    names: list[str] | None = None  # one per example, for reports
    divisor: float = 255.0  # 255 for 8-bit pixels, 1 for features already scaled
    chunk_rows: int = 1  # images its file compresses together (the sampler's layout)

    def name(self, k: int) -> str:
        return self.names[k] if self.names else f"{Path(self.source).name}[{k}]"

    @property
    def m(self) -> int:
        return self.rows.shape[0]

    n = m  # the data-source name for the number of examples

    @property
    def n_features(self) -> int:
        return self.rows.shape[1]

    @property
    def X(self) -> np.ndarray:
        """float64 (n_x, m) columns: rows / divisor, the reference preprocessing."""
        X = self.rows.T.astype(np.float64)
        if self.divisor != 1:
            X /= self.divisor
        return X

    @property
    def images(self) -> np.ndarray | None:
        """uint8 (m, 64, 64, 3) pictures when the rows are 64x64 RGB images, else None."""
        if self.n_features != N_FEATURES:
            return None
        if self.rows.dtype == np.uint8 and self.divisor == 255:
            return self.rows.reshape(self.m, *IMAGE_SHAPE)
        scaled = np.clip(np.round(self.rows * (255.0 / self.divisor)), 0, 255)
        return scaled.astype(np.uint8).reshape(self.m, *IMAGE_SHAPE)

    def labels(self) -> np.ndarray:
        """(m,) float64 labels, NaN when unlabelled (the data-source interface: sources.py)."""
        return np.full(self.m, np.nan) if self.Y is None else self.Y.reshape(-1)

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, labels) of the examples ``idx`` (the data-source interface)."""
        return self.rows[idx], self.labels()[idx]


def as_rows(images: np.ndarray, path) -> tuple[np.ndarray, float]:
    """Checked (m, 64, 64, 3) images -> (m, 12288) rows and their divisor: 8-bit values as
    uint8 / 255; floats already in [0, 1] as they are / 1 (never divided twice); other
    floats in 0..255 / 255."""
    m = images.shape[0]
    if images.dtype == np.uint8:
        return images.reshape(m, -1), 255.0
    if np.issubdtype(images.dtype, np.integer):
        return images.astype(np.uint8).reshape(m, -1), 255.0  # check_images bounds it to 0..255
    rows = images.reshape(m, -1)
    if rows.size and rows.max() <= 1.0:
        return rows, 1.0
    if np.array_equal(rows, np.round(rows)):
        return rows.astype(np.uint8), 255.0
    return rows, 255.0


def default_data_dir() -> Path:
    """The course files gpucat carries: the package ``gpucat.course_data`` (the repository's
    data/ folder, installed inside the wheel), found through importlib.resources."""
    from importlib import resources

    return Path(str(resources.files("gpucat.course_data")))


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path:
    """``--data-dir``, else GPUCAT_DATA_DIR, else the course files gpucat carries."""
    if data_dir:
        return Path(data_dir)
    env = os.environ.get("GPUCAT_DATA_DIR")
    return Path(env) if env else default_data_dir()


def check_labels(y: np.ndarray, m: int, path: Path) -> np.ndarray:
    """Labels as a float (1, m) row of 0 / 1, or a GpucatError naming the file."""
    y = np.asarray(y)
    if y.size != m:
        raise GpucatError(
            f"{path}: {m} images but {y.size} labels; each image needs exactly one label."
        )
    if not np.issubdtype(y.dtype, np.number):
        raise GpucatError(f"{path}: labels must be numbers 0 or 1, found dtype {y.dtype}.")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise GpucatError(
            f"{path}: labels must be 0 (non-cat) or 1 (cat); found {y.ravel()[bad.ravel()][0].item():g} "
            f"at example {int(np.flatnonzero(bad.ravel())[0])}."
        )
    return y.reshape(1, m).astype(np.float64)


def check_images(images: np.ndarray, path: Path) -> np.ndarray:
    """Images as uint8-range values of shape (m, 64, 64, 3), finite, within 0..255."""
    if images.ndim != 4 or images.shape[1:] != IMAGE_SHAPE:
        raise GpucatError(f"{path}: images must have shape (m, 64, 64, 3), found {images.shape}.")
    if images.shape[0] == 0:
        raise GpucatError(f"{path}: the file holds no images.")
    if not np.issubdtype(images.dtype, np.number):
        raise GpucatError(f"{path}: pixels must be numbers, found dtype {images.dtype}.")
    if images.dtype != np.uint8:
        if not np.isfinite(images).all():
            raise GpucatError(f"{path}: pixels contain NaN or infinity; fix or re-export the file.")
        if images.min() < 0 or images.max() > 255:
            raise GpucatError(f"{path}: pixels must lie in 0..255.")
    return images


def _sniff_not_hdf5(path: Path) -> str | None:
    """Why a file that should be HDF5 is not, or None when its signature is right."""
    with open(path, "rb") as f:
        head = f.read(512)
    if head.startswith(HDF5_SIGNATURE):
        return None
    text = head.lstrip().lower()
    if text.startswith((b"<!doctype html", b"<html")) or b"<html" in text:
        return (
            "is an HTML web page, not an HDF5 file (a browser's 'save page' of the GitHub "
            "page instead of the raw file)"
        )
    if not head:
        return "is empty"
    return "is not an HDF5 file (wrong signature)"


def _read_h5(path: str | os.PathLike, read):
    """Open a course h5 file, check its layout, and return read(f, x_dataset, y_dataset);
    every failure becomes a GpucatError naming the file and what to do."""
    import h5py  # a runtime dependency, imported where it is used

    path = Path(path)
    if not path.is_file():
        raise GpucatError(f"{path}: no such file; {FETCH_HINT}.")
    why = _sniff_not_hdf5(path)
    if why:
        raise GpucatError(f"{path} {why}; delete it and {FETCH_HINT}.")
    try:
        with h5py.File(path, "r") as f:
            xs = sorted(k for k in f.keys() if k.endswith("_set_x"))
            ys = sorted(k for k in f.keys() if k.endswith("_set_y"))
            if len(xs) != 1 or len(ys) != 1:
                raise GpucatError(
                    f"{path}: expected one '*_set_x' and one '*_set_y' dataset, found "
                    f"{sorted(f.keys())}; is this a course data file?"
                )
            x, y = f[xs[0]], f[ys[0]]
            if x.shape[:1] != y.shape[:1]:
                raise GpucatError(
                    f"{path}: {x.shape[0]} images but {y.shape[0]} labels; "
                    "each image needs exactly one label."
                )
            return read(f, x, y)
    except GpucatError:
        raise
    except (OSError, KeyError, ValueError) as e:
        raise GpucatError(
            f"{path}: cannot be read as HDF5 ({e}); the file is truncated or damaged: "
            f"delete it and {FETCH_HINT}."
        ) from None


def _names(f, m: int) -> list[str] | None:
    """The per-example file names a prepared h5 keeps (dataset ``names``), if any."""
    if "names" not in f or f["names"].shape != (m,):
        return None
    return [n.decode("utf-8") if isinstance(n, bytes) else str(n) for n in f["names"][()]]


def load_h5(path: str | os.PathLike) -> Dataset:
    """A course file such as train_catvnoncat.h5 (datasets ``*_set_x`` and ``*_set_y``), or
    one written by `gpucat prepare`, read whole into memory."""

    def read(f, x, y):
        kind, how = storage(x) if x.ndim == 4 and x.dtype == np.uint8 else ("", None)
        chunk_rows = read_unit(kind, how, x.shape[0])  # as H5Source reads it
        return np.asarray(x[()]), np.asarray(y[()]), _names(f, x.shape[0]), chunk_rows

    images, labels, names, chunk_rows = _read_h5(path, read)
    images = check_images(images, Path(path))
    Y = check_labels(labels, images.shape[0], Path(path))
    rows, divisor = as_rows(images, path)
    return Dataset(rows, Y, str(path), names=names, divisor=divisor, chunk_rows=chunk_rows)


ROW = N_FEATURES  # bytes of one uint8 image
BLOCK, BLOCKED_FROM = 64, 2**16  # plain files of more images are read 64 adjacent at a time
ALIGN = 4096  # O_DIRECT reads: offset, length and buffer on this boundary
WORKERS = max(2, os.cpu_count() or 1)  # threads reading and decompressing chunks


def storage(x) -> tuple[str, Any]:
    """How an h5 dataset of uint8 images (m, 64, 64, 3) lies in its file, for reading:
    ("plain", byte offset of every image) when no filter touches the bytes (contiguous, or
    uncompressed chunks of whole images) where the OS reads at offsets (os.preadv: not on
    Windows); ("gzip", rows per chunk) for chunks of whole images
    compressed by gzip alone, ("chunks", rows per chunk) with other filters;
    ("h5py", None) otherwise (chunks that cut images, space not yet written)."""
    plist = x.id.get_create_plist()
    filters = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    if x.chunks is not None and tuple(x.chunks[1:]) != IMAGE_SHAPE:
        return "h5py", None
    if filters:
        import h5py

        return ("gzip" if filters == [h5py.h5z.FILTER_DEFLATE] else "chunks"), x.chunks[0]
    if not hasattr(os, "preadv"):
        return "h5py", None
    if x.chunks is None:
        offset = x.id.get_offset()
        return ("h5py", None) if offset is None else ("plain", offset + ROW * np.arange(x.shape[0]))
    offsets = np.full(x.shape[0], -1, np.int64)

    def chunk(info):  # the images of one chunk lie one after another from its byte offset
        lo = info.chunk_offset[0]
        rows = np.arange(lo, min(lo + x.chunks[0], x.shape[0]))
        offsets[rows] = info.byte_offset + ROW * (rows - lo)

    x.id.chunk_iter(chunk)
    return ("plain", offsets) if (offsets >= 0).all() else ("h5py", None)


def read_unit(kind: str, how, n: int) -> int:
    """Images the sampler takes together (sources.Batches): a compressed chunk's; in a plain
    file of more than BLOCKED_FROM images, a block of BLOCK adjacent ones, read in one call,
    so that an epoch reads the disk nearly in order (from a cold disk, 64-image blocks read
    7x faster than single images here: docs/benchmarks.md); else 1, shuffled whole."""
    if kind in ("gzip", "chunks"):
        return how
    return BLOCK if kind == "plain" and n > BLOCKED_FROM else 1


class H5Source:
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
            return x.name, x.shape, x.dtype, np.asarray(y[()]), _names(f, x.shape[0]), stored

        self._x, shape, dtype, labels, self.names, self.storage = _read_h5(path, header)
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
        self.capacity = 64  # chunks kept; sources.StreamedShard sizes it to its windows

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
        """Images lo..hi-1 of a plain file in one read that bypasses the page cache
        (O_DIRECT, where the OS and file system allow it): a file this large is read once an
        epoch and cannot stay cached, and copying it through the cache cost more CPU than
        the training step left free (docs/benchmarks.md, "Streaming")."""
        at = self.storage[1][lo:hi]
        fd = self._opened("_direct", lambda: _open_direct(self.path))
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

    def name(self, k: int) -> str:
        return self.names[k] if self.names else f"{self.path.name}[{k}]"

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


def sha256_of(path: str | os.PathLike) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_course_file(path: Path) -> None:
    """The file is the published course file, byte for byte, or a GpucatError says what to do."""
    if not path.is_file():
        raise GpucatError(f"{path}: no such file; {FETCH_HINT}.")
    digest = sha256_of(path)
    if digest != SHA256[path.name]:
        why = _sniff_not_hdf5(path)
        raise GpucatError(
            f"{path} {why or 'is not the published course file'} (SHA-256 {digest[:12]}..., "
            f"expected {SHA256[path.name][:12]}...); delete it and {FETCH_HINT}, or train on "
            "your own file with --train PATH."
        )


def load_course_data(data_dir: str | os.PathLike | None = None) -> tuple[Dataset, Dataset]:
    """The training and test sets from the data folder (see ``resolve_data_dir``), each
    checked against the published SHA-256 first."""
    folder = resolve_data_dir(data_dir)
    for name in (TRAIN_FILE, TEST_FILE):
        check_course_file(folder / name)
    return load_h5(folder / TRAIN_FILE), load_h5(folder / TEST_FILE)
