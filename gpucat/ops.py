"""Ops: the numeric primitives of a training iteration, one object per device (Thinc's pattern).

``Ops`` writes every primitive once with the array namespace's own operations: the readable
reference, and what the strict stand-in device runs. ``NumpyOps`` and ``CupyOps`` override
a few of them, with the same names and signatures, where their device has a faster way:
NumPy works in place and multiplies by the data in the layout measured fastest; CuPy fuses
element-wise steps into CUDA kernels, writes W −= dZ·A_prevᵀ straight into W with one GEMM and updates
each parameter with one optimizer kernel. Every override is tested equal to ``Ops``.

The network (network.py) and the optimizers (optim.py) are written against these names,
in the order of the README's equations.
"""

from __future__ import annotations

from typing import Any

import numpy as np

Array = Any  # an array of the backend's namespace (NumPy, CuPy, array-api-strict)


class Ops:
    """The primitives, written once against the array namespace ``xp``."""

    name = "generic"

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


# --- NumPy --------------------------------------------------------------------------------


class NumpyOps(Ops):
    """NumPy: the product with the data in its faster layout, element-wise steps in place,
    the large updates through one buffer."""

    name = "numpy"
    GEMM_FROM = 65536  # weights of at least this many entries are updated through a buffer

    def __init__(self, backend):
        super().__init__(backend)
        self._buffers: dict = {}

    def matmul(self, A, B):
        """A · B; where B is a transposed view of rows (the data: examples one per row, seen
        as columns), as (Bᵀ · Aᵀ)ᵀ, which reads B where it lies: on the machine measured
        (docs/performance.md) 1.05-1.20x faster in whole fits than the other layouts of W1
        and Z1, whose choice by timing at setup was not worth its cost."""
        if B.flags.f_contiguous and not B.flags.c_contiguous:
            return np.matmul(B.T, A.T).T
        return np.matmul(A, B)

    def matmul_nt(self, A, B):
        return np.matmul(A, B.T)

    def _buffer(self, like):
        key = (like.shape, like.dtype.str)
        if key not in self._buffers:
            self._buffers[key] = np.empty(like.shape, like.dtype)
        return self._buffers[key]

    def descend(self, W, dZ, A_prev, decay=1.0):
        if W.size < self.GEMM_FROM:  # small: a temporary costs less than a BLAS call
            if decay != 1.0:
                W *= decay
            W -= np.matmul(dZ, A_prev.T)
            return
        buf = self._buffer(W)
        np.matmul(dZ, A_prev.T, out=buf)
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
