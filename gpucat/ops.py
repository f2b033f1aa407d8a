"""Ops: the numeric primitives of a training iteration, one object per device (Thinc's pattern).

``Ops`` writes every primitive once with the array namespace's own operations: the readable
reference, and what the strict stand-in device runs. ``NumpyOps`` and ``CupyOps`` override
a few of them, with the same names and signatures, where their device has a faster way:
NumPy works in place and chooses the memory layout of the two products with the data by
timing them (a planner, as FFTW and cuDNN's benchmark mode have); CuPy fuses element-wise
steps into CUDA kernels, writes W −= dZ·A_prevᵀ straight into W with one GEMM and updates
each parameter with one optimizer kernel. Every override is tested equal to ``Ops``.

The network (network.py) and the optimizers (optim.py) are written against these names,
in the order of the README's equations.
"""

from __future__ import annotations

import functools
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucat.errors import GpucatError

Array = Any  # an array of the backend's namespace (NumPy, CuPy, array-api-strict)


class Ops:
    """The primitives, written once against the array namespace ``xp``."""

    name = "generic"
    plans_layout = False  # whether arrange_first_layer chooses anything (NumpyOps)

    def __init__(self, backend):
        self.backend, self.xp = backend, backend.xp

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
        pos = self.backend.asarray(np.asarray(positions).reshape(-1, 1))
        onehot = xp.astype(pos == xp.arange(width, **self._on()), xp.float64)
        return xp.astype(values, xp.float64) @ onehot

    def zeros(self, shape, dtype: str = "float64") -> Array:
        xp = self.xp
        return xp.zeros(shape, dtype=getattr(xp, dtype), **self._on())

    def _on(self) -> dict:
        return {"device": self.backend.device} if self.backend.name == "strict" else {}

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

    # --- the data ----------------------------------------------------------------------------
    def arrange_first_layer(self, W1: Array, X: Array, layout: str | None = None) -> Array:
        """W1 stored as this device runs the products with X fastest (here: as it is)."""
        return W1

    layout: str | None = None  # the product layout chosen for the first layer, if any


# --- NumPy --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """How NumpyOps runs the two products with the data X (n_x, m), kept as rows (m, n_x):
    W1 stored as (n_1, n_x) in C order or in Fortran order (W1ᵀ contiguous), and the forward
    product computed as W1·X or as its transpose (Xᵀ·W1ᵀ)ᵀ. The update dZ1·Xᵀ is computed in
    W1's own order. Every layout reads X where it lies: none copies it."""

    name: str
    fortran: bool  # W1 kept as W1ᵀ contiguous
    transposed: bool  # forward as (Xᵀ·W1ᵀ)ᵀ


LAYOUTS = {
    c.name: c
    for c in (
        Layout("W1 Z1", False, False),
        Layout("W1 Z1T", False, True),
        Layout("W1T Z1", True, False),
        Layout("W1T Z1T", True, True),
    )
}


class Plans:
    """The layouts chosen on this machine, remembered in a small JSON file (FFTW's
    "wisdom"): every later run with the same shapes, dtype, CPU and BLAS uses the same
    layout, so that runs repeat bit for bit across processes. GPUCAT_LAYOUT_CACHE names the
    file (default ~/.cache/gpucat/layouts.json; an empty value keeps plans in memory only)."""

    def __init__(self):
        self.memory: dict[str, str] = {}

    @staticmethod
    def path():
        from pathlib import Path

        where = os.environ.get("GPUCAT_LAYOUT_CACHE")
        if where is not None:
            return Path(where) if where else None
        cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(cache) / "gpucat" / "layouts.json"

    @staticmethod
    def key(W1, X) -> str:
        from gpucat.info import blas

        libs = ";".join(
            f"{b['library']} {b['version']} {b.get('architecture')} x{b['threads']}" for b in blas()
        )
        return f"planner 3 | {X.shape} {X.dtype} {W1.shape} | numpy {np.__version__} | {libs}"

    def _load(self) -> dict:
        import json

        path = self.path()
        try:
            return json.loads(path.read_text()) if path else {}
        except (OSError, ValueError):
            return {}

    def get(self, key: str) -> str | None:
        name = self.memory.get(key) or self._load().get(key)
        return name if name in LAYOUTS else None

    def put(self, key: str, name: str) -> None:
        import json
        import tempfile

        self.memory[key] = name
        path = self.path()
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            known = {**self._load(), key: name}
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".layouts.", suffix=".tmp")
            with os.fdopen(fd, "w") as f:
                json.dump(known, f, indent=1)
            os.replace(tmp, path)  # atomic: parallel runs never read half a file
        except OSError:
            pass  # a read-only home: plan again next time


PLANS = Plans()


