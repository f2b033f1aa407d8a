"""Every input format, to one host ``Dataset``: course h5, the original CSV, images, folders.

``load_input(path)`` tells the format from the path and the content. Each loader checks
what it reads (shape, dtype, label values, counts, finite pixels) and raises a GpucatError
naming the file, what is wrong and what to do.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from gpucat.data.dataset import IMAGE_SHAPE, N_FEATURES, Dataset, check_labels
from gpucat.data.h5 import HDF5_SIGNATURE, load_h5
from gpucat.data.streaming import open_h5
from gpucat.errors import GpucatError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
CAT_DIRS = ("cat", "cats")
NONCAT_DIRS = ("non-cat", "noncat", "non_cat", "non-cats", "noncats")


CSV_BLOCK = 256  # rows parsed at a time: memory holds one block of floats, the rest as uint8


def load_csv(path: str | os.PathLike, require_labels: bool = True) -> Dataset:
    """The original program's CSV: header 0..12287,y; one image per row, the label last.

    Read in blocks of rows, each checked and kept as uint8 when its values are whole (they
    are 0..255 pixels), so a large file never sits in memory as text or as float64."""
    path = Path(path)
    if not path.is_file():
        raise GpucatError(f"{path}: no such file.")
    with open(path, encoding="utf-8", errors="replace") as f:
        header = [h.strip() for h in f.readline().split(",")]
        if header == [""]:
            raise GpucatError(f"{path}: the file is empty.")
        pixels = [str(i) for i in range(N_FEATURES)]
        has_y = header == [*pixels, "y"]
        if not has_y and header != pixels:
            raise GpucatError(
                f"{path}: not a gpucat CSV: its header has {len(header)} columns ending in "
                f"{header[-1][:20]!r}; expected 0,1,...,{N_FEATURES - 1},y (12,288 pixel "
                "columns, then the label y)."
            )
        if not has_y and require_labels:
            raise GpucatError(
                f"{path}: the CSV has no 'y' column, so there are no labels to evaluate "
                "against; add the label column (1 cat, 0 non-cat) or use `gpucat predict`."
            )
        n_cols = N_FEATURES + int(has_y)
        blocks, labels, lines = [], [], []
        block: list[tuple[int, str]] = []
        for number, line in enumerate(f, start=2):
            if line.strip():
                block.append((number, line))
            if len(block) == CSV_BLOCK:
                blocks.append(_csv_block(path, block, n_cols, labels, lines))
                block = []
        if block:
            blocks.append(_csv_block(path, block, n_cols, labels, lines))
    if not blocks:
        raise GpucatError(f"{path}: the CSV has a header but no rows.")
    whole = all(b.dtype == np.uint8 for b in blocks)
    rows = np.concatenate(blocks if whole else [b.astype(np.float32) for b in blocks])
    Y = check_labels(np.asarray(labels), rows.shape[0], path) if has_y else None
    names = [f"{path.name}:row{n}" for n in lines]
    return Dataset(rows, Y, str(path), names=names, divisor=255.0)


def _csv_block(path: Path, block, n_cols: int, labels: list, lines: list) -> np.ndarray:
    """One block of CSV rows, checked: pixel rows as uint8 (float32 if not whole numbers)."""
    try:
        values = np.loadtxt(io.StringIO("".join(t for _, t in block)), delimiter=",", ndmin=2)
    except ValueError:
        raise GpucatError(_first_bad_cell(path, block, n_cols)) from None
    if values.shape[1] != n_cols:
        raise GpucatError(f"{path}: rows have {values.shape[1]} values, expected {n_cols}.")
    px = values[:, :N_FEATURES]
    if not np.isfinite(px).all():
        r, c = np.argwhere(~np.isfinite(px))[0]
        raise GpucatError(
            f"{path}: row {block[r][0]}, column {c}: pixel is {px[r, c]}; pixels must be "
            "finite 0..255."
        )
    if px.min() < 0 or px.max() > 255:
        r, c = np.argwhere((px < 0) | (px > 255))[0]
        raise GpucatError(
            f"{path}: row {block[r][0]}, column {c}: pixel {px[r, c]:g} is outside 0..255."
        )
    if n_cols > N_FEATURES:
        labels.extend(values[:, N_FEATURES].tolist())
    lines.extend(n for n, _ in block)
    return px.astype(np.uint8) if np.array_equal(px, np.round(px)) else px.astype(np.float32)


def _first_bad_cell(path: Path, block, n_cols: int) -> str:
    for r, line in block:
        cells = line.rstrip("\r\n").split(",")
        if len(cells) != n_cols:
            return f"{path}: line {r} has {len(cells)} values, expected {n_cols}."
        for c, cell in enumerate(cells):
            try:
                float(cell)
            except ValueError:
                col = "y" if c == N_FEATURES else str(c)
                return (
                    f"{path}: line {r}, column {col}: {cell.strip()[:30]!r} is not a number; "
                    "every cell must be a pixel value 0..255 (or the label 0/1)."
                )
    return f"{path}: the CSV could not be parsed as numbers."


# Pillow modes whose values are not 8-bit: what full scale means for each
_WIDE_MODES = {"I;16": 65535.0, "I;16L": 65535.0, "I;16B": 65535.0, "I;16N": 65535.0, "I": 65535.0}


def as_rgb8(im):
    """Any Pillow image -> 8-bit RGB by what its values mean, never by clipping: 16-bit and
    32-bit integer gray scaled from 0..65535, float gray from [0, 1] (or from 0..255, or
    0..65535, when its values exceed 1, or 255), transparency (alpha, associated alpha,
    palette or colour key) composited over white."""
    from PIL import Image

    if im.mode in _WIDE_MODES or im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        if not np.isfinite(a).all():
            raise ValueError("the image holds NaN or infinite values")
        if im.mode == "F":  # [0, 1], else 8-bit values, else 16-bit values stored as floats
            top = a.max(initial=0.0)
            full = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
        else:
            full = _WIDE_MODES[im.mode]
        gray = np.clip(np.round(a * (255.0 / full)), 0, 255).astype(np.uint8)
        return Image.fromarray(np.repeat(gray[:, :, None], 3, axis=2), "RGB")
    if im.mode == "La":  # gray with associated alpha (a TIFF): Pillow converts it to LA only
        im = im.convert("LA")
    if im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return im.convert("RGB")


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Any image Pillow reads -> RGB uint8 (64, 64, 3): EXIF-upright, 8-bit by what its
    values mean (``as_rgb8``), center-cropped to a square, then resized with a Lanczos
    filter. A file that is not a readable image, or a decompression bomb, is a GpucatError."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise GpucatError(f"{path}: no such file.")
    try:
        with Image.open(path) as im:
            im = as_rgb8(ImageOps.exif_transpose(im))
            im = ImageOps.fit(im, IMAGE_SHAPE[:2], Image.Resampling.LANCZOS)
            return np.asarray(im, dtype=np.uint8)
    except Image.DecompressionBombError as e:
        raise GpucatError(
            f"{path}: refused as a possible decompression bomb ({e}); shrink the image first."
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise GpucatError(
            f"{path}: not a readable image ({e}); replace or remove it (PNG and JPEG work)."
        ) from None


def _image_files(folder: Path) -> list[Path]:
    """The image files of a folder, by suffix, sorted; hidden files (macOS ``._*`` and
    ``.DS_Store``, editors' ``.*``) and anything that is not an image are skipped."""
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
    )


