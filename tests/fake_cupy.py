"""A stand-in `cupy` module for machines without a GPU: enough of CuPy's surface for the
backend's probe and `gpucat info`, computing with NumPy, with each part able to fail the way
a broken installation does (no NVRTC, no cuBLAS, an old CuPy, a silent driver)."""

from __future__ import annotations

import types

import numpy as np


class FakeArray:
    """A device array: NumPy inside, reachable from the host only through ``get()``."""

    def __init__(self, a, lib):
        self.a, self.lib = np.asarray(a), lib

    def get(self):
        return self.a.copy()

    def astype(self, dtype):
        return FakeArray(self.a.astype(dtype), self.lib)

    @property
    def T(self):
        return FakeArray(self.a.T, self.lib)

    def __matmul__(self, other):
        if self.lib.gemm == "raise":
            raise RuntimeError("CUBLAS_STATUS_NOT_INITIALIZED: libcublasLt.so.12 not found")
        out = self.a @ other.a
        if self.lib.gemm == "rounding":  # off by a rounding-sized relative error
            out = out * (1 + 1e-7)
        return FakeArray(out + 1 if self.lib.gemm == "wrong" else out, self.lib)

    def sum(self):
        return FakeArray(self.a.sum(), self.lib)


class FakeDevice:
    def __init__(self, index, lib):
        self.id, self.lib = index, lib
        lib.opened.append(index)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        pass

    def synchronize(self):
        pass


def fake_cupy(
    count=1,
    version="14.2.0",
    kernel="ok",
    gemm="ok",
    name=b"Fake GPU",
    memory=(70 * 2**30, 80 * 2**30),
    pooled=0,
):
    """A `cupy` module. ``count``: GPUs the driver reports, or an exception it raises;
    ``kernel`` / ``gemm``: "ok", "raise" or "wrong" (numbers off by one; a product also
    "rounding": off by 1e-7 relative); ``memory``: the
    driver's (free, total) bytes; ``pooled``: bytes CuPy's memory pool holds unused."""
    lib = types.SimpleNamespace(gemm=gemm, opened=[])

    def device_count():
        if isinstance(count, Exception):
            raise count
        return count

    class ElementwiseKernel:
        def __init__(self, in_params, out_params, operation, name):
            if kernel == "raise":
                raise RuntimeError("CompileException: libnvrtc.so.12: cannot open shared object")

        def __call__(self, x):  # the probe's kernel: y = x * x + 1
            y = x.a * x.a + 1
            return FakeArray(y + 1 if kernel == "wrong" else y, lib)

    runtime = types.SimpleNamespace(
        getDeviceCount=device_count,
        getDeviceProperties=lambda i: {
            "name": name,
            "major": 9,
            "minor": 0,
            "totalGlobalMem": memory[1],
        },
        runtimeGetVersion=lambda: 12090,
        driverGetVersion=lambda: 13000,
        memGetInfo=lambda: memory,
    )
    module = types.SimpleNamespace(
        __version__=version,
        float32=np.float32,
        float64=np.float64,
        asarray=lambda a: FakeArray(a, lib),
        zeros=lambda n: FakeArray(np.zeros(n), lib),
        ElementwiseKernel=ElementwiseKernel,
        get_default_memory_pool=lambda: types.SimpleNamespace(free_bytes=lambda: pooled),
        cuda=types.SimpleNamespace(
            runtime=runtime,
            Device=lambda i: FakeDevice(i, lib),
            get_local_runtime_version=lambda: 12080,  # installed: older than built for
            nvrtc=types.SimpleNamespace(getVersion=lambda: (12, 9)),
        ),
        opened=lib.opened,  # the device indices opened, in order
    )
    return module
