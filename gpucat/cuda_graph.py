"""One CUDA graph launch per training iteration (opt-in, GPUCAT_CUDA_GRAPH=1; experimental:
written before any GPU ran it, its figures come from scripts/benchmark.py recipe).

On the reference recipe a GPU iteration is bound by launches, not arithmetic: about thirty
kernels and GEMMs, each costing more to queue from Python than to run. A graph captured
once queues them all with one launch. CuPy refuses cuBLAS while a stream captures (each of
its bindings first sets the handle's stream, and that raises), so here:

- ``Cublas`` calls cuBLAS itself through ctypes, on a handle of gpucat's own whose stream
  is set outside the capture; ``row_major_gemm`` maps C ← α·A·B + β·C on row-major arrays
  (C- or Fortran-ordered) onto its column-major GEMM.
- ``GraphedOps`` is CupyOps with every product going through that handle.
- ``Replayed`` runs a solver's first iterations as they are (kernels compile, memory pools
  fill), captures the next one on a stream of its own with a memory pool kept for the graph
  alone, and launches the graph for that iteration and every later one. Only recipes whose
  iterations repeat exactly can be replayed (``graph_refusal``); any failure to capture
  leaves the run on the plain path, with the reason in ``Replayed.why``.
"""

from __future__ import annotations

import ctypes
import os
import warnings
from collections.abc import Callable

import numpy as np

from gpucat.ops import CupyOps, make_ops

WARMUP = 3  # plain iterations before the capture


class GraphNotUsed(RuntimeWarning):
    """The run goes on without the graph; the message says why."""


def _not_used(why) -> None:
    warnings.warn(f"CUDA graph not used: {why}", GraphNotUsed, stacklevel=3)


_OP = {"N": 0, "T": 1}  # cublasOperation_t


def wanted() -> bool:
    return os.environ.get("GPUCAT_CUDA_GRAPH", "") == "1"


def graph_refusal(config, processes: int, full_batch: bool, solver: str) -> str | None:
    """Why this recipe's iterations, run by ``solver`` (the resolved name, never auto),
    cannot be one replayed graph (something each iteration takes from the host would be
    frozen at its captured value), or None."""
    if not full_batch:
        return "mini-batches are gathered on the host"
    if processes > 1:
        return "the gradients are summed across processes"
    if config.optimizer != "gd":
        return "only plain gradient descent applies its step inside the backward pass"
    if config.keep_prob < 1:
        return "dropout masks are drawn on the host"
    if config.lr_decay:
        return "the learning rate changes between iterations"
    if config.l2 and solver == "gram":
        return "the Gram solver's L2 scale lives on the host"
    return None


def row_major_gemm(gemm: Callable, ptr: Callable, A, B, C, alpha: float, beta: float) -> None:
    """C ← α·A·B + β·C for 2-D arrays each stored C- or Fortran-ordered, through a
    column-major ``gemm(opA, opB, m, n, k, α, A, lda, B, ldb, β, C, ldc)`` (cuBLAS's
    argument order; ``ptr`` gives an array's address). Row-major memory read column-major
    is the transpose, so a C-ordered C is computed as Cᵀ = Bᵀ·Aᵀ."""

    def stored(X, want_transpose: bool):  # (op, ld) that give X (or Xᵀ) from X's memory
        if X.flags.c_contiguous:  # its memory, read column-major, is Xᵀ
            return ("N" if want_transpose else "T"), max(X.shape[1], 1)
        return ("T" if want_transpose else "N"), max(X.shape[0], 1)

    (m, k), n = A.shape, B.shape[1]
    if C.flags.c_contiguous:
        (ob, ldb), (oa, lda) = stored(B, True), stored(A, True)
        gemm(_OP[ob], _OP[oa], n, m, k, alpha, ptr(B), ldb, ptr(A), lda, beta, ptr(C), max(n, 1))
    elif C.flags.f_contiguous:
        (oa, lda), (ob, ldb) = stored(A, False), stored(B, False)
        gemm(_OP[oa], _OP[ob], m, n, k, alpha, ptr(A), lda, ptr(B), ldb, beta, ptr(C), max(m, 1))
    else:
        raise ValueError("the output of a product must be contiguous")


class Cublas:
    """cuBLAS through ctypes: the library CuPy loaded, a handle of gpucat's own (host
    pointer mode), S/DGEMM."""

    NAMES = ("libcublas.so.13", "libcublas.so.12", "libcublas.so")

    def __init__(self):
        from cupy_backends.cuda.libs import cublas  # noqa: F401 -- CuPy loads libcublas

        lib = None
        for name in self.NAMES:
            try:
                lib = ctypes.CDLL(name)
                break
            except OSError:
                continue
        if lib is None:
            raise OSError(f"cuBLAS not found as {', '.join(self.NAMES)}")
        self.lib, self.handle = lib, ctypes.c_void_p()
        self._check(lib.cublasCreate_v2(ctypes.byref(self.handle)), "cublasCreate")
        self._check(lib.cublasSetPointerMode_v2(self.handle, 0), "cublasSetPointerMode")
        self.fns = {}
        for dtype, name, real in (("float32", "cublasSgemm_v2", ctypes.c_float),
                                  ("float64", "cublasDgemm_v2", ctypes.c_double)):  # fmt: skip
            fn, i, p = getattr(lib, name), ctypes.c_int, ctypes.c_void_p
            fn.argtypes = [p, i, i, i, i, i, p, p, i, p, i, p, p, i]
            self.fns[np.dtype(dtype)] = (fn, real)
        self.stream = None

    @staticmethod
    def _check(status: int, what: str) -> None:
        if status != 0:
            raise RuntimeError(f"{what} failed: cuBLAS status {status}")

    def set_stream(self, stream_ptr: int) -> None:
        if stream_ptr != self.stream:
            self._check(
                self.lib.cublasSetStream_v2(self.handle, ctypes.c_void_p(stream_ptr)),
                "cublasSetStream",
            )
            self.stream = stream_ptr

    def gemm_for(self, dtype) -> Callable:
        fn, real = self.fns[np.dtype(dtype)]

        def gemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
            al, be = real(alpha), real(beta)
            status = fn(self.handle, ta, tb, m, n, k, ctypes.byref(al), a, lda, b, ldb,
                        ctypes.byref(be), c, ldc)  # fmt: skip
            self._check(status, "cublas?gemm")

        return gemm


