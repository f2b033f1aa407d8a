"""The course data: the published training and test files, where gpucat finds them (the
copies it carries, GPUCAT_DATA_DIR, --data-dir), each checked byte for byte before it is read."""

from __future__ import annotations

import os
from pathlib import Path

from gpucat.data.dataset import Dataset
from gpucat.data.h5 import FETCH_HINT, load_h5, not_hdf5_reason
from gpucat.errors import GpucatError

TRAIN_FILE = "train_catvnoncat.h5"
TEST_FILE = "test_catvnoncat.h5"
# The published course files (the same bytes at every pinned download address). The project
# ships them in data/; they are checked against these whenever they are loaded by name.
SHA256 = {
    TRAIN_FILE: "fbe56ab67c3ae28d564e3a644189117976d6b31af0a3ce9bb17dbf22908af242",
    TEST_FILE: "6a9d39ce52fa85953c5834695b8534a30ed8cfd54971fb2f080b5a24d002b951",
}


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
        why = not_hdf5_reason(path)
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
