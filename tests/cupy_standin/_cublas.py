"""``cupy.cublas.gemm`` for the stand-in, with the checks of CuPy 14's cupy/cublas.py:

``gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0)`` computes
out = alpha·op(a)·op(b) + beta·out in place, op being 'N' (a), 'T' (aᵀ) or 'H' (aᴴ). CuPy
asserts that a and b are 2-d with one dtype, that out (when given) is 2-d of the result's
shape and of that dtype (AssertionError), refuses other dtypes than f, d, F, D and other
transposes (TypeError); alpha and beta are converted to the dtype (numpy.array(alpha,
dtype)); out is C- or F-ordered or anything else (then computed in a copy and copied back);
with out=None the result is a new F-ordered array and beta is 0. As BLAS does, out is not
read when beta is 0. The product is computed in the dtype (as sgemm and dgemm do)."""

from __future__ import annotations

import types

import numpy as np

from ._core import ndarray


def _op(trans: str):
    if trans in ("N", 0):
        return "N"
    if trans in ("T", 1):
        return "T"
    if trans in ("H", 2):
        return "H"
    raise TypeError(f"invalid trans (actual: {trans})")


def _apply(op: str, a: np.ndarray) -> np.ndarray:
    return a if op == "N" else (a.T if op == "T" else a.T.conj())


def module(rt) -> types.ModuleType:
    cublas = types.ModuleType("cupy.cublas")

    def gemm(transa, transb, a, b, out=None, alpha=1.0, beta=0.0):
        assert a.ndim == b.ndim == 2
        assert a.dtype == b.dtype
        dtype = a.dtype.char
        if dtype not in "fdFD":
            raise TypeError("invalid dtype")
        transa, transb = _op(transa), _op(transb)
        m, k = a.shape if transa == "N" else a.shape[::-1]
        if transb == "N":
            n = b.shape[1]
            assert b.shape[0] == k
        else:
            n = b.shape[0]
            assert b.shape[1] == k
        if out is None:
            out = rt.empty((m, n), dtype=dtype, order="F")
            beta = 0.0
        else:
            assert out.ndim == 2
            assert out.shape == (m, n)
            assert out.dtype == dtype
        if not isinstance(a, ndarray) or not isinstance(b, ndarray) or not isinstance(out, ndarray):
            raise TypeError("cupy.cublas.gemm takes device arrays")  # (.data.ptr in CuPy)
        rt.fault("gemm")
        alpha, beta = np.array(alpha, dtype=a.dtype), np.array(beta, dtype=a.dtype)
        product = alpha * np.matmul(_apply(transa, a._a), _apply(transb, b._a))
        result = product if beta == 0 else product + beta * out._a
        rt.spoil("gemm", result)
        out._a[...] = result
        return out

    cublas.gemm = gemm
    return cublas