class GraphedOps(CupyOps):
    """CupyOps whose products all go through gpucat's own cuBLAS handle (``Cublas``), which
    stream capture allows; the rest is CupyOps' kernels."""

    name = "cupy"

    def __init__(self, backend):
        super().__init__(backend)
        self.blas = Cublas()

    @staticmethod
    def _stored(*arrays) -> bool:
        """Every array in C or Fortran order, as a GEMM reads it (not a slice)."""
        return all(x.flags.c_contiguous or x.flags.f_contiguous for x in arrays)

    def _gemm(self, A, B, C, alpha: float, beta: float) -> bool:
        """C ← α·A·B + β·C on the stream CuPy queues on now; False, touching nothing, for
        operands stored in neither order (slices), which CuPy's own path takes."""
        if not self._stored(A, B, C):
            return False
        self.blas.set_stream(self.cupy.cuda.get_current_stream().ptr)
        gemm = self.blas.gemm_for(C.dtype)
        row_major_gemm(gemm, lambda a: a.data.ptr, A, B, C, alpha, beta)
        return True

    def _product(self, A, B):
        if not self._stored(A, B):
            return A @ B
        C = self.cupy.empty((A.shape[0], B.shape[1]), dtype=A.dtype)
        self._gemm(A, B, C, 1.0, 0.0)
        return C

    def matmul(self, A, B):
        return self._product(A, B)

    def matmul_tn(self, A, B):
        return self._product(A.T, B)

    def matmul_nt(self, A, B):
        return self._product(A, B.T)

    def descend(self, W, dZ, A_prev, decay=1.0):
        if not self._gemm(dZ, A_prev.T, W, -1.0, decay):
            super().descend(W, dZ, A_prev, decay)

    def descend_bias(self, b, dZ):
        if not self._gemm(dZ, self._ones_for(dZ), b, -1.0, 1.0):
            super().descend_bias(b, dZ)


class CudaCapture:
    """Stream capture with CuPy: ``capture(fn)`` records fn's device work as a graph (on a
    stream of its own, from a memory pool kept with the graph) and returns (fn's result, a
    launcher); nothing recorded runs until launched."""

    def __init__(self, ops: GraphedOps):
        self.ops, self.cupy = ops, ops.cupy
        self.pool = self.graph = None

    def capture(self, fn):
        cp = self.cupy
        cp.cuda.Device().synchronize()  # the capture stream does not wait for the others
        stream, self.pool = cp.cuda.Stream(non_blocking=True), cp.cuda.MemoryPool()
        self.ops.blas.set_stream(stream.ptr)  # before the capture: cuBLAS queues there
        with stream, cp.cuda.using_allocator(self.pool.malloc):
            stream.begin_capture()
            try:
                result = fn()
            finally:
                self.graph = stream.end_capture()
        return result, lambda: self.graph.launch(cp.cuda.get_current_stream())


class Replayed:
    """A solver whose iterations, after ``WARMUP`` plain ones, are one graph launch each:
    the same protocol (solvers.Solver), the same numbers (the graph holds the very kernels
    and GEMMs of a plain iteration, on the same arrays)."""

    def __init__(self, solver, capturer):
        self._solver, self._capturer = solver, capturer
        self._done, self._launch, self._loss = 0, None, None
        self.why: str | None = None  # why the run went on without the graph, if it did

    def __getattr__(self, name):  # every other part of the protocol: the solver's own
        return getattr(self._solver, name)

    def step(self, i: int):
        if self._launch is None and self.why is None and self._done >= WARMUP:
            try:
                self._loss, self._launch = self._capturer.capture(lambda: self._solver.step(i))
            except Exception as e:  # noqa: BLE001 -- any refusal: stay on the plain path
                self.why = f"{type(e).__name__}: {e}"
                _not_used(self.why)
        self._done += 1
        if self._launch is None:
            return self._solver.step(i)
        self._launch()
        return self._loss


def ops_for(backend):
    """GraphedOps where GPUCAT_CUDA_GRAPH=1 asks for it on a GPU and cuBLAS loads through
    ctypes; else the device's own Ops."""
    if backend.is_gpu and wanted():
        try:
            return GraphedOps(backend)
        except (ImportError, OSError, AttributeError, RuntimeError) as e:
            _not_used(e)
    return make_ops(backend)


def replayed(solver, config, processes: int):
    """The solver wrapped in ``Replayed`` when GPUCAT_CUDA_GRAPH=1 asks for it and the recipe
    allows it on this device; else the solver itself."""
    if not wanted() or not isinstance(solver.ops, GraphedOps):
        return solver
    why = graph_refusal(config, processes, solver.full_batch, solver.name)
    if why:
        _not_used(why)
        return solver
    return Replayed(solver, CudaCapture(solver.ops))
