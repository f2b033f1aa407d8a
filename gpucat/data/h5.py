"""Course-layout h5 files (datasets ``*_set_x`` and ``*_set_y``, or a file `gpucat prepare`
wrote): opened and checked, read whole, and how their images lie in the file for reading
them in pieces (streaming.H5Source)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gpucat.data.dataset import (
    IMAGE_SHAPE,
    N_FEATURES,
    Dataset,
    as_rows,
    check_images,
    check_labels,
)
from gpucat.errors import GpucatError

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
FETCH_HINT = (
    "run `gpucat fetch-data` to download verified copies, and pass the folder it names as "
    "--data-dir"
)


def not_hdf5_reason(path: Path) -> str | None:
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
    why = not_hdf5_reason(path)
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
    rows, divisor = as_rows(images)
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
    """Images the sampler takes together (batches.Batches): a compressed chunk's; in a plain
    file of more than BLOCKED_FROM images, a block of BLOCK adjacent ones, read in one call,
    so that an epoch reads the disk nearly in order (from a cold disk, blocks read several
    times faster than single images: docs/performance.md); else 1, shuffled whole."""
    if kind in ("gzip", "chunks"):
        return how
    return BLOCK if kind == "plain" and n > BLOCKED_FROM else 1