_ROW_MAJOR, _N, _T = 101, 111, 112  # CBLAS_ORDER and CBLAS_TRANSPOSE values


@functools.cache
def blas_gemm() -> dict | None:
    """{dtype: cblas ?gemm} of the BLAS NumPy itself runs on (the library threadpoolctl
    finds loaded: the same code and thread pool), called through ctypes for what NumPy does
    not offer, C ← α·A·B + β·C in one call. Only symbols whose integer width is certain
    (NumPy's wheels: ``scipy_cblas_?gemm64_``; ``cblas_?gemm64_``), checked on a small product;
    None elsewhere, and the update takes a buffer and a subtraction instead."""
    import ctypes

    from gpucat.info import blas

    for lib in blas():
        try:
            handle = ctypes.CDLL(lib["path"]) if lib.get("path") else None
        except OSError:
            continue
        for name in ("scipy_cblas_{}gemm64_", "cblas_{}gemm64_"):
            fns = {}
            for dtype, letter, real in (
                ("float32", "s", ctypes.c_float),
                ("float64", "d", ctypes.c_double),
            ):
                fn = getattr(handle, name.format(letter), None)
                if fn is not None:
                    i, p = ctypes.c_int64, ctypes.c_void_p
                    fn.argtypes, fn.restype = [i] * 6 + [real, p, i, p, i, real, p, i], None
                    fns[np.dtype(dtype)] = fn
            if len(fns) == 2 and all(_gemm_checks(dtype, fns) for dtype in fns):
                return fns
    return None


def _gemm_checks(dtype, fns) -> bool:
    rng = np.random.default_rng(0)
    W, dZ, A = (rng.integers(-4, 5, shape).astype(dtype) for shape in ((3, 5), (3, 2), (5, 2)))
    expected = 0.5 * W - dZ @ A.T  # small integers: exact in both dtypes
    return gemm_descend(W, dZ, A, 0.5, fns) and np.array_equal(W, expected)


def gemm_descend(W, dZ, A_prev, decay: float, fns: dict | None = None) -> bool:
    """W ← decay·W − dZ·A_prevᵀ in one BLAS call (no buffer, one pass over W), whatever the
    order W and its operands are stored in; False, touching nothing, where it cannot."""
    fns = fns or blas_gemm()
    if not fns or W.dtype not in fns or not W.dtype == dZ.dtype == A_prev.dtype:
        return False
    if W.flags.c_contiguous:  # C = a·b in row-major terms
        C, a, b = W, dZ, A_prev.T
    elif W.flags.f_contiguous:  # W kept as W1ᵀ: Wᵀ ← decay·Wᵀ − A_prev·dZᵀ
        C, a, b = W.T, A_prev, dZ.T
    else:
        return False
    if min(a.shape) < 1 or not all(x.flags.c_contiguous or x.flags.f_contiguous for x in (a, b)):
        return False
    # each operand as stored: row-major as it is, or column-major as its transpose
    (ta, lda), (tb, ldb) = (
        (_N, x.shape[1]) if x.flags.c_contiguous else (_T, x.shape[0]) for x in (a, b)
    )
    M, N = C.shape
    fns[W.dtype](
        _ROW_MAJOR, ta, tb, M, N, a.shape[1], -1.0, a.ctypes.data, lda, b.ctypes.data, ldb,
        decay, C.ctypes.data, N
    )  # fmt: skip
    return True


