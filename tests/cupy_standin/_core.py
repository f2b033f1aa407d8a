"""The stand-in's arrays, namespace functions and memory, after CuPy 14's own source.

Rules followed, each where CuPy states it (cupy/_core/core.pyx, _kernel.pyx,
_routines_indexing.pyx, _creation/basic.py, cuda/memory.pyx, cuda/pinned_memory.pyx):

- ``ndarray`` is not a NumPy array: ``__array__`` raises TypeError ("Implicit conversion to
  a NumPy array is not allowed"), so ``numpy.asarray(x)`` does; a NumPy array (or a list)
  handed to an operator or a function raises TypeError ("Unsupported type"), from either
  side (``__array_ufunc__``); ``get()`` is the way to the host, ``float()``, ``int()`` and
  ``bool()`` of one element read it back as CuPy's do.
- reductions return 0-d device arrays; Python scalars are weak and NumPy scalars strong
  in promotion (NEP 50, as CuPy 14 and NumPy 2 both do it).
- ``astype`` and ``cupy.astype`` copy unless ``copy=False`` and the dtype is the same.
- integer array indices and ``take`` wrap around out-of-range values; assigning a NumPy
  array into a basic slice raises ("non-scalar numpy.ndarray cannot be used for fill").
- memory comes from a pool that keeps what it once held (``total_bytes``) and hands it out
  again; ``memGetInfo`` counts the pool's blocks as taken; a request past the device's memory
  raises OutOfMemoryError. New arrays from ``empty`` hold NaN (a GPU's pool hands back
  whatever was there), so reading memory never written shows.
- ``asarray`` of a host array copies it through a pinned staging block of its size, which
  the pinned pool keeps as a free block afterwards (``_array_default``).

What it cannot show: NVRTC, the driver, real device memory and timing, FMA contraction
(NVRTC contracts a*b+c by default; the host build here does not), concurrency of streams.
"""

from __future__ import annotations

import math
import numbers
import weakref

import numpy as np

SCALARS = (bool, int, float, complex)
UNIT = 512  # the device pool's allocation unit (cupy/cuda/memory.pyx)


class OutOfMemoryError(MemoryError):
    """What CuPy raises when the device has no room for an allocation."""

    def __init__(self, size: int, total: int, limit: int):
        super().__init__(
            f"Out of memory allocating {size:,} bytes (allocated so far: {total:,} bytes, "
            f"limit set to: {limit:,} bytes)."
        )


