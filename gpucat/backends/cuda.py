"""CuPy on an NVIDIA GPU: arrays in device memory, element-wise steps as fused CUDA kernels
(one launch each), each gradient-descent update as one cuBLAS GEMM into W (beta = the
decay), each optimizer step as one kernel; uploads staged through pinned host memory.

Nothing here runs at import: CuPy is imported when a GPU is asked for (``import_cupy``),
and a device is accepted only after ``probe`` has seen it compute the right numbers."""

from __future__ import annotations

import numpy as np

from gpucat.backends.base import Device
from gpucat.errors import GpucatError, first_line

MIN_CUPY = 14  # xp.astype and the array API functions the shared code uses
CTK_HINT = (
    "pip install 'cupy-cuda12x[ctk]>=14' (CUDA 12 drivers) or 'cupy-cuda13x[ctk]>=14' "
    "(CUDA 13), which bring the CUDA libraries along"
)

# max(z, 0) as NumPy's maximum computes it: NaN stays NaN (`z > 0 ? z : 0` would turn a NaN
# layer into zeros, and a diverged run into a quietly constant one)
RELU = "(z > (T)0 || z != z ? z : (T)0)"
# (in_params, out_params, operation) of each fused kernel, named as CuPy names them
KERNELS = {
    "gpucat_bias_relu": ("T b", "T z, T a", f"z = z + b; a = {RELU}"),
    "gpucat_bias_relu_mask": ("T b, T mask", "T z, T a", f"z = z + b; a = {RELU} * mask"),
    "gpucat_sigmoid_output": (
        "T b, T y, T scale",
        "T z, T dz, T loss",
        f"""
        z = z + b;
        T e = exp(-fabs(z));
        T r = (T)1 / ((T)1 + e);
        T s = z >= (T)0 ? r : e * r;
        dz = (s - y) * scale;
        loss = {RELU} - z * y + log1p(e);
        """,
    ),
    "gpucat_loss": (
        "T b, T y",
        "T z, T loss",
        f"z = z + b; loss = {RELU} - z * y + log1p(exp(-fabs(z)))",
    ),
    "gpucat_relu_back": ("T z", "T da", "if (!(z > (T)0)) da = (T)0"),
    "gpucat_relu_back_mask": ("T z, T mask", "T da", "da = z > (T)0 ? da * mask : (T)0"),
    "gpucat_momentum": (
        "T g, T beta, T lr, T l2",
        "T p, T v",
        "T gg = g + l2 * p; v = beta * v + ((T)1 - beta) * gg; p = p - lr * v",
    ),
    "gpucat_adam": (
        "T g, T beta1, T beta2, T eps, T lr_c1, T c2, T l2",
        "T p, T m, T v",
        """
        T gg = g + l2 * p;
        m = beta1 * m + ((T)1 - beta1) * gg;
        v = beta2 * v + ((T)1 - beta2) * (gg * gg);
        p = p - lr_c1 * m / (sqrt(v / c2) + eps);
        """,
    ),
}


