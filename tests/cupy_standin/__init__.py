"""A CuPy stand-in for machines without a GPU: a module named ``cupy`` that follows CuPy 14's
rules as CuPy's own source states them, so that gpucat's CuPy path (CupyDevice's kernels,
its cuBLAS updates, uploads, pinned staging, memory figures) runs in every test run.

- device arrays that are not NumPy arrays, reductions that stay on the device, a memory
  pool and a pinned-memory pool (_core.py);
- ``ElementwiseKernel`` that compiles the kernel's own operation text with g++ and runs it
  element by element with CuPy's typing and broadcasting (_kernel.py);
- ``cupy.cublas.gemm`` with CuPy's argument checks, computed from its definition
  (``cublas.py``);
- ``cupy.cuda``: devices, the runtime's answers (device count, properties, versions,
  ``memGetInfo``), streams and ``synchronize``, answered plausibly.

``make(**faults)`` builds a fresh stand-in; ``install(module)`` puts it in ``sys.modules``.
It is a test tool: nothing in gpucat knows it. What it cannot show (NVRTC and the driver,
real memory and timing, FMA contraction) is listed in docs/testing.md.
"""

from __future__ import annotations

import sys
import types
import weakref

import numpy as np

from . import _core, _cublas, _kernel
from ._core import MemoryPool, OutOfMemoryError, PinnedMemoryPool, check_operand, ndarray

VERSION = "14.2.0"  # the CuPy whose source the stand-in follows
NAME = b"CuPy stand-in (no GPU)"
GiB = 2**30
UFUNCS = (
    "add subtract multiply divide true_divide floor_divide power remainder negative positive "
    "absolute abs maximum minimum exp expm1 log log1p log2 log10 sqrt square sin cos tanh "
    "sign fabs greater greater_equal less less_equal equal not_equal logical_and logical_or "
    "logical_not isfinite isnan isinf floor ceil rint invert bitwise_and bitwise_or matmul"
).split()


class Runtime:
    """One stand-in CUDA process: its devices, memory, faults and the namespace it serves."""

    def __init__(self, count, version, kernel, gemm, name, memory, pooled):
        self.count, self.faults, self.name = count, {"kernel": kernel, "gemm": gemm}, name
        self.memory_free, self.memory_total = memory
        self.pool, self.pinned = MemoryPool(self, pooled), PinnedMemoryPool()
        self.opened: list[int] = []  # the device indices opened, in order
        self.current, self.syncs = 0, 0
        self._tracked: dict[int, int] = {}
        self.namespace = None

    # --- memory ----------------------------------------------------------------------------
    def driver_free(self) -> int:
        return self.memory_free - self.pool.total_bytes()

    def track(self, a: np.ndarray) -> None:
        """Count a new device allocation once (views share their root's)."""
        root = _core._root(a)
        key = id(root)
        if key in self._tracked:
            return
        self._tracked[key] = self.pool._malloc(root.nbytes)
        weakref.finalize(root, self._untrack, key)

    def _untrack(self, key: int) -> None:
        self.pool._free(self._tracked.pop(key))

    def wrap(self, a) -> ndarray:
        return ndarray._wrap(a, self)

    def empty(self, shape, dtype=float, order="C") -> ndarray:
        """Fresh memory holds what was there before: NaN here, so that reading it shows."""
        a = np.empty(shape, dtype=dtype, order=order)
        if a.dtype.kind == "b":
            a.fill(True)
        elif a.dtype.kind in "fc":
            a.fill(np.nan)
        else:
            a.view(np.uint8).fill(0xA5)
        return self.wrap(a)

    def current_device(self):
        return self.namespace.cuda.Device(self.current)

    # --- faults ----------------------------------------------------------------------------
    def fault(self, kind: str) -> None:
        if self.faults[kind] != "raise":
            return
        if kind == "kernel":
            raise _kernel.CompileException(
                "libnvrtc.so.12: cannot open shared object file", "", "kernel"
            )
        raise RuntimeError("CUBLAS_STATUS_NOT_INITIALIZED: libcublasLt.so.12 not found")

    def spoil(self, kind: str, a: np.ndarray) -> None:
        """A device that computes wrong numbers: off by one, or by a rounding-sized error."""
        if self.faults[kind] == "wrong":
            a += 1
        elif self.faults[kind] == "rounding":
            a *= 1 + 1e-7

    # --- operations ------------------------------------------------------------------------
    def ufunc(self, func, *args, out=None, **kw) -> ndarray:
        values = [check_operand(a) for a in args]
        if func is np.matmul:
            self.fault("gemm")
        if out is not None:
            if not isinstance(out, ndarray):
                raise TypeError("Output arguments type must be cupy.ndarray")
            func(*values, out=out._a, casting=kw.pop("casting", "same_kind"), **kw)
            return out
        result = np.asarray(func(*values, **kw))
        if func is np.matmul:
            self.spoil("gemm", result)
        return self.wrap(result)

    def reduce(self, func, x: ndarray, axis, **kw) -> ndarray:
        return self.wrap(np.asarray(func(x._a, axis=axis, **kw)))

    def index(self, key, shape):
        """A key as CuPy reads it: device and host integer arrays and lists are indices,
        integer array indices wrap around the axis they index."""
        parts = list(key) if isinstance(key, tuple) else [key]
        explicit = sum(1 for p in parts if p is not None and p is not Ellipsis)
        axis, out = 0, []
        for p in parts:
            if p is Ellipsis:
                out.append(p)
                axis += len(shape) - explicit
                continue
            if p is None:
                out.append(p)
                continue
            if isinstance(p, ndarray):
                p = p._a
            elif isinstance(p, list):
                p = np.asarray(p)
            if isinstance(p, np.ndarray):
                if p.dtype.kind in "iu":
                    p = np.mod(p, shape[axis]) if shape[axis] else p
                elif p.dtype.kind == "b":
                    axis += p.ndim - 1
                else:
                    raise IndexError(
                        "arrays used as indices must be of integer or boolean type "
                        f"(actual: {p.dtype.type})"
                    )
            out.append(p)
            axis += 1
        return tuple(out)