class MemoryPool:
    """The device memory pool: bytes in use, and the blocks kept once freed (reused for later
    allocations; given back to the device only by ``free_all_blocks``)."""

    def __init__(self, runtime, pooled: int = 0):
        self._runtime, self._used, self._held = runtime, 0, int(pooled)

    def used_bytes(self) -> int:
        return self._used

    def total_bytes(self) -> int:
        return self._held

    def free_bytes(self) -> int:
        return self._held - self._used

    def free_all_blocks(self, stream=None) -> None:
        self._held = self._used

    def n_free_blocks(self) -> int:
        return 1 if self._held > self._used else 0

    def _malloc(self, nbytes: int) -> int:
        size = -(-nbytes // UNIT) * UNIT
        if self._used + size > self._held:  # the pool grows from the device's free memory
            room = self._runtime.driver_free() + (self._held - self._used)
            if size > room:
                self.free_all_blocks()
                room = self._runtime.driver_free()
                if size > room:
                    raise OutOfMemoryError(size, self._used, self._runtime.memory_total)
            self._held = self._used + size
        self._used += size
        return size

    def _free(self, size: int) -> None:
        self._used -= size


class PinnedMemoryPointer(bytearray):
    """Page-locked host memory: a buffer NumPy can wrap (``numpy.frombuffer``)."""

    def size(self) -> int:
        return len(self)


class PinnedMemoryPool:
    """Pinned host blocks, sized up to a power of two of 512-byte units, kept as free blocks
    once released and reused for requests of the same size (cupy/cuda/pinned_memory.pyx)."""

    def __init__(self):
        self._free: dict[int, int] = {}  # size -> free blocks of it
        self.bytes_in_use = 0

    def malloc(self, size: int) -> PinnedMemoryPointer:
        unit = -(-size // UNIT) * UNIT
        block = 1 << max(unit - 1, 0).bit_length() if unit else 0
        if self._free.get(block):
            self._free[block] -= 1
        mem = PinnedMemoryPointer(block)
        self.bytes_in_use += block
        weakref.finalize(mem, self._release, block)
        return mem

    def _release(self, block: int) -> None:
        self.bytes_in_use -= block
        self._free[block] = self._free.get(block, 0) + 1

    def free_all_blocks(self) -> None:
        self._free.clear()

    def n_free_blocks(self) -> int:
        return sum(self._free.values())

    def free_bytes(self) -> int:
        """The bytes the free blocks hold (not CuPy API: for the stand-in's own tests)."""
        return sum(size * n for size, n in self._free.items())


def _root(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


class ndarray:  # noqa: N801 (CuPy's name)
    """A device array: NumPy memory inside, reachable from the host only through ``get()``."""

    __slots__ = ("_a", "_rt", "__weakref__")

    def __init__(self, shape, dtype=float, memptr=None, strides=None, order="C"):
        raise TypeError("the stand-in makes arrays through cupy.empty, cupy.asarray, ...")

    @classmethod
    def _wrap(cls, a, rt) -> ndarray:
        a = np.asarray(a)
        if a.dtype.kind == "O":
            raise TypeError(f"Unsupported dtype {a.dtype}")
        self = object.__new__(cls)
        self._a, self._rt = a, rt
        rt.track(a)
        return self

    # --- attributes ------------------------------------------------------------------------
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    size = property(lambda self: self._a.size)
    ndim = property(lambda self: self._a.ndim)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    _c_contiguous = property(lambda self: self._a.flags.c_contiguous)
    _f_contiguous = property(lambda self: self._a.flags.f_contiguous)
    device = property(lambda self: self._rt.current_device())

    @property
    def T(self) -> ndarray:
        return self._view(self._a.T)

    def _view(self, a) -> ndarray:
        return ndarray._wrap(a, self._rt)

    # --- the host boundary -----------------------------------------------------------------
    def __array__(self, dtype=None, copy=None):
        raise TypeError(
            "Implicit conversion to a NumPy array is not allowed. "
            "Please use `.get()` to construct a NumPy array explicitly."
        )

    def get(self, stream=None, order="C", out=None, blocking=True) -> np.ndarray:
        self._rt.syncs += 1  # a copy to the host waits for the device
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained fromcupy.ndarray")
            if self.dtype != out.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
            if self.shape != out.shape:
                raise ValueError(
                    f"Shape mismatch. Expected shape: {self.shape}, actual shape: {out.shape}"
                )
            out[...] = self._a
            return out
        order = order.upper()
        if order == "A":
            order = "F" if self._a.flags.f_contiguous else "C"
        return np.array(self._a, order=order, copy=True)

    def set(self, arr, stream=None) -> None:
        if not isinstance(arr, np.ndarray):
            raise TypeError(f"Only numpy.ndarray can be set to cupy.ndarray, not {type(arr)}")
        if arr.dtype != self.dtype or arr.shape != self.shape:
            raise ValueError("Shape or dtype mismatch.")
        self._a[...] = arr

    def item(self):
        return self.get().item()

    def tolist(self):
        return self.get().tolist()

    def __float__(self):
        return float(self.get())

    def __int__(self):
        return int(self.get())

    def __index__(self):
        return int(self.get())

    def __bool__(self):
        if self.size != 1:
            raise ValueError(
                "The truth value of an array with more than one element is ambiguous. "
                "Use a.any() or a.all()"
            )
        return bool(self.get())

    def __len__(self):
        if self.ndim == 0:
            raise TypeError("len() of unsized object")
        return self.shape[0]

    def __iter__(self):
        if self.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self.shape[0]))

    def __repr__(self):
        return repr(self.get())

    def __str__(self):
        return str(self.get())

    def __format__(self, spec):
        return format(self.get(), spec)

    def __reduce__(self):
        raise TypeError("the stand-in's device arrays do not pickle")

    # --- NumPy's dispatch ------------------------------------------------------------------
    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method != "__call__":
            return NotImplemented
        func = getattr(self._rt.namespace, ufunc.__name__, None)
        if func is None:
            return NotImplemented
        return func(*inputs, **kwargs)

    def __array_function__(self, func, types, args, kwargs):
        mine = getattr(self._rt.namespace, func.__name__, None)
        if mine is None or not all(issubclass(t, ndarray) for t in types):
            return NotImplemented
        return mine(*args, **kwargs)

    # --- methods ---------------------------------------------------------------------------
    def astype(self, dtype, order="K", casting=None, subok=None, copy=True) -> ndarray:
        if not copy and self.dtype == np.dtype(dtype):
            return self
        return self._view(self._a.astype(dtype, order=order))

    def copy(self, order="C") -> ndarray:
        return self._view(np.array(self._a, order=order, copy=True))

    def fill(self, value) -> None:
        if isinstance(value, ndarray):
            if value.shape != ():
                raise ValueError("non-scalar cupy.ndarray cannot be used for fill")
            value = value._a[()]
        else:
            value = np.asarray(value, dtype=self.dtype)
            if value.shape != ():
                raise ValueError("non-scalar numpy.ndarray cannot be used for fill")
        self._a.fill(value)

    def reshape(self, *shape, order="C") -> ndarray:
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        return self._view(self._a.reshape(shape, order=order))

    def ravel(self, order="C") -> ndarray:
        return self._view(self._a.ravel(order=order))

    def transpose(self, *axes) -> ndarray:
        return self._view(self._a.transpose(*axes))

    def take(self, indices, axis=None, out=None) -> ndarray:
        return self._rt.namespace.take(self, indices, axis=axis)

    def sum(self, axis=None, dtype=None, out=None, keepdims=False):
        return self._rt.reduce(np.sum, self, axis, dtype=dtype, keepdims=keepdims)

    def max(self, axis=None, out=None, keepdims=False):
        return self._rt.reduce(np.max, self, axis, keepdims=keepdims)

    def min(self, axis=None, out=None, keepdims=False):
        return self._rt.reduce(np.min, self, axis, keepdims=keepdims)

    def mean(self, axis=None, dtype=None, out=None, keepdims=False):
        return self._rt.reduce(np.mean, self, axis, dtype=dtype, keepdims=keepdims)

    def any(self, axis=None, out=None, keepdims=False):
        return self._rt.reduce(np.any, self, axis, keepdims=keepdims)

    def all(self, axis=None, out=None, keepdims=False):
        return self._rt.reduce(np.all, self, axis, keepdims=keepdims)

    def dot(self, b, out=None):
        return self._rt.namespace.dot(self, b)

    # --- indexing --------------------------------------------------------------------------
    def __getitem__(self, key):
        return self._view(self._a[self._rt.index(key, self.shape)])

    def __setitem__(self, key, value):
        index = self._rt.index(key, self.shape)
        advanced = any(isinstance(k, np.ndarray) for k in _as_tuple(index))
        if isinstance(value, ndarray):
            self._a[index] = value._a
        elif advanced:  # CuPy makes a device array of the value (core.array) there
            self._a[index] = np.asarray(value, dtype=self.dtype)
        else:  # basic indices: CuPy fills the view with a scalar, and refuses anything else
            target = self._view(self._a[index])
            target.fill(value)

    # --- arithmetic ------------------------------------------------------------------------
    def __neg__(self):
        return self._rt.ufunc(np.negative, self)

    def __pos__(self):
        return self._rt.ufunc(np.positive, self)

    def __abs__(self):
        return self._rt.ufunc(np.absolute, self)

    def __invert__(self):
        return self._rt.ufunc(np.invert, self)


def _as_tuple(key):
    return key if isinstance(key, tuple) else (key,)


def _binary(ufunc, reflected=False, inplace=False):
    def op(self, other):
        if inplace:
            self._rt.ufunc(ufunc, self, other, out=self)
            return self
        if reflected:
            return self._rt.ufunc(ufunc, other, self)
        return self._rt.ufunc(ufunc, self, other)

    return op


for _name, _ufunc in (
    ("add", np.add),
    ("sub", np.subtract),
    ("mul", np.multiply),
    ("truediv", np.true_divide),
    ("floordiv", np.floor_divide),
    ("mod", np.remainder),
    ("pow", np.power),
    ("matmul", np.matmul),
    ("and", np.bitwise_and),
    ("or", np.bitwise_or),
    ("xor", np.bitwise_xor),
):
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
    setattr(ndarray, f"__r{_name}__", _binary(_ufunc, reflected=True))
    setattr(ndarray, f"__i{_name}__", _binary(_ufunc, inplace=True))
for _name, _ufunc in (
    ("lt", np.less),
    ("le", np.less_equal),
    ("gt", np.greater),
    ("ge", np.greater_equal),
    ("eq", np.equal),
    ("ne", np.not_equal),
):
    setattr(ndarray, f"__{_name}__", _binary(_ufunc))
ndarray.__hash__ = None


def check_operand(x):
    """An argument of a device function as CuPy's _preprocess_args sees it: a device array,
    or a Python or NumPy scalar; anything else (a NumPy array, a list) is refused."""
    if isinstance(x, ndarray):
        return x._a
    if type(x) in SCALARS or isinstance(x, np.generic):
        return x
    raise TypeError(f"Unsupported type {type(x)}")


def is_scalar(x) -> bool:
    return type(x) in SCALARS or isinstance(x, (np.generic, numbers.Number))


def clp2(n: int) -> int:
    return 1 << math.ceil(math.log2(n)) if n > 1 else n
