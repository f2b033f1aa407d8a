#!/usr/bin/env python3
"""Scale-out figures: the cost of one gradient Allreduce, and ms/iteration on 1 and N ranks.

    python scripts/bench_distributed.py --ranks 2 [--iterations 200] [--dtype float64]

Runs (each a separate process, alternating, --repeats times):
  1 process, BLAS with all cores;   1 process, 1 BLAS thread (both the NumPy direct path);
  1 process under mpiexec --distributed (one rank: the same as a plain process);
  N processes via mpiexec (each with cores/N BLAS threads, as gpucat sets);
plus an Allreduce micro-benchmark of the reference network's gradient buffer
(245,973 values) on N ranks. Prints one JSON object. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE
are removed for every run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
ALLREDUCE = r"""
import time, json, numpy as np
from mpi4py import MPI
c = MPI.COMM_WORLD
buf = np.random.default_rng(c.rank).random(N_VALUES).astype(DTYPE)
for _ in range(20):
    c.Allreduce(MPI.IN_PLACE, buf)
c.Barrier()
ts = []
for _ in range(200):
    t = time.perf_counter(); c.Allreduce(MPI.IN_PLACE, buf); ts.append(time.perf_counter() - t)
if c.rank == 0:
    print(json.dumps({"allreduce_ms_median": 1000 * sorted(ts)[100], "bytes": buf.nbytes}))
"""


def env(**extra) -> dict:
    e = {k: v for k, v in os.environ.items() if k not in BLAS_PINS}
    e.update(extra)
    return e


def last_json(cmd, **extra) -> dict:
    out = subprocess.run(cmd, capture_output=True, text=True, env=env(**extra), check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--dtype", default="float64", choices=("float32", "float64"))
    p.add_argument("--repeats", type=int, default=3)
    a = p.parse_args()
    bindir = Path(sys.executable).parent
    mpiexec = str(bindir / "mpiexec") if (bindir / "mpiexec").exists() else "mpiexec"
    train = [
        sys.executable,
        "-m",
        "gpucat",
        "train",
        "--dtype",
        a.dtype,
        "--iterations",
        str(a.iterations),
        "--log-every",
        str(a.iterations),
        "--solver",
        "direct",  # the Gram solver is single-process: time the same algorithm everywhere
        "--json",
    ]
    runs = {
        "1 process, all cores": (train, {}),
        "1 process, 1 BLAS thread": (train, {"OPENBLAS_NUM_THREADS": "1"}),
        "1 process --distributed": ([mpiexec, "-n", "1"] + train + ["--distributed"], {}),
        f"{a.ranks} processes": ([mpiexec, "-n", str(a.ranks)] + train + ["--distributed"], {}),
    }
    samples = {k: [] for k in runs}
    for _ in range(a.repeats):
        for name, (cmd, extra) in runs.items():
            samples[name].append(last_json(cmd, **extra)["ms_per_iteration"])
    code = ALLREDUCE.replace("N_VALUES", "245973").replace("DTYPE", repr(a.dtype))
    ar = last_json([mpiexec, "-n", str(a.ranks), sys.executable, "-c", code])
    print(
        json.dumps(
            {
                "dtype": a.dtype,
                "iterations": a.iterations,
                "repeats": a.repeats,
                "ms_per_iteration_median": {k: statistics.median(v) for k, v in samples.items()},
                "ms_per_iteration_runs": samples,
                "allreduce": ar,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