class CupyDevice(Device):
    """One CUDA device through CuPy (``native`` is its cupy.cuda.Device)."""

    name, flag = "cupy", "gpu"
    host_memory = False

    def __init__(self, cupy, native, label: str):
        super().__init__(cupy, native, label)
        from cupy import cublas  # the GEMM updates: a submodule `import cupy` leaves out

        self.cupy, self.cublas = cupy, cublas
        self._ones: dict = {}  # (width, dtype) -> a column of ones
        self._staging: dict = {}  # (dtype, size) -> a pinned host buffer, for MPI
        self._kernels = {
            name: cupy.ElementwiseKernel(*params, name) for name, params in KERNELS.items()
        }

    # --- data movement ---------------------------------------------------------------------
    def _on(self):
        return {}  # CuPy makes arrays on the current device, which this one is

    def asarray(self, host, dtype=None):
        if dtype is not None:
            host = np.asarray(host, dtype=dtype)  # cast on the host: fewer bytes cross
        with self.native:
            return self.cupy.asarray(host)

    def to_host(self, x):
        return x.get()

    def copy(self, x):
        return x.copy()

    def zeros(self, shape, dtype="float64"):
        return self.cupy.zeros(shape, dtype=dtype)

    def free_memory(self):
        """What the driver reports free plus the blocks CuPy's memory pool holds unused (free
        to this process, and kept from earlier work: without them a fit's solver, streaming
        and memory check would depend on what ran before it in the same process)."""
        with self.native:
            pooled = self.cupy.get_default_memory_pool().free_bytes()
            return int(self.cupy.cuda.runtime.memGetInfo()[0]) + int(pooled)

    def synchronize(self):
        self.native.synchronize()

    def release_staging(self):
        """CuPy copies each upload through a pinned host block of its size and keeps the
        block in its pool afterwards: a resident data set would hold as much pinned host
        memory as it takes on the GPU. Given back once the uploads are done."""
        self.synchronize()
        self.cupy.get_default_pinned_memory_pool().free_all_blocks()

    def exchange(self, buf, work, device_ok=False):
        if device_ok:
            self.synchronize()  # the buffer must be complete before MPI reads device memory
            work(buf)
            return buf
        host = self._pinned(buf)
        buf.get(out=host)
        work(host)
        return self.asarray(host)

    def exchange_route(self, device_ok=False):
        return (
            "CUDA-aware MPI, device buffers" if device_ok else "staged through pinned host memory"
        )

    def _pinned(self, buf) -> np.ndarray:
        """A page-locked host buffer of buf's size and dtype, allocated once for each."""
        key = (np.dtype(buf.dtype).str, buf.size)
        if key not in self._staging:
            mem = self.cupy.cuda.alloc_pinned_memory(buf.nbytes)
            self._staging[key] = np.frombuffer(mem, buf.dtype, buf.size)
        return self._staging[key]

    def share_node(self, ranks):
        return "one GPU per rank"

    # --- math ------------------------------------------------------------------------------
    def scatter_columns(self, values, positions, width):
        out = self.cupy.zeros((values.shape[0], width))
        out[:, self.cupy.asarray(positions)] = values
        return out

    def bias_relu(self, Z, b, mask=None):
        A = self.cupy.empty_like(Z)
        if mask is None:
            self._kernels["gpucat_bias_relu"](b, Z, A)
        else:
            self._kernels["gpucat_bias_relu_mask"](b, mask, Z, A)
        return A

    def output(self, Z, b, Y, scale):
        losses = self.cupy.empty_like(Z)
        if scale is None:
            self._kernels["gpucat_loss"](b, Y, Z, losses)
            return None, losses.sum()
        dZ = self.cupy.empty_like(Z)
        self._kernels["gpucat_sigmoid_output"](b, Y, Z.dtype.type(scale), Z, dZ, losses)
        return dZ, losses.sum()

    def backprop_relu(self, dA, Z, mask=None):
        if mask is None:
            self._kernels["gpucat_relu_back"](Z, dA)
        else:
            self._kernels["gpucat_relu_back_mask"](Z, mask, dA)
        return dA

    def descend(self, W, dZ, A_prev, decay=1.0):
        self.cublas.gemm("N", "T", dZ, A_prev, out=W, alpha=-1.0, beta=decay)

    def descend_bias(self, b, dZ):
        ones = self._ones_for(dZ)
        self.cublas.gemm("N", "N", dZ, ones, out=b, alpha=-1.0, beta=1.0)  # b −= dZ·1

    def _ones_for(self, dZ):
        """A column of ones as long as dZ is wide (Σ dZ = dZ·1), made once per shape."""
        key = (dZ.shape[1], dZ.dtype)
        if key not in self._ones:
            self._ones[key] = self.cupy.ones((dZ.shape[1], 1), dtype=dZ.dtype)
        return self._ones[key]

    def momentum(self, p, g, v, beta, lr, l2=0.0):
        T = p.dtype.type
        self._kernels["gpucat_momentum"](g, T(beta), T(lr), T(l2), p, v)

    def adam(self, p, g, m, v, beta1, beta2, eps, lr, t, l2=0.0):
        T = p.dtype.type
        c1, c2 = 1.0 - beta1**t, 1.0 - beta2**t
        self._kernels["gpucat_adam"](
            g, T(beta1), T(beta2), T(eps), T(lr / c1), T(c2), T(l2), p, m, v
        )