def folder_files(folder: Path) -> list[tuple[Path, float | None]]:
    """(image file, label) of a folder: 1.0 for cat/, 0.0 for non-cat/ (any letter case);
    without those subfolders, the folder's own images with no label."""
    subs = {
        p.name.lower(): p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")
    }
    cat = next((subs[n] for n in CAT_DIRS if n in subs), None)
    non = next((subs[n] for n in NONCAT_DIRS if n in subs), None)
    if not (cat or non):
        return [(p, None) for p in _image_files(folder)]
    files = [(p, 1.0) for p in (_image_files(cat) if cat else [])]
    return files + [(p, 0.0) for p in (_image_files(non) if non else [])]


def load_folder(folder: str | os.PathLike) -> Dataset:
    """cat/ and non-cat/ subfolders give labelled data; otherwise the images in the folder."""
    folder = Path(folder)
    files = folder_files(folder)
    if not files:
        raise GpucatError(
            f"{folder}: no images found; put PNG/JPEG files in it, or in cat/ and non-cat/ "
            "subfolders for labelled data."
        )
    images = np.stack([load_image(p) for p, _ in files])
    labels = [y for _, y in files]
    Y = None if labels[0] is None else np.asarray(labels, dtype=np.float64).reshape(1, -1)
    names = [str(p.relative_to(folder)) for p, _ in files]
    return Dataset(images.reshape(len(files), -1), Y, str(folder), names=names)


def load_input(path: str | os.PathLike, require_labels: bool = False, stream: bool = False):
    """One file or folder in any supported format. ``stream``: an h5 of uint8 images stays
    on disk and is read as it is used (streaming.H5Source); everything else is read whole."""
    path = Path(path)
    if path.is_dir():
        ds = load_folder(path)
    elif not path.exists():
        raise GpucatError(f"{path}: no such file or folder.")
    else:
        suffix = path.suffix.lower()
        with open(path, "rb") as f:
            head = f.read(8)
        if suffix in (".h5", ".hdf5") or head.startswith(HDF5_SIGNATURE):
            ds = open_h5(path) if stream else load_h5(path)
        elif suffix == ".csv":
            ds = load_csv(path, require_labels=require_labels)
        elif suffix in IMAGE_SUFFIXES:
            ds = Dataset(load_image(path).reshape(1, -1), None, str(path), names=[path.name])
        else:
            raise GpucatError(
                f"{path}: unknown input format; give a course .h5 file, the original program's "
                ".csv, an image (PNG, JPEG, ...) or a folder of images."
            )
    if require_labels and ds.Y is None:
        raise GpucatError(
            f"{path}: these inputs carry no labels; evaluation needs labelled data (an .h5 "
            "file, a CSV with a 'y' column, or cat/ and non-cat/ subfolders)."
        )
    return ds
