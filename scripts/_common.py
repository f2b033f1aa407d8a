"""What the scripts share (each imports it by name: a script's own folder is on its path):
the project root, the machine's description for a result file, and the restart without the
OpenBLAS variables that pin older kernels than a user's machine would pick."""

from __future__ import annotations

import datetime
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def unpinned_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in BLAS_PINS}


def machine_info() -> dict:
    import numpy as np

    from gpucat.backends import available_devices

    info = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "devices": [b.label for b in available_devices()],
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            f"{d['internal_api']} {d['version']} {d.get('architecture')} x{d['num_threads']}"
            for d in threadpool_info()
            if d["user_api"] == "blas"
        ]
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def restart_unpinned() -> None:
    """Run this script again without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, where set: every
    side of a comparison then runs the kernels a user's machine would."""
    if any(k in os.environ for k in BLAS_PINS):
        os.execve(sys.executable, [sys.executable, *sys.argv], unpinned_env())