def _namespace(rt: Runtime, version: str) -> types.ModuleType:
    cp = types.ModuleType("cupy")
    cp.__version__ = version
    cp.__file__ = __file__
    cp.ndarray = ndarray
    for (
        dt
    ) in "bool_ int8 int16 int32 int64 uint8 uint16 uint32 uint64 float16 float32 float64".split():
        setattr(cp, dt, getattr(np, dt))
    cp.dtype, cp.newaxis, cp.nan, cp.inf, cp.pi, cp.e = np.dtype, None, np.nan, np.inf, np.pi, np.e

    for name in UFUNCS:
        func = getattr(np, name)
        setattr(cp, name, (lambda f: lambda *a, **kw: rt.ufunc(f, *a, **kw))(func))

    def asarray(a, dtype=None, order=None, *, blocking=False):
        if isinstance(a, ndarray):
            return a if dtype is None or a.dtype == np.dtype(dtype) else a.astype(dtype)
        return array(a, dtype=dtype, copy=False, order=order or "K")

    def array(obj, dtype=None, copy=True, order="K", subok=False, ndmin=0, *, blocking=False):
        if isinstance(obj, ndarray):
            out = obj.astype(dtype or obj.dtype, copy=copy, order=order)
            return out
        host = np.array(obj, dtype=dtype, ndmin=ndmin, copy=None)
        if host.dtype.kind == "O":
            raise ValueError(f"Unsupported dtype {host.dtype}")
        if host.ndim and not _pinned(host):  # staged through a pinned block of its size
            rt.pinned.malloc(host.nbytes)  # freed at once: the pool keeps it as a free block
        order = "F" if order in "KA" and host.flags.f_contiguous and host.ndim > 1 else "C"
        return rt.wrap(np.array(host, order=order, copy=True))

    def astype(x, dtype, /, *, copy=True):
        if not isinstance(x, ndarray):
            raise TypeError(f"Unsupported type {type(x)}")
        return x.astype(dtype, copy=copy)

    def empty(shape, dtype=float, order="C"):
        return rt.empty(shape, dtype, order)

    def full(shape, fill_value, dtype=None, order="C"):
        out = rt.empty(shape, dtype if dtype is not None else np.asarray(fill_value).dtype, order)
        out.fill(fill_value)
        return out

    def like(fill):
        def make(a, dtype=None, order="K", subok=None, shape=None):
            return full(a.shape if shape is None else shape, fill, dtype or a.dtype)

        return make

    def where(condition, x=None, y=None):
        if x is None and y is None:
            raise NotImplementedError("the CuPy stand-in models where(condition, x, y) only")
        c, a, b = (check_operand(v) for v in (condition, x, y))
        return rt.wrap(np.where(c, a, b))

    def take(a, indices, axis=None, out=None):
        if not isinstance(a, ndarray):
            return a.take(indices, axis)
        idx = indices._a if isinstance(indices, ndarray) else np.asarray(indices, dtype=np.int64)
        return rt.wrap(np.take(a._a, idx, axis=axis, mode="wrap"))

    def concatenate(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
        arrays = [check_array(a) for a in tup]
        return rt.wrap(np.concatenate(arrays, axis=axis, dtype=dtype, casting=casting))

    def stack(tup, axis=0, out=None, *, dtype=None, casting="same_kind"):
        return rt.wrap(np.stack([check_array(a) for a in tup], axis=axis))

    def check_array(a):
        if not isinstance(a, ndarray):
            raise TypeError(f"Only cupy arrays can be concatenated, not {type(a)}")
        return a._a

    def get_array_module(*args):
        return cp if any(isinstance(a, ndarray) for a in args) else np

    def asnumpy(a, stream=None, order="C", out=None, blocking=True):
        return a.get(order=order, out=out) if isinstance(a, ndarray) else np.asarray(a)

    cp.asarray, cp.array, cp.astype, cp.empty, cp.full = asarray, array, astype, empty, full
    cp.zeros = lambda shape, dtype=float, order="C": full(shape, 0, dtype, order)
    cp.ones = lambda shape, dtype=float, order="C": full(shape, 1, dtype, order)
    cp.empty_like = lambda a, dtype=None, order="K", subok=None, shape=None: rt.empty(
        a.shape if shape is None else shape, dtype or a.dtype
    )
    cp.zeros_like, cp.ones_like = like(0), like(1)
    cp.arange = lambda *args, dtype=None: rt.wrap(np.arange(*args, dtype=dtype))
    cp.where, cp.take, cp.concatenate, cp.stack = where, take, concatenate, stack
    cp.concat = concatenate
    cp.get_array_module, cp.asnumpy = get_array_module, asnumpy
    for name in ("sum", "max", "min", "mean", "any", "all"):  # CuPy calls the method of `a`
        setattr(
            cp, name, (lambda n: lambda a, axis=None, **kw: getattr(a, n)(axis=axis, **kw))(name)
        )
    cp.amax, cp.amin = cp.max, cp.min
    cp.reshape = lambda a, newshape, order="C": a.reshape(newshape, order=order)
    cp.transpose = lambda a, axes=None: a.transpose(*(axes or ()))
    cp.dot = lambda a, b, out=None: rt.ufunc(np.dot, a, b)
    cp.get_default_memory_pool = lambda: rt.pool
    cp.get_default_pinned_memory_pool = lambda: rt.pinned

    class ElementwiseKernel(_kernel.ElementwiseKernel):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.runtime = rt

        def _launch(self, ins, outs, shape, types):
            super()._launch(ins, outs, shape, types)
            for o in outs:
                rt.spoil("kernel", o._a)

    cp.ElementwiseKernel = ElementwiseKernel
    cp.cuda = _cuda(rt)
    cp.cublas = _cublas.module(rt)
    cp.opened = rt.opened  # the stand-in's own record: the device indices opened, in order
    cp.runtime = rt  # (not CuPy's: the stand-in's state, for its own tests)
    return cp


def _pinned(host: np.ndarray) -> bool:
    """Whether a host array lies in pinned memory (CuPy then copies from it directly)."""
    base = _core._root(host).base
    return isinstance(base, memoryview) and isinstance(base.obj, _core.PinnedMemoryPointer)


def _cuda(rt: Runtime) -> types.ModuleType:
    cuda = types.ModuleType("cupy.cuda")

    class CUDARuntimeError(RuntimeError):
        def __init__(self, status: int, message: str = "cudaErrorInvalidDevice"):
            super().__init__(message)
            self.status = status

    class Device:
        def __init__(self, device=None):
            self.id = rt.current if device is None else int(device)
            if self.id not in rt.opened:
                rt.opened.append(self.id)
            self._before: list[int] = []

        def __enter__(self):
            self._check()
            self._before.append(rt.current)
            rt.current = self.id
            return self

        def __exit__(self, *exc):
            rt.current = self._before.pop()
            return False

        def _check(self):
            if isinstance(rt.count, int) and not 0 <= self.id < rt.count:
                raise CUDARuntimeError(101, "cudaErrorInvalidDevice: invalid device ordinal")

        def use(self):
            self._check()
            rt.current = self.id

        def synchronize(self):
            rt.syncs += 1

        @property
        def compute_capability(self):
            return "90"

        @property
        def mem_info(self):
            return runtime.memGetInfo()

        def __eq__(self, other):
            return isinstance(other, Device) and other.id == self.id

        def __hash__(self):
            return hash(self.id)

    def device_count():
        if isinstance(rt.count, BaseException):
            raise rt.count
        return rt.count

    def properties(i):
        Device(i)._check()
        name = rt.name
        return {"name": name, "major": 9, "minor": 0, "totalGlobalMem": rt.memory_total}

    runtime = types.SimpleNamespace(
        getDeviceCount=device_count,
        getDeviceProperties=properties,
        runtimeGetVersion=lambda: 12090,
        driverGetVersion=lambda: 13000,
        memGetInfo=lambda: (rt.driver_free(), rt.memory_total),
        getDevice=lambda: rt.current,
        setDevice=lambda i: Device(i).use(),
        deviceSynchronize=lambda: Device().synchronize(),
        CUDARuntimeError=CUDARuntimeError,
        errorMemoryAllocation=2,
    )

    class Stream:
        null = None

        def __init__(self, null=False, non_blocking=False, ptds=False):
            self.ptr = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def synchronize(self):
            rt.syncs += 1

        def use(self):
            return self

    Stream.null = Stream(null=True)
    cuda.runtime = runtime
    cuda.Device, cuda.Stream = Device, Stream
    cuda.get_current_stream = lambda device_id=-1: Stream.null
    cuda.get_local_runtime_version = lambda: 12080  # installed: older than built for
    cuda.nvrtc = types.SimpleNamespace(getVersion=lambda: (12, 9))
    cuda.alloc_pinned_memory = rt.pinned.malloc
    cuda.MemoryPool, cuda.PinnedMemoryPool = MemoryPool, PinnedMemoryPool
    cuda.memory = types.SimpleNamespace(OutOfMemoryError=OutOfMemoryError)
    cuda.compiler = types.SimpleNamespace(CompileException=_kernel.CompileException)
    cuda.is_available = lambda: isinstance(rt.count, int) and rt.count > 0
    return cuda


def make(
    count=1,
    version=VERSION,
    kernel="ok",
    gemm="ok",
    name=NAME,
    memory=(80 * GiB, 80 * GiB),
    pooled=0,
) -> types.ModuleType:
    """A fresh stand-in ``cupy`` module. ``count``: the GPUs the driver reports, or an
    exception it raises; ``version``: CuPy's; ``kernel`` / ``gemm``: "ok", or a broken
    installation: "raise" (NVRTC or cuBLAS missing), "wrong" (numbers off by one; a product
    also "rounding": off by 1e-7 relative); ``memory``: the driver's (free, total) bytes
    before this process holds any; ``pooled``: bytes CuPy's pool already holds unused."""
    rt = Runtime(count, version, kernel, gemm, name, memory, pooled)
    rt.namespace = _namespace(rt, version)
    return rt.namespace


def install(module: types.ModuleType, setitem=None) -> None:
    """Make ``module`` the ``cupy`` that ``import cupy`` (and its submodules) find;
    ``setitem``: pytest's monkeypatch.setitem, to undo it after a test."""
    put = setitem or (lambda d, k, v: d.__setitem__(k, v))
    put(sys.modules, "cupy", module)
    put(sys.modules, "cupy.cuda", module.cuda)
    put(sys.modules, "cupy.cublas", module.cublas)


def is_standin(module) -> bool:
    return getattr(module, "__file__", None) == __file__
