"""The examples as gpucat holds them: the data-source seam (``Source``), a data set in memory
(``Dataset``), and the checks every loader applies to images and labels.

Every loader returns a host ``Dataset`` whose examples stay as stored (uint8 pixels); the
trainer converts them on the device. Any problem is a GpucatError that names the file and
says what to do.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gpucat.errors import GpucatError

IMAGE_SHAPE = (64, 64, 3)  # height, width, RGB
N_FEATURES = 64 * 64 * 3  # 12288


class Source:
    """The data-source seam: what training reads examples through. A source has
    ``n_examples`` examples of ``n_features`` values, stored as rows that ``divisor`` scales to the
    network's inputs, and reads ``(rows, labels)`` of any examples asked for; the rest has
    defaults, which a source that streams from disk overrides (streaming.H5Source):
    ``chunk_rows`` (examples its file stores together: the shuffle takes them together),
    ``streams`` (stays on disk, read batch by batch), ``will_need`` (start reading these
    ahead), ``keep_chunks`` (hold at least this many read chunks) and ``close`` (let go of
    its files and threads)."""

    n_examples: int
    n_features: int
    origin: str  # where it came from (a file, a folder, "arrays"), for messages and reports
    names: list[str] | None = None  # one per example, for reports
    divisor = 255.0
    stored = np.dtype(np.uint8)  # the dtype its rows are read in
    chunk_rows = 1
    streams = False

    def labels(self) -> np.ndarray:
        """(n_examples,) float64 labels, NaN when unlabelled."""
        raise NotImplementedError

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(rows, labels) of the examples ``idx``, in that order."""
        raise NotImplementedError

    def name(self, k: int) -> str:
        """Example k for a report: its name, else ORIGIN[k]."""
        return self.names[k] if self.names else f"{Path(self.origin).name}[{k}]"

    def will_need(self, idx: np.ndarray) -> None:
        """These examples come next (a source in memory has them already)."""

    def keep_chunks(self, count: int) -> None:
        """Hold at least ``count`` chunks once read (a source in memory holds them all)."""

    def close(self) -> None:
        """Let go of open files and reading threads (a source in memory holds none)."""


@dataclass
class Dataset(Source):
    """Examples as stored, one per row: ``rows`` (n_examples, n_x), uint8 pixels in
    height-width-channel order (or float features), and labels Y (1, n_examples) of 0.0 / 1.0
    (None when unlabelled).

    The network's input is ``rows / divisor`` as columns. Training never makes that float
    matrix on the host: it converts each (mini-)batch on the device (shards.py). ``X``
    builds it in float64 on demand, for small uses such as tests and references.
    """

    rows: np.ndarray
    Y: np.ndarray | None
    origin: str
    names: list[str] | None = None  # one per example, for reports
    divisor: float = 255.0  # 255 for 8-bit pixels, 1 for features already scaled
    chunk_rows: int = 1  # images its file compresses together (the sampler's layout)

    @classmethod
    def from_arrays(cls, data, labels=None, origin: str = "arrays") -> Dataset:
        """The one way arrays become examples (the Python API, CatClassifier, tests): one
        example a row, images (n, 64, 64, 3) or rows (n, n_features), with labels (n,) of 0
        and 1 (None: unlabelled); integer pixels are divided by their full scale
        (``divisor_for``), floats are taken as already scaled."""
        rows = np.asarray(data)
        if rows.ndim == 0:
            raise GpucatError(f"{origin}: inputs must be examples, one a row; got one number.")
        n_examples = rows.shape[0]
        rows = rows.reshape(n_examples, -1)
        if not np.issubdtype(rows.dtype, np.number) or not np.isfinite(rows).all():
            raise GpucatError(f"{origin}: inputs must be finite numbers, got dtype {rows.dtype}.")
        Y = None if labels is None else check_labels(labels, n_examples, origin)
        return cls(rows, Y, origin, divisor=divisor_for(rows.dtype))

    @property
    def n_examples(self) -> int:
        return self.rows.shape[0]

    @property
    def n_features(self) -> int:
        return self.rows.shape[1]

    @property
    def stored(self) -> np.dtype:
        return self.rows.dtype

    @property
    def X(self) -> np.ndarray:
        """float64 (n_x, n_examples) columns: rows / divisor, the reference preprocessing."""
        X = self.rows.T.astype(np.float64)
        if self.divisor != 1:
            X /= self.divisor
        return X

    @property
    def images(self) -> np.ndarray | None:
        """uint8 (n_examples, 64, 64, 3) pictures when the rows are 64x64 RGB images, else None."""
        if self.n_features != N_FEATURES:
            return None
        if self.rows.dtype == np.uint8 and self.divisor == 255:
            return self.rows.reshape(self.n_examples, *IMAGE_SHAPE)
        scaled = np.clip(np.round(self.rows * (255.0 / self.divisor)), 0, 255)
        return scaled.astype(np.uint8).reshape(self.n_examples, *IMAGE_SHAPE)

    def labels(self) -> np.ndarray:
        return np.full(self.n_examples, np.nan) if self.Y is None else self.Y.reshape(-1)

    def read(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.rows[idx], self.labels()[idx]


def divisor_for(dtype) -> float:
    """What arrays of this dtype are divided by: integer pixels to [0, 1] (uint16 by 65535,
    other integers by 255), floats taken as already scaled."""
    if np.issubdtype(dtype, np.integer):
        return 65535.0 if dtype == np.uint16 else 255.0
    return 1.0


def as_rows(images: np.ndarray) -> tuple[np.ndarray, float]:
    """Checked (m, 64, 64, 3) images -> (m, 12288) rows and their divisor: 8-bit values as
    uint8 / 255; floats already in [0, 1] as they are / 1 (never divided twice); other
    floats in 0..255 / 255."""
    n_examples = images.shape[0]
    if images.dtype == np.uint8:
        return images.reshape(n_examples, -1), 255.0
    if np.issubdtype(images.dtype, np.integer):
        return images.astype(np.uint8).reshape(
            n_examples, -1
        ), 255.0  # check_images bounds it to 0..255
    rows = images.reshape(n_examples, -1)
    if rows.size and rows.max() <= 1.0:
        return rows, 1.0
    if np.array_equal(rows, np.round(rows)):
        return rows.astype(np.uint8), 255.0
    return rows, 255.0


def check_labels(y: np.ndarray, n_examples: int, path: Path) -> np.ndarray:
    """Labels as a float (1, n_examples) row of 0 / 1, or a GpucatError naming the file."""
    y = np.asarray(y)
    if y.size != n_examples:
        raise GpucatError(
            f"{path}: {n_examples} images but {y.size} labels; each image needs exactly one label."
        )
    if not np.issubdtype(y.dtype, np.number):
        raise GpucatError(f"{path}: labels must be numbers 0 or 1, found dtype {y.dtype}.")
    bad = ~np.isin(y, (0, 1))
    if bad.any():
        raise GpucatError(
            f"{path}: labels must be 0 (non-cat) or 1 (cat); found {y.ravel()[bad.ravel()][0].item():g} "
            f"at example {int(np.flatnonzero(bad.ravel())[0])}."
        )
    return y.reshape(1, n_examples).astype(np.float64)


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
