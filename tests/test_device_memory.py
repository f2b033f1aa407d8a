"""What each device holds: the solvers' memory figures against what is measured (the host
devices through tracemalloc, the GPU's path through the CuPy stand-in's memory pool), and
what set-up leaves behind."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from gpucat.backends import get_device
from gpucat.config import TrainConfig
from gpucat.data.dataset import Dataset
from gpucat.training.loop import solver_for
from gpucat.training.solvers import DirectSolver, GramSolver

from conftest import standin_gpu

SMALL = 64 * 2**10  # labels, index arrays, Python objects: what a figure of arrays leaves out


def floats(M: int, n_x: int, seed: int = 0) -> Dataset:
    """M examples of n_x float64 features in [0, 1], taken as they are (divisor 1)."""
    rng = np.random.default_rng(seed)
    return Dataset(rng.random((M, n_x)), (rng.random((1, M)) > 0.5) * 1.0, "floats", divisor=1.0)


def set_up_peak(device, config, data) -> int:
    """Bytes held at the peak of solver_for's set-up: the stand-in pool's high-water mark on
    the GPU's path, tracemalloc's on the host."""
    if not device.host_memory:
        pool = device.xp.get_default_memory_pool()
        pool.free_all_blocks()
        solver_for(device, config, data)[0].close()
        return pool.total_bytes()
    tracemalloc.start()
    try:
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        solver_for(device, config, data)[0].close()
        return tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_float_rows_are_held_once_on_the_gpu(monkeypatch, dtype):
    """Rows that are floats already cross to the GPU once: in float64 they are the training
    data as they are (CuPy's astype copies even at the same dtype, so it is not called), in
    float32 one float32 copy is made beside them; the memory figure covers the peak and does
    not count what is not there."""
    gpu = standin_gpu(monkeypatch)
    data = floats(400, 600)
    config = TrainConfig(layers=(600, 8, 1), dtype=dtype, solver="direct", iterations=1)
    peak = set_up_peak(gpu, config, data)
    need = DirectSolver.memory(config, 400, 400, data, gpu, False)
    rows = data.rows.nbytes
    held = rows if dtype == "float64" else rows * 3 // 2  # float32: the copy is half as large
    assert held <= peak <= need + SMALL and need <= held * 1.05


@pytest.mark.parametrize("where", ["cpu", "gpu"])
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_gram_memory_covers_its_set_up_and_no_more(monkeypatch, where, dtype):
    """The Gram set-up's peak: G beside each feature block's M × M product and the float64
    block; the host's copy of the examples counts where device memory is host memory
    (NumPy), not on a GPU. Measured, it lies within 15% below the figure (and SMALL above): a
    figure without the product (a quarter of the peak here) or with the host rows on the GPU
    (a third of it, float64 rows) would fall outside."""
    device = get_device("cpu") if where == "cpu" else standin_gpu(monkeypatch)
    data = floats(1000, 1500)
    config = TrainConfig(layers=(1500, 6, 1), dtype=dtype, solver="gram", iterations=1)
    peak = set_up_peak(device, config, data)
    need = GramSolver.memory(config, 1000, 1000, data, device, False)
    assert peak <= need + SMALL and need <= 1.15 * peak


def test_set_up_gives_back_the_pinned_staging_blocks(monkeypatch, course_data):
    """CuPy copies an upload through a pinned host block of its size and keeps the block in
    its pool: after set-up nothing is kept, though the resident examples went that way."""
    gpu = standin_gpu(monkeypatch)
    pinned = gpu.xp.get_default_pinned_memory_pool()
    train, _ = course_data
    gpu.asarray(train.rows)  # an upload alone leaves its block behind
    assert pinned.free_bytes() >= train.rows.nbytes
    config = TrainConfig(layers=(12288, 4, 1), solver="direct", batch_size=64, iterations=1)
    solver, *_ = solver_for(gpu, config, train)
    assert pinned.n_free_blocks() == 0 and pinned.free_bytes() == 0
    solver.close()