def import_cupy():
    """The cupy module, or GpucatError saying why it cannot be used."""
    try:
        import cupy
    except Exception as e:  # ImportError, or a CUDA library that fails to load
        raise GpucatError(
            f"no usable GPU: CuPy is not installed or does not import ({first_line(e)}). "
            f"Install it with {CTK_HINT}, or use --device cpu."
        ) from None
    version = str(getattr(cupy, "__version__", "0"))
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < MIN_CUPY:
        raise GpucatError(
            f"no usable GPU: CuPy {version} is installed, gpucat needs CuPy {MIN_CUPY} or newer: "
            f"{CTK_HINT}; or use --device cpu."
        )
    return cupy


def probe(cupy, device) -> None:
    """Prove that device computes: an element-wise kernel (compiled at run time by NVRTC)
    and matrix products in both dtypes (cuBLAS), each checked against the exact answer.

    A reduction alone is not enough: CuPy ships it precompiled, so it runs on a machine
    that lacks the NVRTC or cuBLAS libraries, where the first real kernel then fails."""
    x_host = np.arange(6, dtype=np.float64).reshape(2, 3)
    steps = (
        (
            "an element-wise kernel (NVRTC)",
            lambda x: cupy.ElementwiseKernel("T x", "T y", "y = x * x + (T)1", "gpucat_probe")(x),
            x_host * x_host + 1,
        ),
        ("a float64 matrix product (cuBLAS)", lambda x: x @ x.T, x_host @ x_host.T),
        (
            "a float32 matrix product (cuBLAS)",
            lambda x: x.astype(cupy.float32) @ x.astype(cupy.float32).T,
            x_host @ x_host.T,
        ),
    )
    with device:
        x = cupy.asarray(x_host)
        for what, run, expected in steps:
            try:
                got = np.asarray(run(x).get(), dtype=np.float64)
            except Exception as e:
                raise GpucatError(
                    f"no usable GPU: {what} failed on CUDA device {device.id} "
                    f"({first_line(e, with_type=True)}). The CUDA libraries CuPy needs are missing "
                    f"or do not match the driver: {CTK_HINT}; or use --device cpu."
                ) from None
            if got.shape != expected.shape or not np.array_equal(got, expected):
                raise GpucatError(
                    f"no usable GPU: {what} on CUDA device {device.id} gave wrong numbers "
                    f"({got.ravel().tolist()} instead of {expected.ravel().tolist()}). Update the "
                    f"driver or reinstall CuPy: {CTK_HINT}; or use --device cpu."
                )


def open_gpu(index: int = 0) -> CupyDevice:
    """CuPy on CUDA device ``index`` (modulo the devices there are: more processes than GPUs
    on a node share them round-robin), probed; or GpucatError saying why none is usable."""
    cupy = import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError, or a missing/mismatched driver library
        raise GpucatError(
            f"no usable GPU: the CUDA driver did not answer ({type(e).__name__}: {e}). "
            "Check `nvidia-smi` and that CuPy matches your CUDA version, or use --device cpu."
        ) from None
    if count < 1:
        raise GpucatError("no usable GPU: CuPy found no CUDA device. Use --device cpu.")
    index %= count
    device = cupy.cuda.Device(index)
    try:
        props = cupy.cuda.runtime.getDeviceProperties(index)
    except Exception as e:
        raise GpucatError(
            f"no usable GPU: CUDA device {index} did not answer ({type(e).__name__}: {e}). "
            "Use --device cpu."
        ) from None
    probe(cupy, device)
    # CuPy runs kernels on the current device: make this one current for the process
    # (a data-parallel rank owns one GPU; a single process uses GPU 0, the default anyway).
    device.use()
    name = props["name"]
    name = name.decode() if isinstance(name, bytes) else str(name)
    return CupyDevice(cupy, device, f"GPU {index} ({name})")
