"""The device layer: one class per device, each owning its data movement and its math
primitives (base.py: the generic ``Device``; cpu.py: NumPy; cuda.py: CuPy; strict.py: the
array-API stand-in), and the choice among them.

``cpu`` is NumPy, ``gpu`` is CuPy, ``auto`` picks CuPy when a CUDA device passes the probe
(CuPy 14 or newer, a kernel compiled by NVRTC and cuBLAS products that give the right
numbers), else NumPy; ``GPUCAT_DEVICE`` sets the default. ``strict`` is the stand-in for
CI. Devices are made once per process (``get_device`` returns the same object again).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from functools import cache

from gpucat.backends.base import Array, Device, free_pages, memory_available
from gpucat.backends.cpu import NumpyDevice, cpu_label
from gpucat.backends.cuda import CTK_HINT, import_cupy, open_gpu
from gpucat.errors import GpucatError

__all__ = [
    "Array",
    "CTK_HINT",
    "DEVICES",
    "Device",
    "available_devices",
    "cpu_label",
    "fallback_note",
    "free_pages",
    "get_device",
    "gpu_available",
    "import_cupy",
    "memory_available",
    "why_no_gpu",
]

DEVICES = ("auto", "cpu", "gpu")


@cache
def _cpu() -> NumpyDevice:
    return NumpyDevice()


@cache
def _gpu(index: int = 0) -> Device:
    return open_gpu(index)


@cache
def _strict() -> Device:
    from gpucat.backends.strict import StrictDevice

    return StrictDevice()


def forget_gpus() -> None:
    """Open CuPy's devices afresh on the next request (after CuPy itself was replaced)."""
    _gpu.cache_clear()


def why_no_gpu(index: int = 0) -> str | None:
    """Why CUDA device ``index`` is not usable (the probe's message), or None when it is."""
    try:
        _gpu(index)
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


def get_device(
    name: str | None = None, gpu_index: int = 0, on_fallback: Callable[[str], None] | None = None
) -> Device:
    """The device for ``auto``, ``cpu``, ``gpu`` (or ``strict``); None reads GPUCAT_DEVICE.

    ``gpu_index`` picks the CUDA device (a data-parallel rank's local GPU). When ``auto``
    falls back to the CPU on a machine meant for GPU work, ``on_fallback`` gets one line
    saying why (the CLI prints it)."""
    if name is None:
        name = os.environ.get("GPUCAT_DEVICE", "auto")
    name = name.lower()
    if name == "cpu":
        return _cpu()
    if name == "gpu":
        return _gpu(gpu_index)
    if name == "auto":  # probe this process's own GPU only: never open a context on another
        if gpu_available(gpu_index):
            return _gpu(gpu_index)
        note = fallback_note(gpu_index) if on_fallback else None
        if note:
            on_fallback(note)
        return _cpu()
    if name == "strict":
        return _strict()
    aliases = {"numpy": "cpu", "cupy": "gpu", "cuda": "gpu"}
    if name in aliases:
        return get_device(aliases[name], gpu_index, on_fallback)
    raise GpucatError(f"unknown device {name!r}: choose one of auto, cpu, gpu.")


def available_devices() -> list[Device]:
    """Every device usable here: NumPy, then CuPy when a GPU is usable."""
    out: list[Device] = [_cpu()]
    if gpu_available():
        out.append(_gpu())
    return out
