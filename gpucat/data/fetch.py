"""Downloading the course data with pooch, verified against pinned SHA-256 checksums."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gpucat.data.course import SHA256, TEST_FILE, TRAIN_FILE, sha256_of
from gpucat.errors import GpucatError
from gpucat.files import replacing

__all__ = ["SHA256", "base_urls", "cache_dir", "fetch_data", "fetch_file"]
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


def cache_dir() -> Path:
    """Where `gpucat fetch-data` puts its copies by default: the platform's user cache folder
    (``~/.cache/gpucat`` on Linux, honouring XDG_CACHE_HOME), never the installed package."""
    import pooch

    return Path(pooch.os_cache("gpucat"))


def fetch_file(name: str, dest: Path, urls: tuple[str, ...], progress: bool = False) -> Path:
    """Download one file into dest, trying each base URL in turn; verify its SHA-256.

    The download goes to a temporary folder inside dest and replaces dest/name only once its
    checksum matches, so a corrupted or truncated download is never kept, and a good copy
    already there survives a failed one.
    """
    import pooch

    errors = []
    with tempfile.TemporaryDirectory(dir=dest, prefix=".download-") as tmp:
        for base in urls:
            try:
                got = pooch.retrieve(
                    base + name,
                    known_hash=f"sha256:{SHA256[name]}",
                    fname=name,
                    path=tmp,
                    progressbar=progress,
                )
            except Exception as e:  # network errors, HTTP errors, checksum mismatch: try the next
                reason = " ".join(str(e).split()) or "no reason given"
                errors.append(f"{base + name}\n    {type(e).__name__}: {reason}")
                continue
            with replacing(dest / name) as final:
                os.replace(got, final)
            return dest / name
    raise GpucatError(
        f"{dest / name}: could not download a verified copy from any address:\n  "
        + "\n  ".join(errors)
        + f"\nDownload {name} by hand (SHA-256 {SHA256[name]}) into {dest}, "
        "or pass --data-dir / set GPUCAT_DATA_DIR to a folder that has it."
    )


def fetch_data(
    data_dir: str | os.PathLike | None = None, progress: bool = True, force: bool = False
) -> tuple[Path, list[str]]:
    """Make sure both course files are in ``data_dir`` (default: ``cache_dir()``), verified,
    downloading those that are missing or damaged, or both anew with ``force``. Returns the
    folder and, per file, what was done ("downloaded" or "verified")."""
    dest = Path(data_dir) if data_dir else cache_dir()
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise GpucatError(f"{dest}: cannot create the data folder ({e}).") from None
    urls, done = base_urls(), []
    for name in (TRAIN_FILE, TEST_FILE):
        path = dest / name
        if not force and path.is_file() and sha256_of(path) == SHA256[name]:
            done.append("verified")
            continue
        fetch_file(name, dest, urls, progress=progress and _have_tqdm())
        done.append("downloaded")
    return dest, done


def _have_tqdm() -> bool:
    try:
        import tqdm  # noqa: F401
    except ImportError:
        return False
    return True
