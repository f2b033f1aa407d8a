"""`gpucat prepare FOLDER --out data.h5`: a labelled image folder, decoded once, as an h5.

Decoding photos (and resizing them to 64x64) costs far more than training on them, so a
large folder is decoded once, in parallel (one process per core), into a chunked
course-layout h5 of uint8 images: ``train_set_x`` (m, 64, 64, 3), ``train_set_y`` (m,),
``list_classes`` and the file names (``names``). `train`, `evaluate` and `predict` read it
like any course h5, and training streams it from disk. The file is written atomically:
a temporary file in the same folder, renamed when complete.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from gpucat.data import IMAGE_SHAPE
from gpucat.errors import GpucatError


def _decode(path: str) -> tuple[np.ndarray | None, str | None]:
    """One image as uint8 (64, 64, 3), or the error message (a worker must not raise)."""
    from gpucat.inputs import load_image

    try:
        return load_image(path), None
    except GpucatError as e:
        return None, str(e)


def labelled_files(folder: Path) -> list[tuple[Path, int]]:
    """(image file, label) for a folder with cat/ and non-cat/ subfolders."""
    from gpucat.inputs import folder_files

    if not folder.is_dir():
        raise GpucatError(f"{folder}: no such folder.")
    files = folder_files(folder)
    if files and files[0][1] is None:
        raise GpucatError(
            f"{folder}: prepare needs labelled images: put them in cat/ and non-cat/ subfolders."
        )
    if not files:
        raise GpucatError(f"{folder}: no images found in it or in cat/ and non-cat/ subfolders.")
    return [(p, int(y)) for p, y in files]


def prepare(folder, out, jobs: int | None = None, progress: bool | None = None) -> int:
    """Decode every labelled image of ``folder`` with ``jobs`` processes (default: one per
    core) into the h5 file ``out``; returns the number of images. ``progress``: a bar on
    stderr (None: when stderr is a terminal)."""
    import h5py
    from tqdm import tqdm

    folder, out = Path(folder), Path(out)
    if not out.resolve().parent.is_dir():
        raise GpucatError(f"{out}: the folder {out.parent} does not exist; create it first.")
    files = labelled_files(folder)
    jobs = max(1, jobs or os.cpu_count() or 1)
    m = len(files)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        with h5py.File(tmp, "w") as f:
            x = f.create_dataset(
                "train_set_x", (m, *IMAGE_SHAPE), np.uint8, chunks=(1, *IMAGE_SHAPE)
            )
            f["train_set_y"] = np.array([y for _, y in files], dtype=np.int64)
            f["list_classes"] = np.array([b"non-cat", b"cat"])
            names = [str(p.relative_to(folder)) for p, _ in files]
            f.create_dataset("names", data=names, dtype=h5py.string_dtype("utf-8"))
            bar = tqdm(
                total=m,
                unit="img",
                desc=f"prepare {folder.name}",
                disable=progress is False or (progress is None and not sys.stderr.isatty()),
            )
            with bar:
                for k, (image, error) in enumerate(_decoded([str(p) for p, _ in files], jobs)):
                    if error:
                        raise GpucatError(error)
                    x[k] = image
                    bar.update()
        os.replace(tmp, out)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return m


def _decoded(paths: list[str], jobs: int):
    """The decoded images in order: in this process (jobs 1) or a pool of ``jobs``."""
    if jobs == 1:
        yield from map(_decode, paths)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
    with ctx.Pool(jobs) as pool:
        yield from pool.imap(_decode, paths, chunksize=max(1, min(64, len(paths) // (8 * jobs))))
