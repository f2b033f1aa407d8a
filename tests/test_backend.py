"""The device shim without a GPU, through a stand-in CuPy: which device each request opens,
and the probe that accepts a GPU only once it has computed the right numbers."""

from __future__ import annotations

import sys

import cupy_standin
import pytest

from gpucat import backends
from gpucat.cli import main


@pytest.fixture
def gpus(monkeypatch):
    """install(**kw) puts a stand-in CuPy (fake_cupy's arguments) in place of the real one."""

    def install(count=1, **kw):
        fake = cupy_standin.make(count, **kw)
        cupy_standin.install(fake, monkeypatch.setitem)
        backends.forget_gpus()
        return fake

    yield install
    backends.forget_gpus()


def test_auto_on_a_rank_opens_only_that_ranks_gpu(gpus):
    """`--device auto` on data-parallel rank 2 must not open a context on GPU 0 first."""
    fake = gpus(4)
    b = backends.get_device("auto", gpu_index=2)
    assert b.name == "cupy" and b.label == "GPU 2 (CuPy stand-in (no GPU))"
    assert fake.opened == [2]


def test_more_ranks_than_gpus_share_them_round_robin(gpus):
    gpus(2)
    assert backends.get_device("gpu", gpu_index=3).label == "GPU 1 (CuPy stand-in (no GPU))"


@pytest.mark.parametrize("alias, name", [("numpy", "numpy"), ("cupy", "cupy"), ("CUDA", "cupy")])
def test_backend_names_select_their_backend(gpus, alias, name):
    gpus(1)
    b = backends.get_device(alias)
    assert b.name == name and backends.get_device(b.flag) is b


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
    why = backends.why_no_gpu()
    assert why is not None and message in why
    assert backends.get_device("auto").name == "numpy"
    with pytest.raises(backends.GpucatError, match="no usable GPU"):
        backends.get_device("gpu")
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
    backends.forget_gpus()
    try:
        assert backends.fallback_note() is None
        assert main(["train", "--iterations", "1", "--layers", "12288,2,1"]) == 0
    finally:
        backends.forget_gpus()
    assert "gpucat: note" not in capsys.readouterr().err


def test_free_memory_counts_the_blocks_cupys_pool_keeps(gpus):
    """Memory an earlier fit left in CuPy's pool is free to this process: the driver's
    figure plus the pool's unused bytes, so that solver choice and the memory check do not
    depend on what ran before."""
    fake = gpus(memory=(13 * 2**30, 80 * 2**30), pooled=3 * 2**30)
    assert fake.cuda.runtime.memGetInfo()[0] == 10 * 2**30  # the pool's blocks are taken
    assert backends.get_device("gpu").free_memory() == 13 * 2**30


def test_predict_on_auto_says_why_its_gpu_is_not_used(gpus, capsys, zero_model, monkeypatch):
    """The CLI's devices come through one door (gpucat.cli.get_device): GPU 0 probed, and
    its fallback said as a note, for predict as for train."""
    import json

    from conftest import data_file

    gpus(2, gemm="raise")
    monkeypatch.delenv("GPUCAT_DEVICE", raising=False)
    photo = str(data_file("photos/coffee.png"))
    assert main(["predict", "--model", str(zero_model), photo, "--json"]) == 0
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.startswith(
        "gpucat: note: the GPU is not used, training runs on the CPU: a float64 matrix product "
        "(cuBLAS) failed on CUDA device 0"
    )
    assert json.loads(out.splitlines()[-1])["device"] == backends.get_device("cpu").label
