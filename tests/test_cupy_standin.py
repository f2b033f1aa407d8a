"""The CuPy stand-in against CuPy's own rules, each as CuPy 14's source states it (the file
named in each test): a stand-in that let through what CuPy refuses, or refused what CuPy
allows, would make the CuPy parameter of every other test prove less."""

from __future__ import annotations

import math

import cupy_standin
import numpy as np
import pytest


@pytest.fixture
def cp():
    return cupy_standin.make()


def test_device_arrays_are_not_numpy_arrays(cp):
    """core.pyx: __array__ raises TypeError; __array_ufunc__ hands NumPy operands to CuPy's
    ufuncs, whose _preprocess_args refuse them ("Unsupported type"), from either side."""
    x = cp.asarray(np.arange(6.0).reshape(2, 3))
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array"):
        np.asarray(x)
    for mixed in (lambda: x + np.ones((2, 3)), lambda: np.ones((2, 3)) * x, lambda: x @ np.eye(3)):
        with pytest.raises(TypeError, match="Unsupported type"):
            mixed()
    with pytest.raises(TypeError, match="Unsupported type"):
        cp.maximum(x, [0.0, 1.0, 2.0])  # a list is no scalar
    assert isinstance(x + 1.0, cp.ndarray) and isinstance(np.exp(x), cp.ndarray)
    assert x.get().tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    total = x.sum()
    assert isinstance(total, cp.ndarray) and total.shape == () and float(total) == 15.0
    with pytest.raises(ValueError, match="ambiguous"):
        bool(x > 1)


def test_promotion_follows_nep_50(cp):
    """_kernel.pyx's guess_routine: Python scalars are weak, NumPy scalars and 0-d arrays
    strong, as in NumPy 2."""
    x = cp.ones((3,), dtype=cp.float32)
    assert (x * 2.0).dtype == np.float32
    assert (x * np.float64(2.0)).dtype == np.float64
    assert (x * cp.ones((), dtype=cp.float64)).dtype == np.float64
    assert (cp.asarray(np.arange(3, dtype=np.uint8)) / 255.0).dtype == np.float64


def test_astype_copies_unless_asked_not_to(cp):
    """_creation/basic.py astype(x, dtype, copy=True): a new array even at the same dtype."""
    x = cp.ones((2, 2))
    assert cp.astype(x, cp.float64) is not x and x.astype(cp.float64) is not x
    assert cp.astype(x, cp.float64, copy=False) is x
    assert cp.astype(x, cp.float32, copy=False).dtype == np.float32


def test_integer_indices_and_take_wrap_around(cp):
    """_routines_indexing.pyx: out-of-range integer array indices wrap (CuPy's documented
    difference from NumPy), in take and in indexing; a NumPy array assigned into a basic slice
    is refused (fill), one assigned through an index array is converted."""
    x = cp.asarray(np.arange(3.0))
    assert x[cp.asarray(np.array([1, 3]))].get().tolist() == [1.0, 0.0]
    assert cp.take(x, cp.asarray(np.array([-1, 4])), axis=0).get().tolist() == [2.0, 1.0]
    with pytest.raises(ValueError, match="non-scalar numpy.ndarray cannot be used for fill"):
        x[:2] = np.ones(2)
    x[np.array([0, 2])] = np.array([7.0, 9.0])
    x[1:2] = 5
    assert x.get().tolist() == [7.0, 5.0, 9.0]


def test_fresh_memory_holds_what_was_there(cp):
    """A pool hands back used memory: empty's contents are not zeros (NaN here)."""
    assert np.isnan(cp.empty((2, 2)).get()).all()
    assert np.isnan(cp.empty_like(cp.zeros((3,), dtype=cp.float32)).get()).all()


def test_elementwise_kernel_types_its_arguments_as_cupy_does(cp):
    """_kernel.pyx _decide_params_type_core: T is bound by the arrays (outputs first); an
    array of another dtype is "Type is mismatched"; scalars bind nothing and become T
    (CScalar.apply_dtype); NumPy arrays are "Unsupported type"; outputs must have the
    broadcast shape; no array at all leaves the loop size undecided."""
    k = cp.ElementwiseKernel("T x, T s", "T y", "y = x * s", "standin_scale")
    x32 = cp.asarray(np.array([1.0, 2.0], dtype=np.float32))
    y = k(x32, 0.1)
    assert y.dtype == np.float32
    assert y.get().tolist() == (np.array([1.0, 2.0], np.float32) * np.float32(0.1)).tolist()
    with pytest.raises(TypeError, match="Type is mismatched"):
        k(x32, 0.1, cp.empty((2,), dtype=cp.float64))
    with pytest.raises(TypeError, match="Unsupported type"):
        k(np.ones(2), 0.1)
    with pytest.raises(ValueError, match="Out shape is mismatched"):
        k(cp.ones((2, 1)), 1.0, cp.empty((2,)))  # broadcast shape (2, 2): out must be it
    with pytest.raises(ValueError, match="Loop size is undecided"):
        k(1.0, 2.0)
    with pytest.raises(TypeError, match="Wrong number of arguments"):
        k(x32)


