"""`gpucat info`: what a bug report needs, as a table or as JSON.

gpucat, Python and the platform; NumPy and the BLAS it runs on (threadpoolctl); CuPy, the
CUDA runtime, driver and NVRTC versions, and each GPU's name, compute capability and
free / total memory; whether the GPU passes gpucat's probe and, if not, why; mpi4py and the
MPI library. In the spirit of ``python -m torch.utils.collect_env`` and
``cupy.show_config()``. Nothing here raises: a part that cannot be read says so.
"""

from __future__ import annotations

import platform
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from gpucat import __version__
from gpucat.errors import GpucatError, first_line

PACKAGES = (
    "h5py", "safetensors", "pillow", "pooch", "tqdm", "threadpoolctl", "zlib-ng",
    "array-api-strict",  # the tests' stand-in device
)  # fmt: skip


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def blas() -> list[dict]:
    """The BLAS libraries NumPy runs on, with their threads (threadpoolctl), or what NumPy
    was built against when threadpoolctl is missing."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        built = np.show_config(mode="dicts")["Build Dependencies"].get("blas", {})
        return [{"library": built.get("name"), "version": built.get("version"), "threads": None}]
    return [
        {
            "library": d.get("internal_api"),
            "version": d.get("version"),
            "architecture": d.get("architecture"),
            "threads": d.get("num_threads"),
            "path": d.get("filepath"),
        }
        for d in threadpool_info()
        if d.get("user_api") == "blas"
    ]


def _cuda_version(v: int) -> str:
    return f"{v // 1000}.{v % 1000 // 10}"


def gpu() -> dict:
    """CuPy, CUDA and every GPU the driver reports; ``usable`` and ``reason`` per device
    from the same probe that ``--device gpu`` runs."""
    from gpucat import backends

    out: dict[str, Any] = {"cupy": None, "cuda_runtime": None, "cuda_runtime_built": None}
    out["cuda_driver"] = None
    out.update({"nvrtc": None, "gpus": [], "gpu_usable": False, "gpu_reason": None})
    try:
        cupy = backends.import_cupy()
    except GpucatError as e:
        out["cupy"] = getattr(sys.modules.get("cupy"), "__version__", None) or _version_any_cupy()
        out["gpu_reason"] = str(e)
        return out
    out["cupy"] = str(cupy.__version__)
    runtime = cupy.cuda.runtime
    for key, read in (
        # the runtime installed and loaded, and the one CuPy was built against
        ("cuda_runtime", lambda: _cuda_version(cupy.cuda.get_local_runtime_version())),
        ("cuda_runtime_built", lambda: _cuda_version(runtime.runtimeGetVersion())),
        ("cuda_driver", lambda: _cuda_version(runtime.driverGetVersion())),
        ("nvrtc", lambda: ".".join(map(str, cupy.cuda.nvrtc.getVersion()))),
    ):
        try:
            out[key] = read()
        except Exception as e:
            out[key] = f"unreadable ({first_line(e, with_type=True)})"
    try:
        count = runtime.getDeviceCount()
    except Exception as e:
        out["gpu_reason"] = f"the CUDA driver did not answer ({first_line(e, with_type=True)})"
        return out
    for i in range(count):
        row: dict[str, Any] = {"index": i}
        try:
            props = runtime.getDeviceProperties(i)
            name = props["name"]
            row["name"] = name.decode() if isinstance(name, bytes) else str(name)
            row["compute_capability"] = f"{props['major']}.{props['minor']}"
            with cupy.cuda.Device(i):
                free, total = runtime.memGetInfo()
            row["memory_free_bytes"], row["memory_total_bytes"] = int(free), int(total)
        except Exception as e:
            row["error"] = first_line(e, with_type=True)
        why = backends.why_no_gpu(i)
        row["usable"], row["reason"] = why is None, why
        out["gpus"].append(row)
    if not count:
        out["gpu_reason"] = "CuPy found no CUDA device"
    else:
        out["gpu_usable"] = out["gpus"][0]["usable"]
        out["gpu_reason"] = out["gpus"][0]["reason"]
    return out


def _version_any_cupy() -> str | None:
    """The version of whichever CuPy distribution is installed (cupy-cuda12x, ...)."""
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower()
        if name == "cupy" or name.startswith("cupy-cuda"):
            return f"{dist.version} ({name})"
    return None


def mpi() -> dict:
    out: dict[str, Any] = {"mpi4py": _version("mpi4py"), "mpi_library": None}
    out["mpi_cuda_aware"] = None
    if out["mpi4py"] is None:
        return out
    try:
        from mpi4py import MPI

        from gpucat.training.distributed import mpi_cuda_aware

        out["mpi_library"] = " ".join(MPI.Get_library_version().strip().splitlines()[0].split())
        out["mpi_cuda_aware"] = mpi_cuda_aware()
    except Exception as e:
        out["mpi_library"] = f"unusable ({first_line(e, with_type=True)})"
    return out


def collect() -> dict:
    """Everything `gpucat info` reports, as plain JSON-ready values."""
    from gpucat.backends import cpu_label

    info: dict[str, Any] = {
        "gpucat": __version__,
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu": cpu_label(),
        "numpy": np.__version__,
        # where each was imported from: the environment a report comes from, plainly
        "locations": {"gpucat": _folder(sys.modules["gpucat"]), "numpy": _folder(np)},
        "blas": blas(),
        "packages": {name: _version(name) for name in PACKAGES},
    }
    info.update(gpu())
    info.update(mpi())
    return info


def _folder(module) -> str:
    """The folder a package was imported from (as found on the path, links not resolved)."""
    return str(Path(module.__file__).parent)


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"


def table(info: dict) -> str:
    """The report as aligned lines, one fact a line."""
    rows = [
        ("gpucat", info["gpucat"]),
        ("Python", f"{info['python']} ({info['python_executable']})"),
        ("platform", info["platform"]),
        ("CPU", info["cpu"]),
        ("gpucat from", info["locations"]["gpucat"]),
        ("NumPy", f"{info['numpy']} ({info['locations']['numpy']})"),
    ]
    for b in info["blas"]:
        threads = f", {b['threads']} threads" if b.get("threads") else ""
        arch = f" {b['architecture']}" if b.get("architecture") else ""
        rows.append(("BLAS", f"{b['library']} {b['version']}{arch}{threads}"))
    rows += [(k, v or "not installed") for k, v in info["packages"].items()]
    rows += [
        ("CuPy", info["cupy"] or "not installed"),
        ("CUDA runtime", info["cuda_runtime"] or "-"),
        (
            "CuPy built for",
            f"CUDA {info['cuda_runtime_built']}" if info["cuda_runtime_built"] else "-",
        ),
        ("CUDA driver", info["cuda_driver"] or "-"),
        ("NVRTC", info["nvrtc"] or "-"),
    ]
    for g in info["gpus"]:
        if "error" in g:
            text = f"unreadable ({g['error']})"
        else:
            text = (
                f"{g['name']}, compute capability {g['compute_capability']}, "
                f"{_gib(g['memory_free_bytes'])} free of {_gib(g['memory_total_bytes'])}"
            )
        rows.append((f"GPU {g['index']}", text + ("" if g["usable"] else ", NOT usable")))
    rows.append(("GPU usable", "yes" if info["gpu_usable"] else f"no: {info['gpu_reason']}"))
    rows += [
        ("mpi4py", info["mpi4py"] or "not installed"),
        ("MPI library", info["mpi_library"] or "-"),
        ("MPI CUDA-aware", "-" if info["mpi_cuda_aware"] is None else str(info["mpi_cuda_aware"])),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