class NumpyOps(Ops):
    """NumPy: the products with X in the planned layout, element-wise steps in place, and
    the first layer's update as one BLAS call into W (``gemm_descend``) where it can."""

    name = "numpy"
    plans_layout = True
    GEMM_FROM = 65536  # weights of at least this many entries are updated by gemm_descend

    def __init__(self, backend):
        super().__init__(backend)
        self._X_shape: tuple | None = None  # the data's shape the plan is for
        self._plan: Layout | None = None
        self._buffers: dict = {}

    def arrange_first_layer(self, W1, X, layout=None):
        """Choose the layout of the products with X (``layout``: a resumed run's; else
        GPUCAT_NUMPY_LAYOUT; else this machine's plan for these shapes (Plans); else a plan
        made by timing them) and return W1 stored in it."""
        name = layout or os.environ.get("GPUCAT_NUMPY_LAYOUT")
        if name and name not in LAYOUTS:
            raise GpucatError(f"unknown layout {name!r}: choose one of {', '.join(LAYOUTS)}.")
        if not name:
            key = PLANS.key(W1, X)
            name = PLANS.get(key)
            if name is None:
                name = plan_layout(W1, X)[0].name
                PLANS.put(key, name)
        self._plan, self._X_shape, self.layout = LAYOUTS[name], X.shape, name
        return np.asfortranarray(W1) if self._plan.fortran else np.ascontiguousarray(W1)

    def matmul(self, A, B):
        if self._plan is not None and self._plan.transposed and B.shape == self._X_shape:
            return np.matmul(B.T, A.T).T  # (Xᵀ·W1ᵀ)ᵀ
        return np.matmul(A, B)

    def matmul_nt(self, A, B):
        return np.matmul(A, B.T)

    def _buffer(self, like):
        key = (like.shape, like.dtype.str, like.flags.f_contiguous and not like.flags.c_contiguous)
        if key not in self._buffers:
            self._buffers[key] = np.empty_like(like, order="F" if key[2] else "C")
        return self._buffers[key]

    def descend(self, W, dZ, A_prev, decay=1.0):
        if W.size < self.GEMM_FROM:  # small: a temporary costs less than a BLAS call
            if decay != 1.0:
                W *= decay
            W -= np.matmul(dZ, A_prev.T)
            return
        if gemm_descend(W, dZ, A_prev, decay):
            return
        buf = self._buffer(W)
        if buf.flags.c_contiguous:
            np.matmul(dZ, A_prev.T, out=buf)
        else:  # W kept as W1ᵀ: compute (A_prev · dZᵀ) straight into its memory
            np.matmul(A_prev, dZ.T, out=buf.T)
        if decay != 1.0:
            W *= decay
        W -= buf

    def descend_bias(self, b, dZ):
        b -= np.add.reduce(dZ, axis=1, keepdims=True)

    def sum_rows(self, dZ):
        return np.add.reduce(dZ, axis=1, keepdims=True)

    def scatter_columns(self, values, positions, width):
        out = np.zeros((values.shape[0], width))
        out[:, positions] = values
        return out

    def bias_relu(self, Z, b, mask=None):
        Z += b
        A = np.maximum(Z, 0.0)
        if mask is not None:
            A *= mask
        return A

    def backprop_relu(self, dA, Z, mask=None):
        if mask is not None:
            dA *= mask
        dA *= Z > 0.0  # in place: dA is this pass's own array (0·dA: −0 for negative dA)
        return dA

    def output(self, Z, b, Y, scale):
        Z += b
        e = np.exp(-np.abs(Z))
        loss = np.maximum(Z, 0.0)
        loss -= Z * Y
        loss += np.log1p(e)
        loss = np.add.reduce(loss, axis=None)
        if scale is None:
            return None, loss
        r = 1.0 / (1.0 + e)
        s = np.where(Z >= 0.0, r, e * r)
        s -= Y
        s *= scale
        return s, loss


def plan_layout(W1: np.ndarray, X: np.ndarray, budget_s: float = 0.5) -> tuple[Layout, dict]:
    """The fastest Layout for these shapes, by timing each one's forward product and update
    (into W1 as it is stored, as NumpyOps.descend does it) on data of X's shape. The layouts
    take turns, round after round, within about ``budget_s`` (at least 3 rounds after a
    warm-up), and each is judged by its median: this machine's noise is a few tens of
    percent, the layouts' differences often a few. The best layout differs between CPUs,
    BLAS builds, dtypes and sizes (docs/benchmarks.md). Returns the choice and each
    layout's median time in ms."""
    rng = np.random.default_rng(0)
    dZ = rng.standard_normal((W1.shape[0], X.shape[1])).astype(X.dtype)
    runs = {}
    for c in LAYOUTS.values():
        W = np.asfortranarray(W1) if c.fortran else np.ascontiguousarray(W1).copy()
        buf = np.empty_like(W, order="F" if c.fortran else "C")

        def run(c=c, W=W, buf=buf):
            np.matmul(X.T, W.T) if c.transposed else np.matmul(W, X)
            if W.size >= NumpyOps.GEMM_FROM and gemm_descend(W, dZ, X, 1.0):
                return
            if c.fortran:
                np.matmul(X, dZ.T, out=buf.T)
            else:
                np.matmul(dZ, X.T, out=buf)
            np.subtract(W, buf, out=W)

        runs[c.name] = run
    times: dict[str, list[float]] = {name: [] for name in runs}
    start = time.perf_counter()
    rounds = 0
    while rounds < 4 or (rounds < 15 and time.perf_counter() - start < budget_s):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - t)
        rounds += 1
    medians = {name: 1000 * float(np.median(ts[1:])) for name, ts in times.items()}
    return LAYOUTS[min(medians, key=medians.get)], medians


# --- CuPy ---------------------------------------------------------------------------------


