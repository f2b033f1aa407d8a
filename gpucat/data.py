"""Loading and checking the cat / non-cat data: the course h5 files (other formats: inputs.py).

Every loader returns a host ``Dataset`` whose examples stay as stored (uint8 pixels); the
trainer converts them on the device. Any problem with a file is a GpucatError that names the
file and says what to do.
"""

from __future__ import annotations

import os
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


class Source:
    """The data-source seam: what training reads examples through. A source has ``n``
    examples of ``n_features`` values, stored as rows that ``divisor`` scales to the
    network's inputs, and reads ``(rows, labels)`` of any examples asked for; the rest has
    defaults, which a source that streams from disk overrides (streaming.H5Source):
    ``chunk_rows`` (examples its file stores together: the shuffle takes them together),
    ``streams`` (stays on disk, read batch by batch), ``will_need`` (start reading these
    ahead) and ``keep_chunks`` (hold at least this many read chunks)."""

    n: int
    n_features: int
    source: str  # where it came from, for messages and reports
    names: list[str] | None = None  # one per example, for reports
    divisor = 255.0
    stored = np.dtype(np.uint8)  # the dtype its rows are read in
    chunk_rows = 1
    streams = False

    def labels(self) -> np.ndarray:
        """(n,) float64 labels, NaN when unlabelled."""
        raise NotImplementedError

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, labels) of the examples ``idx``, in that order."""
        raise NotImplementedError

    def name(self, k: int) -> str:
        """Example k for a report: its name, else SOURCE[k]."""
        return self.names[k] if self.names else f"{Path(self.source).name}[{k}]"

    def will_need(self, idx: np.ndarray) -> None:
        """These examples come next (a source in memory has them already)."""

    def keep_chunks(self, count: int) -> None:
        """Hold at least ``count`` chunks once read (a source in memory holds them all)."""


@dataclass
class Dataset(Source):
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

    @property
    def m(self) -> int:
        return self.rows.shape[0]

    n = m  # the data-source name for the number of examples

    @property
    def n_features(self) -> int:
        return self.rows.shape[1]

    @property
    def stored(self) -> np.dtype:
        return self.rows.dtype

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
        return np.full(self.m, np.nan) if self.Y is None else self.Y.reshape(-1)

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.rows[idx], self.labels()[idx]


def divisor_for(dtype) -> float:
    """What arrays of this dtype are divided by: integer pixels to [0, 1] (uint16 by 65535,
    other integers by 255), floats taken as already scaled."""
    if np.issubdtype(dtype, np.integer):
        return 65535.0 if dtype == np.uint16 else 255.0
    return 1.0


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


def read_h5(path: str | os.PathLike, read):
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


def stored_names(f, m: int) -> list[str] | None:
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
        return np.asarray(x[()]), np.asarray(y[()]), stored_names(f, x.shape[0]), chunk_rows

    images, labels, names, chunk_rows = read_h5(path, read)
    images = check_images(images, Path(path))
    Y = check_labels(labels, images.shape[0], Path(path))
    rows, divisor = as_rows(images, path)
    return Dataset(rows, Y, str(path), names=names, divisor=divisor, chunk_rows=chunk_rows)


ROW = N_FEATURES  # bytes of one uint8 image
BLOCK, BLOCKED_FROM = 64, 2**16  # plain files of more images are read 64 adjacent at a time


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
    7x faster than single images here: docs/performance.md); else 1, shuffled whole."""
    if kind in ("gzip", "chunks"):
        return how
    return BLOCK if kind == "plain" and n > BLOCKED_FROM else 1


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