def test_elementwise_kernel_runs_its_own_text(cp):
    """The operation is compiled C++: inputs are const references (writing one does not
    compile), outputs are read and written in place, the element index is i, CUDA's math
    functions are the float and double overloads."""
    k = cp.ElementwiseKernel("T b", "T z, T a", "z = z + b; a = exp(z) + (T)i", "standin_k")
    z = cp.asarray(np.array([[0.0, 1.0], [2.0, 3.0]]))
    a = cp.empty((2, 2))
    k(cp.asarray(np.array([[1.0], [-1.0]])), z, a)  # b broadcast over the columns
    assert z.get().tolist() == [[1.0, 2.0], [1.0, 2.0]]
    assert np.allclose(a.get(), np.exp([[1.0, 2.0], [1.0, 2.0]]) + [[0, 1], [2, 3]])
    f = cp.ElementwiseKernel("T x", "T y", "y = expf(x) * (T)0 + sqrt(x)", "standin_f")
    assert f(cp.asarray(np.array([4.0], np.float32))).get().tolist() == [2.0]
    bad = cp.ElementwiseKernel("T x", "T y", "x = (T)1; y = x", "standin_bad")
    with pytest.raises(cp.cuda.compiler.CompileException, match="read-only|assignment"):
        bad(cp.ones((2,)))


def test_gemm_checks_and_computes_as_cublas(cp):
    """cublas.py gemm: one dtype (assert), out of the result's shape and dtype (assert); out
    = alpha·op(a)·op(b) + beta·out, into C-, F-ordered or strided out; out not read when
    beta is 0 (BLAS)."""
    rng = np.random.default_rng(0)
    A, B, C = rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), rng.standard_normal((3, 5))
    a, b = cp.asarray(A), cp.asarray(B)
    for order in ("C", "F"):
        out = cp.asarray(np.array(C, order=order))
        cp.cublas.gemm("N", "T", a, b, out=out, alpha=-1.0, beta=0.5)
        assert np.allclose(out.get(), 0.5 * C - A @ B.T)
    wide = cp.asarray(np.zeros((3, 10)))
    cp.cublas.gemm("N", "T", a, b, out=wide[:, ::2], alpha=1.0, beta=0.0)
    assert np.allclose(wide.get()[:, ::2], A @ B.T) and not wide.get()[:, 1::2].any()
    nan = cp.full((3, 5), math.nan)
    cp.cublas.gemm("N", "T", a, b, out=nan)
    assert np.allclose(nan.get(), A @ B.T)
    with pytest.raises(AssertionError):
        cp.cublas.gemm("N", "T", a, cp.asarray(B.astype(np.float32)))
    with pytest.raises(AssertionError):
        cp.cublas.gemm("N", "T", a, b, out=cp.empty((5, 3)))
    with pytest.raises(AssertionError):
        cp.cublas.gemm("N", "T", a, b, out=cp.empty((3, 5), dtype=cp.float32))
    with pytest.raises(TypeError, match="invalid trans"):
        cp.cublas.gemm("X", "T", a, b)


def test_memory_pool_and_pinned_staging(cp):
    """memory.pyx: the pool keeps what it held (total_bytes) and counts its blocks as taken
    in memGetInfo; past the device's memory: OutOfMemoryError. core.pyx _array_default: an
    upload goes through a pinned block of its size, kept free in the pinned pool."""
    cp = cupy_standin.make(memory=(2**20, 2**30))
    pool, pinned = cp.get_default_memory_pool(), cp.get_default_pinned_memory_pool()
    x = cp.asarray(np.ones(1000))  # 8000 bytes: 16 units of 512
    assert pool.used_bytes() == 8192 and pinned.n_free_blocks() == 1
    assert pinned.free_bytes() >= 8000
    assert cp.cuda.runtime.memGetInfo() == (2**20 - 8192, 2**30)
    del x
    assert pool.used_bytes() == 0 and pool.total_bytes() == 8192  # kept by the pool
    with pytest.raises(cp.cuda.memory.OutOfMemoryError):
        cp.empty((2**20,))
    pinned.free_all_blocks()
    assert pinned.n_free_blocks() == 0
