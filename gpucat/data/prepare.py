"""`gpucat prepare`: a labelled image folder, or an h5 in any layout, as the h5 that streams
fastest.

Decoding photos (and resizing them to 64x64) costs far more than training on them, so a
large folder is decoded once, in parallel (one process per core); an existing h5 whose
images are chunked or compressed is rewritten (`gpucat prepare old.h5 --out fast.h5`).
Either way the result is a course-layout h5 with the images contiguous and uncompressed:
``train_set_x`` (m, 64, 64, 3) uint8, ``train_set_y`` (m,), ``list_classes`` and the file
names (``names``), which training reads at the images' byte offsets (streaming.H5Source). The
file is written atomically (files.replacing); a progress bar shows on a terminal.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from gpucat.data.dataset import IMAGE_SHAPE
from gpucat.errors import GpucatError
from gpucat.files import check_writable, replacing


def _decode(path: str) -> tuple[np.ndarray | None, str | None]:
    """One image as uint8 (64, 64, 3), or the error message (a worker must not raise)."""
    from gpucat.data.inputs import load_image

    try:
        return load_image(path), None
    except GpucatError as e:
        return None, str(e)


def labelled_files(folder: Path) -> list[tuple[Path, int]]:
    """(image file, label) for a folder with cat/ and non-cat/ subfolders."""
    from gpucat.data.inputs import folder_files

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


def prepare(source, out, jobs: int | None = None, progress: bool | None = None) -> int:
    """Write ``source`` (a labelled image folder, decoded with ``jobs`` processes, default
    one per core; or an h5 file of images) into the h5 file ``out``, contiguous and
    uncompressed; returns the number of images. ``progress``: a bar on stderr (None: when
    stderr is a terminal)."""
    import h5py
    from tqdm import tqdm

    source, out = Path(source), Path(out)
    check_writable(out)
    if source.is_file():
        from gpucat.data.streaming import open_h5

        data = open_h5(source)  # checked: images, labels
        labels, names, blocks = data.labels(), data.names, _h5_blocks(data)
    else:
        files = labelled_files(source)
        labels = np.array([y for _, y in files])
        names = [str(p.relative_to(source)) for p, _ in files]
        blocks = ((k, [image]) for k, image in enumerate(_images([str(p) for p, _ in files], jobs)))
    m = labels.size
    with replacing(out) as tmp:
        with h5py.File(tmp, "w") as f:
            x = f.create_dataset("train_set_x", (m, *IMAGE_SHAPE), np.uint8)  # contiguous
            f["train_set_y"] = labels.astype(np.int64)
            f["list_classes"] = np.array([b"non-cat", b"cat"])
            if names:
                f.create_dataset("names", data=names, dtype=h5py.string_dtype("utf-8"))
            show = progress is not False and (progress or sys.stderr.isatty())
            with tqdm(total=m, unit="img", desc=f"prepare {source.name}", disable=not show) as bar:
                for k, images in blocks:
                    x[k : k + len(images)] = np.asarray(images).reshape(-1, *IMAGE_SHAPE)
                    bar.update(len(images))
    return m


def _h5_blocks(data, block: int = 4096):
    """(first index, uint8 images) of an h5 data set, in blocks of whole chunks."""
    if isinstance(data.images, np.ndarray):  # read whole (not uint8): as 8-bit images
        yield 0, data.images
        return
    block = -(-block // data.chunk_rows) * data.chunk_rows
    for a in range(0, data.n_examples, block):
        yield a, data.read(np.arange(a, min(a + block, data.n_examples)))[0]


def _images(paths: list[str], jobs: int | None):
    """The decoded images of the files, in order; the first that fails stops all."""
    for image, error in _decoded(paths, max(1, jobs or os.cpu_count() or 1)):
        if error:
            raise GpucatError(error)
        yield image


def _decoded(paths: list[str], jobs: int):
    """The decoded images in order: in this process (jobs 1) or a pool of ``jobs``."""
    if jobs == 1:
        yield from map(_decode, paths)
        return
    import multiprocessing

    ctx = multiprocessing.get_context("spawn" if sys.platform == "darwin" else "fork")
    with ctx.Pool(jobs) as pool:
        yield from pool.imap(_decode, paths, chunksize=max(1, min(64, len(paths) // (8 * jobs))))
