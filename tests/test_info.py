"""`gpucat info`: the facts a bug report needs, read from the machine (and from a stand-in
CuPy for the GPU part on machines without one)."""

from __future__ import annotations

import json
import sys

import cupy_standin
import numpy as np
import pytest

from gpucat import backends
from gpucat.cli import main

from conftest import run_gpucat


def info_json(capsys) -> dict:
    assert main(["info", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def cupy_as(monkeypatch):
    def install(module):
        cupy_standin.install(module, monkeypatch.setitem)
        backends.forget_gpus()

    yield install
    backends.forget_gpus()


def test_info_reports_this_machine():
    """In a fresh process, without CuPy: versions equal to what the packages say, the BLAS
    NumPy runs on, and the reason no GPU is usable."""
    import mpi4py
    import threadpoolctl

    out = run_gpucat("info", "--json", hide_cupy=True)
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["python"] == ".".join(map(str, sys.version_info[:3]))
    assert info["numpy"] == np.__version__
    # the BLAS libraries NumPy loaded (this test process may hold more, SciPy's among them)
    blas = [d for d in threadpoolctl.threadpool_info() if d["user_api"] == "blas"]
    assert info["blas"] and {b["path"] for b in info["blas"]} <= {d["filepath"] for d in blas}
    assert all(b["library"] in ("openblas", "mkl", "blis", "accelerate") for b in info["blas"])
    assert all(isinstance(b["threads"], int) and b["threads"] >= 1 for b in info["blas"])
    assert info["cupy"] is None and info["gpus"] == [] and info["gpu_usable"] is False
    assert "CuPy is not installed" in info["gpu_reason"]
    assert info["mpi4py"] == mpi4py.__version__ and info["mpi_library"].startswith("MPICH")
    assert info["mpi_cuda_aware"] is False
    assert info["packages"]["h5py"] and info["packages"]["safetensors"]


def test_info_reports_each_gpu_with_its_memory_and_the_probe(cupy_as, capsys):
    cupy_as(cupy_standin.make(2, memory=(3 * 2**30, 80 * 2**30)))
    info = info_json(capsys)
    assert info["cupy"] == "14.2.0"
    assert (info["cuda_runtime"], info["cuda_driver"], info["nvrtc"]) == ("12.8", "13.0", "12.9")
    assert info["cuda_runtime_built"] == "12.9"  # runtimeGetVersion: what CuPy was built for
    assert [g["index"] for g in info["gpus"]] == [0, 1]
    g = info["gpus"][0]
    assert g["name"] == "CuPy stand-in (no GPU)" and g["compute_capability"] == "9.0"
    assert (g["memory_free_bytes"], g["memory_total_bytes"]) == (3 * 2**30, 80 * 2**30)
    assert g["usable"] is True and g["reason"] is None and info["gpu_usable"] is True
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    assert (
        "GPU 0             CuPy stand-in (no GPU), compute capability 9.0, 3.0 GiB free of 80.0 GiB"
        in text
    )
    assert "GPU usable        yes" in text


@pytest.mark.parametrize(
    "fake, reason",
    [
        (dict(gemm="raise"), "a float64 matrix product (cuBLAS) failed"),
        (dict(kernel="raise"), "an element-wise kernel (NVRTC) failed"),
        (dict(version="13.2.0"), "gpucat needs CuPy 14 or newer"),
        (dict(count=RuntimeError("cudaErrorNoDevice")), "the CUDA driver did not answer"),
    ],
)
def test_info_says_why_a_gpu_is_not_usable(cupy_as, capsys, fake, reason):
    cupy_as(cupy_standin.make(**fake))
    info = info_json(capsys)
    assert info["gpu_usable"] is False and reason in info["gpu_reason"]
    if "version" in fake:
        assert info["cupy"] == "13.2.0"
    assert main(["info"]) == 0
    assert "GPU usable        no: " in capsys.readouterr().out
