"""NumPy on the CPU: the host's own memory, the product in the layout measured fastest,
element-wise steps in place, the large updates through one buffer."""

from __future__ import annotations

import os
import platform

import numpy as np

from gpucat.backends.base import Device


class NumpyDevice(Device):
    """NumPy's CPU. Device memory is host memory: nothing is uploaded, rows are converted
    where they lie, and MPI reduces the arrays themselves."""

    name, flag = "numpy", "cpu"
    GEMM_FROM = 65536  # weights of at least this many entries are updated through a buffer
    BUFFERS = 8  # update buffers kept (one per weight shape and dtype, the last used)

    def __init__(self):
        super().__init__(np, "cpu", cpu_label())
        self._buffers: dict = {}

    # --- data movement ---------------------------------------------------------------------
    def asarray(self, host, dtype=None):
        return np.array(host, dtype=dtype, copy=True, order="C")

    def to_host(self, x):
        return np.asarray(x)

    def copy(self, x):
        return x.copy()

    def zeros(self, shape, dtype="float64"):
        return np.zeros(shape, dtype=dtype)

    def stage_rows(self, rows, dtype, divisor):
        """The whole conversion, where the rows lie: NumPy lets go of the GIL in it, so a
        streamed batch is converted in its reading thread while the last one trains."""
        return self.as_float(rows, dtype, divisor)

    def staged_columns(self, staged, dtype, divisor):
        return staged

    def exchange(self, buf, work, device_ok=False):
        work(buf)  # the array is host memory already
        return buf

    def exchange_route(self, device_ok=False):
        return "host memory (NumPy)"

    # --- conversion and math ---------------------------------------------------------------
    def as_float(self, U, dtype, divisor):
        if U.dtype == dtype and divisor == 1:
            return U.T
        R = np.empty(U.shape, dtype=dtype)
        np.divide(U, divisor, out=R, dtype=dtype)  # x / divisor in the dtype: exact rounding
        return R.T

    def matmul(self, A, B):
        """A · B; where B is a transposed view of rows (the data: examples one per row, seen
        as columns), as (Bᵀ · Aᵀ)ᵀ, which reads B where it lies: on the machine measured
        (docs/performance.md) faster in whole fits than the other layouts of W1 and Z1,
        whose choice by timing at setup was not worth its cost."""
        if B.flags.f_contiguous and not B.flags.c_contiguous:
            return np.matmul(B.T, A.T).T
        return np.matmul(A, B)

    def matmul_nt(self, A, B):
        return np.matmul(A, B.T)

    def _buffer(self, like):
        key = (like.shape, like.dtype.str)
        if key not in self._buffers:
            if len(self._buffers) >= self.BUFFERS:
                self._buffers.pop(next(iter(self._buffers)))
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


def cpu_label() -> str:
    """The CPU as a person reads it: its model name and core count."""
    name = platform.processor() or platform.machine() or "CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU ({name}, {os.cpu_count()} cores)"
