"""The replayed-graph path (gpucat/cuda_graph.py) where a CPU can check it: the mapping of
row-major products onto cuBLAS's column-major GEMM, against a column-major GEMM written
here from its definition; which recipes can be replayed; and Replayed's control flow with
a stand-in capture, equal to the plain solver bit for bit."""

from __future__ import annotations

import ctypes
import itertools
from contextlib import nullcontext

import numpy as np
import pytest

from gpucat import cuda_graph
from gpucat.backend import get_backend
from gpucat.cuda_graph import WARMUP, Replayed, graph_refusal, row_major_gemm
from gpucat.train import TrainConfig, params_to_host, solver_for


def column_major_gemm(dtype):
    """cuBLAS's ?gemm from its definition, on host memory: matrices stored column-major at
    addresses with leading dimensions; C ← α·op(A)·op(B) + β·C."""
    size = np.dtype(dtype).itemsize

    def view(ptr, rows, cols, ld):
        count = ld * (cols - 1) + rows
        buf = (ctypes.c_char * (count * size)).from_address(ptr)
        flat = np.frombuffer(buf, dtype=dtype)
        return np.lib.stride_tricks.as_strided(flat, (rows, cols), (size, ld * size))

    def gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
        for ld, rows in ((lda, m if ta == 0 else k), (ldb, k if tb == 0 else n), (ldc, m)):
            assert ld >= max(1, rows), "leading dimension below the stored rows"
        A = view(a, *((m, k) if ta == 0 else (k, m)), lda)
        B = view(b, *((k, n) if tb == 0 else (n, k)), ldb)
        C = view(c, m, n, ldc)
        opA, opB = (A if ta == 0 else A.T), (B if tb == 0 else B.T)
        # as BLAS defines it: with β = 0, C is written, never read (it may hold NaN)
        C[...] = alpha * (opA @ opB) + (beta * C if beta != 0 else 0.0)

    return gemm


SHAPES = [(3, 5, 4), (1, 5, 4), (3, 1, 4), (3, 5, 1), (1, 1, 7), (20, 209, 12)]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("m, k, n", SHAPES)
def test_row_major_products_map_onto_the_column_major_gemm(dtype, m, k, n):
    """C ← α·A·B + β·C for A, B and C each stored C- or Fortran-ordered (as a transposed
    view stores it), vectors included: the same numbers as NumPy's."""
    rng = np.random.default_rng(m * 100 + k * 10 + n)
    gemm, ptr = column_major_gemm(dtype), lambda x: x.ctypes.data
    for orders in itertools.product("CF", repeat=3):
        A, B, C0 = (
            np.asarray(rng.integers(-4, 5, shape), dtype=dtype, order=o)
            for shape, o in zip(((m, k), (k, n), (m, n)), orders)
        )
        for alpha, beta in ((1.0, 0.0), (-1.0, 0.5), (-1.0, 1.0)):
            C = C0.copy(order="K")
            row_major_gemm(gemm, ptr, A, B, C, alpha, beta)
            expected = alpha * (A.astype(np.float64) @ B) + beta * C0  # small integers: exact
            np.testing.assert_array_equal(C, expected.astype(dtype), err_msg=str(orders))


def test_transposed_views_are_read_where_they_lie():
    """Wᵀ·dZ and dZ·Aᵀ as the Ops pass them (views of C-ordered arrays): no copy needed."""
    rng = np.random.default_rng(3)
    W, dZ, A = rng.standard_normal((7, 20)), rng.standard_normal((7, 9)), rng.random((20, 9))
    gemm, ptr = column_major_gemm("float64"), lambda x: x.ctypes.data
    out = np.full((20, 9), np.nan)  # an empty output: β = 0 must not read it
    row_major_gemm(gemm, ptr, W.T, dZ, out, 1.0, 0.0)
    np.testing.assert_allclose(out, W.T @ dZ, rtol=1e-14)
    W0 = W.copy()
    row_major_gemm(gemm, ptr, dZ, A.T, W, -1.0, 0.9)
    np.testing.assert_allclose(W, 0.9 * W0 - dZ @ A.T, rtol=1e-14)


@pytest.mark.parametrize(
    "options, solver, processes, reason",
    [
        (dict(), "direct", 1, None),
        (dict(), "gram", 1, None),
        (dict(l2=0.5), "direct", 1, None),
        (dict(batch_size=64), "direct", 1, "mini-batches"),
        (dict(), "direct", 2, "across processes"),
        (dict(optimizer="momentum"), "direct", 1, "plain gradient descent"),
        (dict(keep_prob=0.8), "gram", 1, "dropout"),
        (dict(lr_decay=0.1), "direct", 1, "learning rate changes"),
        (dict(l2=0.5), "gram", 1, "L2 scale"),  # auto resolved to gram: its own name counts
    ],
)
def test_only_iterations_that_repeat_exactly_are_replayed(options, solver, processes, reason):
    config = TrainConfig(**options)
    why = graph_refusal(config, processes, config.batch_size is None, solver)
    assert (why is None) if reason is None else (reason in why)


class StandInCapture:
    """A capture on the CPU: what CUDA would record runs at the capture (and the first
    launch does nothing, as that launch would run the recording); every later launch runs
    the captured call again, writing its loss into the captured result, as a graph does."""

    def __init__(self, fail: bool = False):
        self.fail, self.captured_at = fail, []

    def capture(self, fn):
        if self.fail:
            raise RuntimeError("stream capture refused")
        self.captured_at.append(fn)
        out = np.array(fn())
        first = [True]

        def launch():
            if first[0]:
                first[0] = False
            else:
                out[...] = fn()

        return out, launch


@pytest.mark.parametrize("solver", ["direct", "gram"])
@pytest.mark.parametrize("fail", [False, True])
def test_replayed_steps_equal_the_plain_solver(course_data, solver, fail):
    """Plain iterations first, one capture, then launches: the same losses and parameters
    bit for bit; a capture that fails leaves the run on the plain path with its reason."""
    train, _ = course_data
    cpu = get_backend("cpu")
    config = TrainConfig(
        layers=(12288, 6, 4, 1), solver=solver, l2=0.3 if solver == "direct" else 0
    )
    plain = solver_for(cpu, config, train)[0]
    capture = StandInCapture(fail)
    with pytest.warns(RuntimeWarning, match="stream capture refused") if fail else nullcontext():
        wrapped = Replayed(solver_for(cpu, config, train)[0], capture)
        losses = [(float(plain.step(i)), float(wrapped.step(i))) for i in range(WARMUP + 5)]
    assert all(a == b for a, b in zip(*zip(*losses)))
    for p, q in zip(
        params_to_host(cpu, plain.parameters()), params_to_host(cpu, wrapped.parameters())
    ):
        np.testing.assert_array_equal(p[0], q[0])
        np.testing.assert_array_equal(p[1], q[1])
    assert len(capture.captured_at) == (0 if fail else 1)
    assert (wrapped.why is not None) == fail and wrapped.name == solver


def test_the_graph_path_stays_off_unless_asked_and_on_a_gpu(monkeypatch, course_data):
    """GPUCAT_CUDA_GRAPH unset, or set on the CPU: the solver and Ops are the usual ones."""
    train, _ = course_data
    cpu = get_backend("cpu")
    for value in ("", "1"):
        monkeypatch.setenv("GPUCAT_CUDA_GRAPH", value)
        solver = solver_for(cpu, TrainConfig(iterations=1), train)[0]
        assert not isinstance(solver, Replayed) and type(solver.ops).__name__ == "NumpyOps"
        assert cuda_graph.ops_for(cpu).name == "numpy"
