"""Shared fixtures: every available backend as a parameter, tolerances by dtype, the data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from gpucat import backend as backend_mod
from gpucat.data import TEST_FILE, TRAIN_FILE, load_course_data

# Norm-wise relative error allowed against the NumPy float64 reference: float64 keeps about
# 16 digits, and sums over the 12288 inputs lose a few; float32 keeps about 7 and loses
# about two more over the same sums.
RTOL = {"float64": 1e-12, "float32": 1e-5}

BACKENDS = ["numpy", "strict", "cupy"]


def _make_backend(name: str) -> backend_mod.Backend:
    if name == "numpy":
        return backend_mod.get_backend("cpu")
    if name == "strict":
        pytest.importorskip("array_api_strict", reason="array-api-strict is a test dependency")
        return backend_mod.get_backend("strict")
    if not backend_mod.gpu_available():
        try:
            backend_mod.get_backend("gpu")
        except Exception as e:  # the shim's own words say why
            pytest.skip(f"CuPy backend unavailable: {e}")
    return backend_mod.get_backend("gpu")


@pytest.fixture(params=BACKENDS)
def backend(request) -> backend_mod.Backend:
    """NumPy always; array-api-strict on its non-default device; CuPy when a GPU is usable."""
    return _make_backend(request.param)


@pytest.fixture(params=["float64", "float32"])
def dtype(request) -> str:
    return request.param


def rel_err(a, b) -> float:
    """Norm-wise relative error of a against reference b (host arrays or floats)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (scale if scale > 0 else 1.0))


def data_dir() -> Path:
    d = os.environ.get("GPUCAT_DATA_DIR")
    if d:
        return Path(d)
    return Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="session")
def course_data():
    """The real training and test sets; missing data is a failure, not a skip."""
    d = data_dir()
    if not (d / TRAIN_FILE).is_file() or not (d / TEST_FILE).is_file():
        pytest.fail(
            f"course data not found in {d}: set GPUCAT_DATA_DIR to a folder holding "
            f"{TRAIN_FILE} and {TEST_FILE}, or run `gpucat fetch-data`."
        )
    return load_course_data(d)
