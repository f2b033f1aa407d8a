"""The backend shim without a GPU, through a stand-in CuPy: which device each request opens,
and the probe that accepts a GPU only once it has computed the right numbers."""

from __future__ import annotations

import sys

import pytest

from gpucat import backend as backend_mod
from gpucat.cli import main

from fake_cupy import fake_cupy


@pytest.fixture
def gpus(monkeypatch):
    """install(**kw) puts a stand-in CuPy (fake_cupy's arguments) in place of the real one."""

    def install(count=1, **kw):
        fake = fake_cupy(count, **kw)
        monkeypatch.setitem(sys.modules, "cupy", fake)
        backend_mod._cupy_backend.cache_clear()
        return fake

    yield install
    backend_mod._cupy_backend.cache_clear()


def test_auto_on_a_rank_opens_only_that_ranks_gpu(gpus):
    """`--device auto` on data-parallel rank 2 must not open a context on GPU 0 first."""
    fake = gpus(4)
    b = backend_mod.get_backend("auto", gpu_index=2)
    assert b.name == "cupy" and b.label == "GPU 2 (Fake GPU)"
    assert fake.opened == [2]


def test_more_ranks_than_gpus_share_them_round_robin(gpus):
    gpus(2)
    assert backend_mod.get_backend("gpu", gpu_index=3).label == "GPU 1 (Fake GPU)"


@pytest.mark.parametrize("alias, name", [("numpy", "numpy"), ("cupy", "cupy"), ("CUDA", "cupy")])
def test_backend_names_select_their_backend(gpus, alias, name):
    gpus(1)
    b = backend_mod.get_backend(alias)
    assert b.name == name and backend_mod.get_backend(b.flag) is b


@pytest.mark.parametrize(
    "broken, message",
    [
        (dict(kernel="raise"), "an element-wise kernel (NVRTC) failed on CUDA device 0"),
        (
            dict(kernel="wrong"),
            "an element-wise kernel (NVRTC) on CUDA device 0 gave wrong numbers",
        ),
        (dict(gemm="raise"), "a float64 matrix product (cuBLAS) failed on CUDA device 0"),
        (dict(gemm="wrong"), "a float64 matrix product (cuBLAS) on CUDA device 0 gave wrong"),
        # exact means exact: a product off by rounding-sized errors is refused too
        (dict(gemm="rounding"), "a float64 matrix product (cuBLAS) on CUDA device 0 gave wrong"),
        (dict(version="13.6.0"), "CuPy 13.6.0 is installed, gpucat needs CuPy 14 or newer"),
    ],
)
def test_probe_refuses_a_gpu_that_does_not_compute(gpus, capsys, broken, message):
    """A CuPy whose kernels cannot compile (no NVRTC), whose products fail or are wrong (no
    cuBLAS), or that is older than 14, is refused: `gpu` says why in one message, exit 2,
    and `auto` trains on the CPU with that reason in one line."""
    gpus(1, **broken)
    why = backend_mod.why_no_gpu()
    assert why is not None and message in why
    assert backend_mod.get_backend("auto").name == "numpy"
    with pytest.raises(backend_mod.GpucatError, match="no usable GPU"):
        backend_mod.get_backend("gpu")
    assert main(["train", "--device", "gpu", "--iterations", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "Traceback" not in err
    if "version" not in broken:
        assert "cupy-cuda12x[ctk]" in err  # what to install


def test_auto_says_in_one_line_why_the_gpu_is_not_used(gpus, capsys, tmp_path):
    gpus(1, gemm="raise")
    assert main(["train", "--iterations", "2", "--layers", "12288,2,1", "--json"]) == 0
    captured = capsys.readouterr()
    notes = [line for line in captured.err.splitlines() if line.startswith("gpucat: note:")]
    assert len(notes) == 1 and "training runs on the CPU" in notes[0]
    assert "cuBLAS" in notes[0]
    assert '"backend": "numpy"' in captured.out.splitlines()[-1]


def test_auto_stays_quiet_where_no_gpu_is_expected(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "cupy", None)
    monkeypatch.setenv("PATH", "/nonexistent")
    backend_mod._cupy_backend.cache_clear()
    try:
        assert backend_mod.fallback_note() is None
        assert main(["train", "--iterations", "1", "--layers", "12288,2,1"]) == 0
    finally:
        backend_mod._cupy_backend.cache_clear()
    assert "gpucat: note" not in capsys.readouterr().err


def test_free_memory_counts_the_blocks_cupys_pool_keeps():
    """Memory an earlier fit left in CuPy's pool is free to this process: the driver's
    figure plus the pool's unused bytes, so that solver choice and the memory check do not
    depend on what ran before."""
    fake = fake_cupy(memory=(10 * 2**30, 80 * 2**30), pooled=3 * 2**30)
    gpu = backend_mod.Backend("cupy", fake, fake.cuda.Device(0), "GPU 0 (Fake GPU)")
    assert gpu.free_memory() == 13 * 2**30
