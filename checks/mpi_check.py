#!/usr/bin/env python3
"""Data-parallel training on one device equals one process: run the reference recipe (float64)
under `mpiexec -n N gpucat train --distributed` and in this process, compare costs and weights (norm-wise relative errors).

    python checks/mpi_check.py [--device gpu] [--processes 2] [--iterations 50] [--out F.json]

On a machine with one GPU every rank shares it. Prints one JSON object; exit code 1 when the
largest relative difference exceeds --tolerance (1e-10: the ranks add their gradient sums
in another order than one process does).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-300))


def mpiexec() -> str:
    exe = Path(sys.executable).parent / "mpiexec"
    found = str(exe) if exe.exists() else shutil.which("mpiexec")
    if not found:
        raise SystemExit("mpi_check: no mpiexec found (pip install mpich)")
    return found


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="gpu", choices=("cpu", "gpu"))
    p.add_argument("--processes", type=int, default=2)
    p.add_argument("--iterations", type=int, default=50)
    p.add_argument("--tolerance", type=float, default=1e-10)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)

    from gpucat.backends import get_device
    from gpucat.config import TrainConfig
    from gpucat.data.course import load_course_data
    from gpucat.modelfiles.model import load_model
    from gpucat.nn.network import params_to_host
    from gpucat.training.loop import fit

    flags = ["--device", a.device, "--dtype", "float64", "--iterations", str(a.iterations)]
    flags += ["--log-every", "10", "--solver", "direct"]
    with tempfile.TemporaryDirectory() as tmp:
        model = Path(tmp) / "ranks.safetensors"
        cmd = [mpiexec(), "-n", str(a.processes), sys.executable, "-m", "gpucat", "train"]
        cmd += ["--distributed", *flags, "--json", "--out", str(model)]
        run = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        if run.returncode != 0:
            print(run.stderr[-3000:], file=sys.stderr)
            raise SystemExit(f"mpi_check: mpiexec failed with exit code {run.returncode}")
        ranks = json.loads(run.stdout.strip().splitlines()[-1])
        if ranks["processes"] != a.processes:  # each rank started as an MPI world of its own
            raise SystemExit(
                f"mpi_check: mpiexec started {a.processes} ranks but gpucat saw "
                f"{ranks['processes']} process(es): {mpiexec()} and mpi4py "
                "are from different MPI libraries (pip install mpi4py mpich into one venv)"
            )
        ranks_params = load_model(model).params
    device = get_device(a.device)
    train, _ = load_course_data()
    config = TrainConfig(dtype="float64", iterations=a.iterations, log_every=10, solver="direct")
    one = fit(device, config, train)
    one_params = params_to_host(device, one.params)
    result = {
        "device": device.label,
        "processes": ranks["processes"],
        "reduce": ranks["reduce"],
        "iterations": a.iterations,
        "cost_rel_err": rel([c for _, c in ranks["costs"]], [c for _, c in one.costs]),
        "param_rel_err": max(
            max(rel(W, W0), rel(b, b0)) for (W, b), (W0, b0) in zip(ranks_params, one_params)
        ),
        "tolerance": a.tolerance,
    }
    result["passed"] = max(result["cost_rel_err"], result["param_rel_err"]) <= a.tolerance
    text = json.dumps(result)
    if a.out:
        Path(a.out).write_text(text + "\n")
    print(text)
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