class CupyOps(Ops):
    """CUDA: element-wise steps as fused kernels (one launch each), each gradient-descent
    update as one cuBLAS GEMM into W (beta = the decay), each optimizer step as one kernel."""

    name = "cupy"

    def __init__(self, backend):
        super().__init__(backend)
        import cupy

        self.cupy = cupy
        self._ones: dict = {}
        K = cupy.ElementwiseKernel
        # max(z, 0) as NumPy's maximum computes it: NaN stays NaN (`z > 0 ? z : 0` would
        # turn a NaN layer into zeros, and a diverged run into a quietly constant one)
        relu = "(z > (T)0 || z != z ? z : (T)0)"
        self._bias_relu = K("T b", "T z, T a", f"z = z + b; a = {relu}", "gpucat_bias_relu")
        self._bias_relu_mask = K(
            "T b, T mask", "T z, T a", f"z = z + b; a = {relu} * mask", "gpucat_bias_relu_mask"
        )
        self._output = K(
            "T b, T y, T scale",
            "T z, T dz, T loss",
            f"""
            z = z + b;
            T e = exp(-fabs(z));
            T r = (T)1 / ((T)1 + e);
            T s = z >= (T)0 ? r : e * r;
            dz = (s - y) * scale;
            loss = {relu} - z * y + log1p(e);
            """,
            "gpucat_sigmoid_output",
        )
        self._loss = K(
            "T b, T y",
            "T z, T loss",
            f"z = z + b; loss = {relu} - z * y + log1p(exp(-fabs(z)))",
            "gpucat_loss",
        )
        self._backprop_relu = K("T z", "T da", "if (!(z > (T)0)) da = (T)0", "gpucat_relu_back")
        self._backprop_relu_mask = K(
            "T z, T mask", "T da", "da = z > (T)0 ? da * mask : (T)0", "gpucat_relu_back_mask"
        )
        self._momentum = K(
            "T g, T beta, T lr, T l2",
            "T p, T v",
            "T gg = g + l2 * p; v = beta * v + ((T)1 - beta) * gg; p = p - lr * v",
            "gpucat_momentum",
        )
        self._adam = K(
            "T g, T beta1, T beta2, T eps, T lr_c1, T c2, T l2",
            "T p, T m, T v",
            """
            T gg = g + l2 * p;
            m = beta1 * m + ((T)1 - beta1) * gg;
            v = beta2 * v + ((T)1 - beta2) * (gg * gg);
            p = p - lr_c1 * m / (sqrt(v / c2) + eps);
            """,
            "gpucat_adam",
        )

    def scatter_columns(self, values, positions, width):
        out = self.cupy.zeros((values.shape[0], width))
        out[:, self.cupy.asarray(positions)] = values
        return out

    def bias_relu(self, Z, b, mask=None):
        A = self.cupy.empty_like(Z)
        if mask is None:
            self._bias_relu(b, Z, A)
        else:
            self._bias_relu_mask(b, mask, Z, A)
        return A

    def output(self, Z, b, Y, scale):
        losses = self.cupy.empty_like(Z)
        if scale is None:
            self._loss(b, Y, Z, losses)
            return None, losses.sum()
        dZ = self.cupy.empty_like(Z)
        self._output(b, Y, Z.dtype.type(scale), Z, dZ, losses)
        return dZ, losses.sum()

    def backprop_relu(self, dA, Z, mask=None):
        if mask is None:
            self._backprop_relu(Z, dA)
        else:
            self._backprop_relu_mask(Z, mask, dA)
        return dA

    def descend(self, W, dZ, A_prev, decay=1.0):
        from cupy import cublas

        cublas.gemm("N", "T", dZ, A_prev, out=W, alpha=-1.0, beta=decay)

    def descend_bias(self, b, dZ):
        from cupy import cublas

        cublas.gemm("N", "N", dZ, self._ones_for(dZ), out=b, alpha=-1.0, beta=1.0)  # b −= dZ·1

    def _ones_for(self, dZ):
        """A column of ones as long as dZ is wide (Σ dZ = dZ·1), made once per shape."""
        key = (dZ.shape[1], dZ.dtype)
        if key not in self._ones:
            self._ones[key] = self.cupy.ones((dZ.shape[1], 1), dtype=dZ.dtype)
        return self._ones[key]

    def momentum(self, p, g, v, beta, lr, l2=0.0):
        T = p.dtype.type
        self._momentum(g, T(beta), T(lr), T(l2), p, v)

    def adam(self, p, g, m, v, beta1, beta2, eps, lr, t, l2=0.0):
        T = p.dtype.type
        c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
        self._adam(g, T(beta1), T(beta2), T(eps), T(lr / c1), T(c2), T(l2), p, m, v)


def make_ops(backend) -> Ops:
    """The Ops of a backend: NumpyOps on NumPy, CupyOps on CuPy, the generic Ops elsewhere."""
    return {"numpy": NumpyOps, "cupy": CupyOps}.get(backend.name, Ops)(backend)
