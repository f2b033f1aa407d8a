"""`gpucat info`: versions, BLAS, GPUs and MPI, as a table or JSON (gpucat/info.py)."""

from __future__ import annotations

import argparse
import json


def add(sub) -> None:
    i = sub.add_parser(
        "info",
        help="versions, BLAS, GPUs and MPI: what a bug report needs",
        description="Versions of gpucat, Python, NumPy and its BLAS, CuPy and CUDA; each GPU "
        "with its free memory and whether it passes gpucat's probe (and why not); mpi4py and "
        "MPI.",
    )
    i.set_defaults(run=run)
    i.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> None:
    from gpucat.frontends.info import collect, table

    info = collect()
    print(json.dumps(info) if args.json else table(info))
