"""Downloading the course data with pooch, verified against pinned SHA-256 checksums."""

from __future__ import annotations

import os
from pathlib import Path

from gpucat.data import SHA256, TEST_FILE, TRAIN_FILE, resolve_data_dir
from gpucat.errors import GpucatError

__all__ = ["SHA256", "base_urls", "fetch_data", "fetch_file"]
# Pinned commits: the bytes behind these addresses cannot change.
BASE_URLS = (
    "https://raw.githubusercontent.com/Hiren2002/Logistic-Regression/"
    "a6139a838a0e624f4ab923377df0c5d3386fdf1f/datasets/",
    "https://raw.githubusercontent.com/ramakris/coursera-deeplearning/"
    "c79617ebb9ff38e765e821f80352adee93f19357/neuralnetworks/week4/datasets/",
)


def base_urls() -> tuple[str, ...]:
    """GPUCAT_DATA_URL (a mirror of your own) replaces the public addresses when set."""
    env = os.environ.get("GPUCAT_DATA_URL")
    return (env.rstrip("/") + "/",) if env else BASE_URLS


def fetch_file(name: str, dest: Path, urls: tuple[str, ...], progress: bool = False) -> Path:
    """Download one file into dest, trying each base URL in turn; verify its SHA-256.

    pooch writes to a temporary file and moves it into place only once the checksum
    matches, so a corrupted or truncated download is never kept.
    """
    import pooch

    errors = []
    for base in urls:
        try:
            path = pooch.retrieve(
                base + name,
                known_hash=f"sha256:{SHA256[name]}",
                fname=name,
                path=dest,
                progressbar=progress,
            )
            return Path(path)
        except Exception as e:  # network errors, HTTP errors, checksum mismatch: try the next
            errors.append(f"{base + name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    raise GpucatError(
        f"{dest / name}: could not download a verified copy:\n  "
        + "\n  ".join(errors)
        + f"\nDownload {name} by hand (SHA-256 {SHA256[name]}) into {dest}, "
        "or pass --data-dir / set GPUCAT_DATA_DIR to a folder that has it."
    )


def fetch_data(data_dir: str | os.PathLike | None = None, progress: bool = True) -> Path:
    """Make sure both course files are in the data folder, downloading what is missing."""
    dest = resolve_data_dir(data_dir)
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GpucatError(f"{dest}: cannot create the data folder ({e}).") from None
    urls = base_urls()
    for name in (TRAIN_FILE, TEST_FILE):
        fetch_file(name, dest, urls, progress=progress and _have_tqdm())
    return dest


def _have_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True
