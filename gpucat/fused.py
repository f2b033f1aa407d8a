"""The fused solver (``--solver fused``): the direct algorithm in fewer, larger steps.

One iteration of network.py's generic code launches about 30 array operations; on a GPU
each costs 10-20 µs of Python and launch overhead, so the reference recipe is bound by
launches, not arithmetic. ``FusedSolver`` runs the same arithmetic as a handful of fused
primitives (``Ops``), in the order of network.forward / network.backward:

- ``bias_relu``: Z += b and A = relu(Z), one pass;
- ``output``: Z_L += b_L, the sigmoid, dZ_L = (A_L - Y) * lr/m and the per-example losses,
  one pass;
- ``relu_backward``: dZ = dA where Z > 0, else 0, in place;
- ``update``: W -= dZ @ A_prevᵀ as one matrix product into W (beta = 1), b -= sum(dZ).

``Ops`` writes each primitive once against the array namespace (the readable reference,
used on NumPy and on the strict stand-in device); ``CupyOps`` overrides them with CuPy
ElementwiseKernels and cuBLAS GEMM with beta = 1, the same names and signatures (Thinc's
Ops / CupyOps pattern). Every backend's run is tested equal to the plain direct algorithm.
"""

from __future__ import annotations

from typing import Any

from gpucat import network
from gpucat.network import Array, Layer
from gpucat.solvers import DirectSolver


class Ops:
    """The fused primitives, written with the array namespace's own operations."""

    def __init__(self, xp: Any):
        self.xp = xp

    def bias_relu(self, Z: Array, b: Array) -> Array:
        """Z += b (in place); returns relu(Z)."""
        Z += b
        return network.relu(self.xp, Z)

    def output(self, Z: Array, b: Array, Y: Array, scale: float) -> tuple[Array, Array]:
        """Z += b (in place); returns dZ = (sigmoid(Z) - Y) * scale and the losses."""
        xp = self.xp
        Z += b
        dZ = (network.sigmoid(xp, Z) - Y) * scale
        losses = xp.maximum(Z, 0.0) - Z * Y + xp.log1p(xp.exp(-xp.abs(Z)))
        return dZ, losses

    def relu_backward(self, dA: Array, Z: Array) -> Array:
        """dZ = dA * relu'(Z), with relu'(0) = 0."""
        return network.backprop_relu(self.xp, dA, Z)

    def update(self, layer: Layer, dZ: Array, A_prev: Array) -> None:
        """W -= dZ @ A_prevᵀ and b -= sum(dZ) (dZ already carries lr/m)."""
        layer.W -= dZ @ A_prev.T
        layer.b -= self.xp.sum(dZ, axis=1, keepdims=True)


class CupyOps(Ops):
    """The same primitives as CUDA kernels: one launch each, the update as one GEMM."""

    def __init__(self, xp: Any):
        super().__init__(xp)
        import cupy

        self.cupy = cupy
        self._ones_cache: dict = {}  # (m, dtype) -> a column of ones, for b -= dZ @ 1
        self._bias_relu = cupy.ElementwiseKernel(
            "T b", "T z, T a", "z = z + b; a = z > (T)0 ? z : (T)0", "gpucat_bias_relu"
        )
        self._output = cupy.ElementwiseKernel(
            "T b, T y, T scale",
            "T z, T dz, T loss",
            """
            z = z + b;
            T e = exp(-fabs(z));
            T r = (T)1 / ((T)1 + e);
            T s = z >= (T)0 ? r : e * r;
            dz = (s - y) * scale;
            loss = (z > (T)0 ? z : (T)0) - z * y + log1p(e);
            """,
            "gpucat_sigmoid_output",
        )
        self._relu_backward = cupy.ElementwiseKernel(
            "T z", "T da", "if (!(z > (T)0)) da = (T)0", "gpucat_relu_backward"
        )

    def bias_relu(self, Z, b):
        A = self.cupy.empty_like(Z)
        self._bias_relu(b, Z, A)
        return A

    def output(self, Z, b, Y, scale):
        dZ, losses = self.cupy.empty_like(Z), self.cupy.empty_like(Z)
        self._output(b, Y, Z.dtype.type(scale), Z, dZ, losses)
        return dZ, losses

    def relu_backward(self, dA, Z):
        self._relu_backward(Z, dA)
        return dA

    def update(self, layer, dZ, A_prev):
        from cupy import cublas

        cublas.gemm("N", "T", dZ, A_prev, out=layer.W, alpha=-1.0, beta=1.0)
        ones = self._ones(dZ.shape[1], dZ.dtype)
        cublas.gemm("N", "N", dZ, ones, out=layer.b, alpha=-1.0, beta=1.0)  # b -= dZ @ 1

    def _ones(self, m: int, dtype):
        key = (m, dtype)
        if key not in self._ones_cache:
            self._ones_cache[key] = self.cupy.ones((m, 1), dtype=dtype)
        return self._ones_cache[key]


def make_ops(backend) -> Ops:
    return CupyOps(backend.xp) if backend.is_gpu else Ops(backend.xp)


class FusedSolver(DirectSolver):
    """Plain full-batch gradient descent, the direct algorithm, through ``Ops``."""

    def __init__(self, backend, params: list[Layer], X: Array, Y: Array, lr: float):
        super().__init__(backend, params, X, Y, lr)  # scale = lr/m: backward gives the steps
        self.ops = make_ops(backend)

    def step(self, want_cost: bool):
        ops, params, last = self.ops, self.params, len(self.params) - 1
        A, inputs, Zs = self.X, [], []
        for l, layer in enumerate(params):
            Z = layer.W @ A
            inputs.append(A)
            Zs.append(Z)
            if l < last:
                A = ops.bias_relu(Z, layer.b)
        dZ, losses = ops.output(Zs[-1], params[-1].b, self.Y, self.scale)
        cost = (self.xp.sum(losses), None) if want_cost else None
        for l in range(last, -1, -1):
            dA = params[l].W.T @ dZ if l > 0 else None  # with W before its update
            ops.update(params[l], dZ, inputs[l])
            if l > 0:
                dZ = ops.relu_backward(dA, Zs[l - 1])
        self.i += 1
        return cost
