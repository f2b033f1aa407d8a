"""Files gpucat writes, written one way: into a temporary file beside the target, moved into
place by an atomic rename only when complete (a failure leaves the old file, or none), with
the permissions a plain ``open(path, "w")`` would give (0o666 less the umask), since the
temporary files that make this safe are created readable by their owner alone."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gpucat.errors import GpucatError


def umask() -> int:
    """The process's umask (read by setting it, then put back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def check_writable(*paths: str | os.PathLike | None) -> None:
    """Fail before long work when an output file's folder does not exist."""
    for p in paths:
        if p and not Path(p).resolve().parent.is_dir():
            raise GpucatError(f"{p}: the folder {Path(p).parent} does not exist; create it first.")


@contextmanager
def replacing(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path in ``path``'s folder to write; on leaving the block without an error
    it becomes ``path`` (mode 0o666 & ~umask), on an error it is removed."""
    path = Path(path)
    check_writable(path)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~umask())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to path atomically (see ``replacing``), synced to disk before the rename."""
    with replacing(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
