"""The backend shim: one small object carrying the array namespace and the device.

``cpu`` is NumPy, ``gpu`` is CuPy, ``auto`` picks CuPy when a CUDA device passes the probe
(CuPy 14 or newer, a kernel compiled by NVRTC and cuBLAS products that give the right
numbers), else NumPy; ``GPUCAT_DEVICE`` sets the default. ``strict`` is array-api-strict on its
non-default device: a stand-in second device for CI, which refuses host arrays mixed into
device code and any implicit device-to-host conversion, just as a GPU would.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from gpucat.errors import GpucatError, first_line

DEVICES = ("auto", "cpu", "gpu")


@dataclass(frozen=True)
class Backend:
    """An array namespace plus the device its arrays live on."""

    name: str  # "numpy", "cupy" or "strict"
    xp: ModuleType
    device: Any  # passed as ``device=`` to the namespace's creation functions
    label: str  # what a person reads: the GPU model or the CPU

    @property
    def is_gpu(self) -> bool:
        return self.name == "cupy"

    @property
    def flag(self) -> str:
        """The ``--device`` value (and ``device=`` argument) that selects this backend."""
        return {"numpy": "cpu", "cupy": "gpu"}.get(self.name, self.name)

    def asarray(self, host: np.ndarray, dtype: str | None = None) -> Any:
        """Copy a host (NumPy) array to this device, optionally casting it."""
        if dtype is not None:
            host = np.asarray(host, dtype=dtype)
        if self.name == "numpy":
            return np.array(host, copy=True, order="C")
        if self.name == "cupy":
            with self.device:
                return self.xp.asarray(host)
        return self.xp.asarray(host, device=self.device)

    def to_host(self, x: Any) -> np.ndarray:
        """Copy a device array back to a NumPy array (a host sync point)."""
        if self.name == "numpy":
            return np.asarray(x)
        if self.name == "cupy":
            return x.get()
        return np.from_dlpack(x.to_device(self.xp.Device("CPU_DEVICE")))

    def copy(self, x: Any) -> Any:
        """A copy on the same device."""
        if self.name == "strict":
            return self.xp.asarray(x, copy=True)
        return x.copy()

    def scalar(self, x: Any) -> float:
        """Read a 0-d device array as a Python float (a host sync point)."""
        return float(self.to_host(x))

    def free_memory(self) -> int:
        """Bytes of memory free on this device (host RAM for NumPy and the stand-in); on a GPU
        what the driver reports free plus the blocks CuPy's memory pool holds unused (free to
        this process, and kept from earlier work: without them a fit's solver, streaming and
        memory check would depend on what ran before it in the same process)."""
        if self.name == "cupy":
            with self.device:
                pooled = self.xp.get_default_memory_pool().free_bytes()
                return int(self.xp.cuda.runtime.memGetInfo()[0]) + int(pooled)
        return free_pages()

    def synchronize(self) -> None:
        """Wait for queued device work, so that a clock read afterwards is honest."""
        if self.name == "cupy":
            self.device.synchronize()


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


def _cpu_label() -> str:
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


@cache
def _numpy_backend() -> Backend:
    return Backend("numpy", np, "cpu", _cpu_label())


MIN_CUPY = 14  # xp.astype and the array API functions the shared code uses
CTK_HINT = (
    "pip install 'cupy-cuda12x[ctk]>=14' (CUDA 12 drivers) or 'cupy-cuda13x[ctk]>=14' "
    "(CUDA 13), which bring the CUDA libraries along"
)


def _import_cupy():
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
    import numpy as np

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


@cache
def _cupy_backend(index: int = 0) -> Backend:
    """CuPy on device ``index``, or GpucatError saying why no GPU is usable."""
    cupy = _import_cupy()
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as e:  # CUDARuntimeError, or a missing/mismatched driver library
        raise GpucatError(
            f"no usable GPU: the CUDA driver did not answer ({type(e).__name__}: {e}). "
            "Check `nvidia-smi` and that CuPy matches your CUDA version, or use --device cpu."
        ) from None
    if count < 1:
        raise GpucatError("no usable GPU: CuPy found no CUDA device. Use --device cpu.")
    index %= count  # more processes than GPUs on a node share them round-robin
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
    return Backend("cupy", cupy, device, f"GPU {index} ({name})")


@cache
def _strict_backend() -> Backend:
    try:
        import array_api_strict
    except ImportError:
        raise GpucatError(
            "the strict stand-in device needs array-api-strict: pip install array-api-strict"
        ) from None
    return Backend(
        "strict",
        array_api_strict,
        array_api_strict.Device("device1"),
        "array-api-strict stand-in device (device1)",
    )


def why_no_gpu(index: int = 0) -> str | None:
    """Why CUDA device ``index`` is not usable (the probe's message), or None when it is."""
    try:
        _cupy_backend(index)
    except GpucatError as e:
        return str(e)
    return None


def gpu_available(index: int = 0) -> bool:
    """True when CuPy 14+ imports and CUDA device ``index`` passes the probe."""
    return why_no_gpu(index) is None


def gpu_expected() -> bool:
    """True when this machine looks meant for GPU work: an NVIDIA driver's `nvidia-smi` is on
    the PATH, or CuPy is installed. There a fallback to the CPU deserves a word."""
    import importlib.util
    import shutil
    import sys

    try:
        cupy_there = importlib.util.find_spec("cupy") is not None
    except (ImportError, ValueError):  # a module placed in sys.modules by hand
        cupy_there = sys.modules.get("cupy") is not None
    return shutil.which("nvidia-smi") is not None or cupy_there


def fallback_note(index: int = 0) -> str | None:
    """One line for ``auto`` falling back to the CPU where a GPU was expected, else None."""
    if not gpu_expected():
        return None
    why = why_no_gpu(index)
    if why is None:
        return None
    return f"the GPU is not used, training runs on the CPU: {why.removeprefix('no usable GPU: ')}"


def get_backend(
    device: str | None = None, gpu_index: int = 0, on_fallback: Callable[[str], None] | None = None
) -> Backend:
    """The backend for ``auto``, ``cpu``, ``gpu`` (or ``strict``); None reads GPUCAT_DEVICE.

    ``gpu_index`` picks the CUDA device (a data-parallel rank's local GPU). When ``auto``
    falls back to the CPU on a machine meant for GPU work, ``on_fallback`` gets one line
    saying why (the CLI prints it)."""
    if device is None:
        device = os.environ.get("GPUCAT_DEVICE", "auto")
    device = device.lower()
    if device == "cpu":
        return _numpy_backend()
    if device == "gpu":
        return _cupy_backend(gpu_index)
    if device == "auto":  # probe this process's own GPU only: never open a context on another
        if gpu_available(gpu_index):
            return _cupy_backend(gpu_index)
        note = fallback_note(gpu_index) if on_fallback else None
        if note:
            on_fallback(note)
        return _numpy_backend()
    if device == "strict":
        return _strict_backend()
    aliases = {"numpy": "cpu", "cupy": "gpu", "cuda": "gpu"}
    if device in aliases:
        return get_backend(aliases[device], gpu_index, on_fallback)
    raise GpucatError(f"unknown device {device!r}: choose one of auto, cpu, gpu.")


def available_backends() -> list[Backend]:
    """Every backend usable here: NumPy, then CuPy when a GPU is usable."""
    out = [_numpy_backend()]
    if gpu_available():
        out.append(_cupy_backend())
    return out
