"""The device: one object that moves a training run's arrays and computes on them.

``Device`` is written once against the array API standard: its data movement (to and from
the host, copies, scalars, free memory, synchronization, host staging for MPI) and its
math primitives (the steps of nn/network.py and nn/optim.py, in the order of the README's
equations). It is the readable reference, and what the strict stand-in device runs as it
is. ``NumpyDevice`` (cpu.py) and ``CupyDevice`` (cuda.py) override some of both, with the
same names and signatures, where their device has a faster or a necessary way (Thinc's
``Ops``, tinygrad's device classes); every override of a primitive is tested equal to this
code (``generic()``).

No code outside this package asks which device it runs on: it calls these methods.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from typing import Any

import numpy as np

Array = Any  # an array of the device's namespace (NumPy, CuPy, array-api-strict)

# The math primitives: what ``generic()`` resets to this class's own code.
PRIMITIVES = (
    "matmul",
    "matmul_tn",
    "matmul_nt",
    "sum_rows",
    "scatter_columns",
    "as_float",
    "bias_relu",
    "sigmoid",
    "output",
    "backprop_relu",
    "descend",
    "descend_bias",
    "sgd",
    "momentum",
    "adam",
)


class Device:
    """A device and its array namespace ``xp``; ``native`` is the namespace's own device
    object (passed as ``device=`` where arrays are made), ``label`` what a person reads."""

    name = "generic"  # the array library: "numpy", "cupy" or "strict"
    flag = "generic"  # the --device value (and ``device=`` argument) that selects it
    host_memory = True  # its arrays take host RAM: free memory is the host's

    def __init__(self, xp, native: Any, label: str):
        self.xp, self.native, self.label = xp, native, label

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"

    # --- data movement ---------------------------------------------------------------------
    def _on(self) -> dict:
        """Where new arrays go, as the namespace's creation functions take it."""
        return {"device": self.native}

    def asarray(self, host: np.ndarray, dtype: str | None = None) -> Array:
        """Copy a host (NumPy) array to this device, optionally casting it (on the host)."""
        if dtype is not None:
            host = np.asarray(host, dtype=dtype)
        return self.xp.asarray(host, copy=True, **self._on())

    def to_host(self, x: Array) -> np.ndarray:
        """A device array as a NumPy array (a host sync point)."""
        return np.from_dlpack(x)

    def copy(self, x: Array) -> Array:
        """A copy on the same device."""
        return self.xp.asarray(x, copy=True)

    def scalar(self, x: Array) -> float:
        """Read a 0-d device array as a Python float (a host sync point)."""
        return float(self.to_host(x))

    def zeros(self, shape, dtype: str = "float64") -> Array:
        return self.xp.zeros(shape, dtype=getattr(self.xp, dtype), **self._on())

    def free_memory(self) -> int:
        """Bytes of memory free on this device (here: the host's free pages)."""
        return free_pages()

    def synchronize(self) -> None:
        """Wait for queued device work, so that a clock read afterwards is honest."""

    def columns_bytes(self, values: int, stored, dtype: str, divisor: float) -> int:
        """Peak bytes ``to_columns`` holds on this device for ``values`` values stored as
        ``stored``: the stored bytes that cross over (on NumPy: the rows as read, a copy of
        the source's), and beside them the float copy, unless they are floats of the dtype
        already, taken as they are."""
        stored = np.dtype(stored)
        same = stored == np.dtype(dtype) and divisor == 1
        return values * (stored.itemsize + (0 if same else np.dtype(dtype).itemsize))

    def to_columns(self, rows: np.ndarray, dtype: str, divisor: float) -> Array:
        """Host rows (k, n_x), as stored, -> device columns (n_x, k) of the training dtype,
        divided by ``divisor`` on the device. Only the stored bytes cross to the device."""
        return self.staged_columns(self.stage_rows(rows, dtype, divisor), dtype, divisor)

    def stage_rows(self, rows: np.ndarray, dtype: str, divisor: float) -> Any:
        """The host half of ``to_columns``, which may run in another thread (a streamed
        batch's reader): here the rows in one contiguous block, ready to cross."""
        return np.ascontiguousarray(rows)

    def staged_columns(self, staged: Any, dtype: str, divisor: float) -> Array:
        """The device half of ``to_columns``, in the training thread."""
        return self.as_float(self.asarray(staged), dtype, divisor)

    def release_staging(self) -> None:
        """Give back host memory kept from uploads (CuPy's pinned staging blocks)."""

    def exchange(self, buf: Array, work: Callable[[Any], None], device_ok: bool = False) -> Array:
        """``buf`` after ``work`` (an MPI reduction) changed its values in place, where work
        can reach them: a host copy here, brought back; ``device_ok``: work may be handed
        device memory itself (CUDA-aware MPI)."""
        host = np.array(self.to_host(buf))
        work(host)
        return self.asarray(host)

    def exchange_route(self, device_ok: bool = False) -> str:
        """How ``exchange`` reaches the values, in words."""
        return "staged through host memory"

    def share_node(self, ranks: int) -> str:
        """Share the node with the other ``ranks`` processes on it (a data-parallel run): the
        CPU's BLAS threads split among them (N ranks each running a BLAS with all cores
        oversubscribe the machine, many times slower: docs/performance.md)."""
        threads = max(1, (os.cpu_count() or 1) // ranks)
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=threads, user_api="blas")
        return f"{threads} BLAS thread(s) per rank, {ranks} rank(s) on this node"

    def generic(self) -> Device:
        """This device with its own data movement and none of its own primitives: the
        readable reference that every override is tested equal to."""
        generic = object.__new__(_generic_class(type(self)))
        generic.__dict__.update(self.__dict__)
        return generic

    # --- conversion ------------------------------------------------------------------------
    def as_float(self, U: Array, dtype: str, divisor: float) -> Array:
        """Examples as stored, rows (k, n_x) on the device, -> the network's float columns
        (n_x, k): a transposed view of float rows, made with one new array at most (floats of
        the dtype already are taken as they are, or divided into one new array)."""
        xp = self.xp
        want = getattr(xp, dtype)
        if U.dtype == want:
            return (U if divisor == 1 else U / divisor).T
        R = xp.astype(U, want)
        if divisor != 1:
            R /= divisor  # in place: x / 255 in the dtype, the reference's rounding
        return R.T

    # --- products --------------------------------------------------------------------------
    def matmul(self, A: Array, B: Array) -> Array:
        """A · B: the linear step Z = W · A_prev."""
        return A @ B

    def matmul_tn(self, A: Array, B: Array) -> Array:
        """Aᵀ · B: dA_prev = Wᵀ · dZ."""
        return A.T @ B

    def matmul_nt(self, A: Array, B: Array) -> Array:
        """A · Bᵀ: dW = dZ · A_prevᵀ (the 1/m comes with dZ)."""
        return A @ B.T

    def sum_rows(self, dZ: Array) -> Array:
        """Σ dZ over the examples, as a column: db."""
        return self.xp.sum(dZ, axis=1, keepdims=True)

    def scatter_columns(self, values: Array, positions: np.ndarray, width: int) -> Array:
        """An (n, width) float64 array, zero but for ``values`` (n, k) in the columns
        ``positions`` (distinct): a one-hot product, since the array API has no scatter."""
        xp = self.xp
        pos = self.asarray(np.asarray(positions).reshape(-1, 1))
        onehot = xp.astype(pos == xp.arange(width, **self._on()), xp.float64)
        return xp.astype(values, xp.float64) @ onehot

    # --- forward ---------------------------------------------------------------------------
    def bias_relu(self, Z: Array, b: Array, mask: Array | None = None) -> Array:
        """Z += b in place (Z keeps the pre-activation for the backward pass); returns
        A = relu(Z), times the dropout mask when there is one."""
        Z += b
        A = self.xp.maximum(Z, 0.0)
        return A if mask is None else A * mask

    def sigmoid(self, Z: Array) -> Array:
        """1 / (1 + e^(−Z)) without overflow: e is only ever taken of −|Z|."""
        xp = self.xp
        e = xp.exp(-xp.abs(Z))
        r = 1.0 / (1.0 + e)
        return xp.where(Z >= 0.0, r, e * r)

    def output(self, Z: Array, b: Array, Y: Array, scale: float | None) -> tuple[Array, Array]:
        """The output layer, with Z += b in place: (dZ_L, Σ loss).

        dZ_L = (σ(Z) − Y) · scale (None: no dZ_L), the README's dA ⊙ σ′(Z) simplified;
        the loss from the logit, max(z, 0) − z·y + log(1 + e^(−|z|)), finite however
        saturated σ is; a 0-d sum, so that pieces of a data set add up before the mean."""
        xp = self.xp
        Z += b
        loss = xp.sum(xp.maximum(Z, 0.0) - Z * Y + xp.log1p(xp.exp(-xp.abs(Z))))
        return (None if scale is None else (self.sigmoid(Z) - Y) * scale), loss

    # --- backward --------------------------------------------------------------------------
    def backprop_relu(self, dA: Array, Z: Array, mask: Array | None = None) -> Array:
        """dZ = dA ⊙ relu′(Z), relu′(0) = 0; only the units the mask kept pass gradient."""
        if mask is not None:
            dA = dA * mask
        return self.xp.where(Z > 0.0, dA, 0.0)

    # --- updates ---------------------------------------------------------------------------
    def descend(self, W: Array, dZ: Array, A_prev: Array, decay: float = 1.0) -> None:
        """W ← decay·W − dZ · A_prevᵀ in place: gradient descent with the learning rate and
        1/m folded into dZ, and the L2 term as the decay 1 − lr·λ/M."""
        if decay != 1.0:
            W *= decay
        W -= self.matmul_nt(dZ, A_prev)

    def descend_bias(self, b: Array, dZ: Array) -> None:
        """b ← b − Σ dZ (dZ carries the learning rate and 1/m)."""
        b -= self.sum_rows(dZ)

    def sgd(self, p: Array, g: Array, lr: float, l2: float = 0.0) -> None:
        """p ← p − lr·(g + l2·p): gradient descent with a summed (reduced) gradient."""
        if l2:
            p *= 1.0 - lr * l2
        p -= lr * g

    def momentum(
        self, p: Array, g: Array, v: Array, beta: float, lr: float, l2: float = 0.0
    ) -> None:
        """v ← β·v + (1 − β)·(g + l2·p);  p ← p − lr·v."""
        if l2:
            g = g + l2 * p
        v *= beta
        v += (1.0 - beta) * g
        p -= lr * v

    def adam(
        self,
        p: Array,
        g: Array,
        m: Array,
        v: Array,
        beta1: float,
        beta2: float,
        eps: float,
        lr: float,
        t: int,
        l2: float = 0.0,
    ) -> None:
        """m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;
        p ← p − lr·m̂ / (√v̂ + ε), with m̂ = m / (1 − β1ᵗ), v̂ = v / (1 − β2ᵗ)."""
        xp = self.xp
        if l2:
            g = g + l2 * p
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * (g * g)
        c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
        p -= (lr / c1) * m / (xp.sqrt(v / c2) + eps)


@functools.cache
def _generic_class(cls: type) -> type:
    """``cls`` with every primitive reset to ``Device``'s own: its data movement kept."""
    return type(f"Generic{cls.__name__}", (cls,), {k: getattr(Device, k) for k in PRIMITIVES})


def free_pages() -> int:
    """Bytes of host memory free now (the OS's free pages), else a modest 2 GiB."""
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**31


def memory_available() -> int:
    """Bytes of host memory the system could give this process now (Linux: MemAvailable,
    which counts the page cache it can reclaim), else the free pages."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return free_pages()
