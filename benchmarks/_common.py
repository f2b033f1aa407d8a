"""What the measurements share (each imports it by name: a script's own folder is on its
path): the project root, the machine's description for a result file, the restart without
the OpenBLAS variables that pin older kernels than a user's machine would pick,
data that is never zeros, the devices asked for, the streaming recipe and child processes.

The measurements reach gpucat through its public API (``gpucat.train_model``,
``gpucat.sweep_devices``, ...) and the hooks docs/python.md lists for them (``solver_for``
to time iterations alone, ``load_course_data``, ``H5Source``, ``init_params``,
``plot_sweep``), nothing else."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
# the streaming measurements' recipe: mini-batch Adam in float32
STREAM_RECIPE = dict(batch_size=256, optimizer="adam", learning_rate=0.0005, dtype="float32")


def unpinned_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in BLAS_PINS}


def restart_unpinned() -> None:
    """Run this script again without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, where set: every
    side of a comparison then runs the kernels a user's machine would."""
    if any(k in os.environ for k in BLAS_PINS):
        os.execve(sys.executable, [sys.executable, *sys.argv], unpinned_env())


def machine_info() -> dict:
    import numpy as np

    import gpucat

    info = {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "devices": [d.label for d in gpucat.devices()],
    }
    try:
        from threadpoolctl import threadpool_info

        info["blas"] = [
            f"{d['internal_api']} {d['version']} {d.get('architecture')} x{d['num_threads']}"
            for d in threadpool_info()
            if d["user_api"] == "blas"
        ]
    except ImportError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = None
    return info


def parser(doc: str) -> argparse.ArgumentParser:
    """A measurement's command line, described by its module's docstring."""
    return argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )


def finish(doc: dict, out: str | None) -> dict:
    """The result with the machine it ran on: printed as one JSON line, and written to
    ``out`` when given."""
    doc = {**doc, "machine": machine_info()}
    if out:
        Path(out).write_text(json.dumps(doc, indent=1))
    print(json.dumps(doc))
    return doc


def int_list(text: str) -> list[int]:
    return [int(x) for x in text.split(",")]


def synthetic(m: int, seed: int = 0):
    """Random pixels 0..255 / 255 and random labels: real shape, never zeros."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(12288, m), dtype=np.uint8).astype(np.float64) / 255.0
    Y = (rng.random((1, m)) < 0.35).astype(np.float64)
    return X, Y


def selected_devices(devices: str) -> list:
    """The usable devices among --devices: cpu, gpu or all."""
    import gpucat

    return [d for d in gpucat.devices() if devices == "all" or d.flag == devices]


def torch_devices(devices: str) -> list[tuple[str, bool]]:
    """(device, graph) pairs for the PyTorch baseline: eager on each device, graph on CUDA."""
    try:
        import torch
    except ImportError:
        return []
    out = [("cpu", False)] if devices in ("cpu", "all") else []
    if devices in ("gpu", "all") and torch.cuda.is_available():
        out += [("cuda", False), ("cuda", True)]
    return out


def step_ms(source, steps: int, warmup: int = 20) -> float:
    """ms per mini-batch step (STREAM_RECIPE) over the source on the CPU, after a warm-up:
    the iterations alone, through the solver_for hook."""
    import gpucat
    from gpucat.training.loop import solver_for

    solver = solver_for(gpucat.device("cpu"), gpucat.TrainConfig(**STREAM_RECIPE), source)[0]
    for i in range(warmup):
        solver.step(i)
    t = time.perf_counter()
    for i in range(warmup, warmup + steps):
        solver.step(i)
    ms = 1000 * (time.perf_counter() - t) / steps
    solver.close()
    return ms


def in_child(argv: list[str]) -> tuple[dict, float]:
    """Run argv in a child process: (the JSON of its last line, its peak RSS in GiB)."""
    code = (
        "import json, resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'rc': p.returncode, 'peak_kib': peak, 'out': p.stdout, 'err': p.stderr[-2000:]}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    r = json.loads(run.stdout)
    if r["rc"] != 0:
        raise SystemExit(r["err"])
    return json.loads(r["out"].strip().splitlines()[-1]), r["peak_kib"] / 2**20


def drop_from_page_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
