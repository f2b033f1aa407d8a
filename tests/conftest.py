"""Shared fixtures: every available device as a parameter, tolerances by dtype, the data."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import settings

from gpucat import backends
from gpucat.data.course import TEST_FILE, TRAIN_FILE, load_course_data

# hypothesis: by default a fixed set of examples (derandomized, no database written), the
# same in every run; HYPOTHESIS_PROFILE=explore draws new ones, many more (docs/testing.md)
settings.register_profile("ci", max_examples=30, derandomize=True, database=None, deadline=None)
settings.register_profile("explore", max_examples=500, database=None, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

# Norm-wise relative error allowed against the NumPy float64 reference: float64 keeps about
# 16 digits, and sums over the 12288 inputs lose a few; float32 keeps about 7 and loses
# about two more over the same sums.
RTOL = {"float64": 1e-12, "float32": 1e-5}

# On a GPU machine a CuPy parameter that cannot run is a broken install, not a pass:
# GPUCAT_REQUIRE_GPU=1 (set by checks/gpu_check.sh) turns it into a failure, and refuses the
# stand-in.
REQUIRE_GPU = os.environ.get("GPUCAT_REQUIRE_GPU", "") not in ("", "0")
# Without a usable GPU, CuPy's parameter runs on the stand-in (tests/cupy_standin), and its
# id says so: "cupy-standin". The reason no GPU is used is the probe's own words.
NO_GPU = backends.why_no_gpu()
CUPY = "cupy" if NO_GPU is None or REQUIRE_GPU else "cupy-standin"
DEVICES = ["numpy", "strict", CUPY]

# The nox sessions test the installed wheel (GPUCAT_WHEEL names it): importing the source
# tree instead would test what the wheel may lack, so it stops the run.
_TREE = Path(__file__).resolve().parent.parent / "gpucat"
if os.environ.get("GPUCAT_WHEEL") and Path(backends.__file__).resolve().parent.parent == _TREE:
    pytest.exit(f"GPUCAT_WHEEL is set but the tests import gpucat from {_TREE}", returncode=2)


def pytest_report_header(config) -> list[str]:
    if CUPY == "cupy":
        return [f"gpucat: CuPy on {backends.get_device('gpu').label}" if NO_GPU is None
                else f"gpucat: GPUCAT_REQUIRE_GPU is set and no GPU is usable: {NO_GPU}"]  # fmt: skip
    return [
        "gpucat: NO GPU RAN. The CuPy parameters run on the CuPy stand-in (tests/cupy_standin: "
        "CuPy 14's rules, kernels compiled for the host by g++), because: " + NO_GPU
    ]


def standin_gpu(monkeypatch, **faults) -> backends.Device:
    """The CuPy device on a fresh stand-in (``faults``: cupy_standin.make's), undone after
    the test."""
    import cupy_standin

    module = cupy_standin.make(**faults)
    cupy_standin.install(module, monkeypatch.setitem)
    backends.forget_gpus()
    return backends.get_device("gpu")


# Python lines that give a fresh process a CuPy stand-in of its own, installed before
# anything imports cupy
STANDIN = (
    f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); "
    "import cupy_standin; cupy_standin.install(cupy_standin.make()); sys.path.pop(0)\n"
)


def same_device_in(device: backends.Device) -> str:
    """Python lines that give a fresh process this device (on the stand-in: STANDIN)."""
    import cupy_standin

    return STANDIN if cupy_standin.is_standin(device.xp) else ""


@pytest.fixture(params=DEVICES)
def device(request, monkeypatch) -> backends.Device:
    """NumPy always; array-api-strict on its non-default device; CuPy on the GPU, else on the
    CuPy stand-in."""
    name = request.param
    if name == "numpy":
        return backends.get_device("cpu")
    if name == "strict":
        return backends.get_device("strict")
    request.addfinalizer(backends.forget_gpus)
    if name == "cupy-standin":
        return standin_gpu(monkeypatch)
    try:
        return backends.get_device("gpu")
    except backends.GpucatError as e:  # REQUIRE_GPU without a usable GPU
        pytest.fail(f"GPUCAT_REQUIRE_GPU is set but the cupy device is unavailable: {e}")


@pytest.fixture(params=["float64", "float32"])
def dtype(request) -> str:
    return request.param


def rel_err(a, b) -> float:
    """Norm-wise relative error of a against reference b (host arrays or floats)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    scale = np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / (scale if scale > 0 else 1.0))


def assert_matches_central_differences(params, grads, J, h: float = 1e-6) -> None:
    """Every (dW, db) of grads against (J(p + h) - J(p - h)) / 2h, float64. Central
    differences err by O(h^2) plus rounding of order eps/h ~ 1e-10, so 1e-7 relative is a
    safe bound."""
    for layer, (dW, db) in zip(params, grads):
        for P, dP in ((layer.W, dW), (layer.b, db)):
            numeric = np.zeros_like(P)
            for idx in np.ndindex(P.shape):
                old = P[idx]
                P[idx] = old + h
                up = J()
                P[idx] = old - h
                numeric[idx] = (up - J()) / (2 * h)
                P[idx] = old
            assert rel_err(dP, numeric) < 1e-7


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


FIXTURES = Path(__file__).resolve().parent / "fixtures"


def data_file(relative: str) -> Path:
    """A test file: ``catvnoncat/NAME`` is a course file of the data folder, anything else
    lies in tests/fixtures (GPUCAT_SHARED_DATA points at another copy of that layout)."""
    if relative.startswith("catvnoncat/"):
        p = data_dir() / relative.split("/", 1)[1]
    else:
        p = Path(os.environ.get("GPUCAT_SHARED_DATA") or FIXTURES) / relative
    if not p.exists():
        pytest.fail(f"{p} not found: tests/fixtures is part of the repository; restore it.")
    return p


def run_gpucat(*args: str, env_extra: dict | None = None, hide_cupy: bool = False):
    """Run gpucat in a fresh process; hide_cupy makes `import cupy` fail there."""
    env = {**os.environ, "GPUCAT_DATA_DIR": str(data_dir()), **(env_extra or {})}
    code = "import sys\n"
    if hide_cupy:
        code += "sys.modules['cupy'] = None\n"
    code += f"from gpucat.cli import main\nsys.exit(main({list(args)!r}))\n"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)


@pytest.fixture(scope="session")
def zero_model(tmp_path_factory) -> Path:
    """A one-layer model of zeros saved as safetensors: p(cat) = 0.5 exactly for any input."""
    from gpucat.modelfiles import model as models

    path = tmp_path_factory.mktemp("model") / "zero.safetensors"
    models.save_model(path, models.Model([(np.zeros((1, 12288)), np.zeros((1, 1)))]))
    return path


@pytest.fixture(scope="session")
def trained_model(tmp_path_factory, course_data) -> Path:
    """The reference recipe (float64, gram) saved as safetensors."""
    from gpucat.backends import get_device
    from gpucat.config import TrainConfig
    from gpucat.modelfiles import model as models
    from gpucat.nn.network import params_to_host
    from gpucat.training.loop import fit

    cpu = get_device("cpu")
    train, _ = course_data
    result = fit(cpu, TrainConfig(dtype="float64"), train)
    path = tmp_path_factory.mktemp("model") / "reference.safetensors"
    models.save_model(path, models.Model(params_to_host(cpu, result.params), {"note": "test"}))
    return path
