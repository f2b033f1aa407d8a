"""The backend shim: one small object carrying the array namespace and the device.

``cpu`` is NumPy, ``gpu`` is CuPy, ``auto`` picks CuPy when it imports and a CUDA device is
usable, else NumPy; ``GPUCAT_DEVICE`` sets the default. ``strict`` is array-api-strict on its
non-default device: a stand-in second device for CI, which refuses host arrays mixed into
device code and any implicit device-to-host conversion, just as a GPU would.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

from gpucat.errors import GpucatError

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
        """Bytes of memory free on this device (host RAM for NumPy and the stand-in)."""
        if self.name == "cupy":
            with self.device:
                return int(self.xp.cuda.runtime.memGetInfo()[0])
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return 2**31  # unknown: assume a modest 2 GiB

    def synchronize(self) -> None:
        """Wait for queued device work, so that a clock read afterwards is honest."""
        if self.name == "cupy":
            self.device.synchronize()


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


@cache
def _cupy_backend(index: int = 0) -> Backend:
    """CuPy on device ``index``, or GpucatError saying why no GPU is usable."""
    try:
        import cupy
    except ImportError as e:
        raise GpucatError(
            "no usable GPU: CuPy is not installed "
            f"({e}). Install it with `pip install 'gpucat[cuda12]'` (or [cuda13]), "
            "or use --device cpu."
        ) from None
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
        with device:
            cupy.zeros(1).sum().get()  # prove that a kernel really runs
    except Exception as e:
        raise GpucatError(
            f"no usable GPU: CUDA device {index} failed to run a kernel ({type(e).__name__}: {e}). "
            "Use --device cpu."
        ) from None
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


def gpu_available(index: int = 0) -> bool:
    """True when CuPy imports and CUDA device ``index`` runs a kernel."""
    try:
        _cupy_backend(index)
    except GpucatError:
        return False
    return True


def get_backend(device: str | None = None, gpu_index: int = 0) -> Backend:
    """The backend for ``auto``, ``cpu``, ``gpu`` (or ``strict``); None reads GPUCAT_DEVICE.

    ``gpu_index`` picks the CUDA device (a data-parallel rank's local GPU)."""
    if device is None:
        device = os.environ.get("GPUCAT_DEVICE", "auto")
    device = device.lower()
    if device == "cpu":
        return _numpy_backend()
    if device == "gpu":
        return _cupy_backend(gpu_index)
    if device == "auto":  # probe this process's own GPU only: never open a context on another
        return _cupy_backend(gpu_index) if gpu_available(gpu_index) else _numpy_backend()
    if device == "strict":
        return _strict_backend()
    aliases = {"numpy": "cpu", "cupy": "gpu", "cuda": "gpu"}
    if device in aliases:
        return get_backend(aliases[device], gpu_index)
    raise GpucatError(f"unknown device {device!r}: choose one of auto, cpu, gpu.")


def available_backends() -> list[Backend]:
    """Every backend usable here: NumPy, then CuPy when a GPU is usable."""
    out = [_numpy_backend()]
    if gpu_available():
        out.append(_cupy_backend())
    return out
