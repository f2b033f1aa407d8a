#!/usr/bin/env python3
"""Train the same recipe from identical initial parameters on every usable device; compare.

    python scripts/compare_devices.py [--iterations N] [--dtype float32] [--log-every N]
                                      [--json] [--json-out F.json] [--plot F.png]

Works on a CPU-only laptop (NumPy only) and on a GPU workstation (NumPy and CuPy). Data
come from --data-dir, else GPUCAT_DATA_DIR, else the project's data/ folder, like
`gpucat train`. max_cost_deviation compares each device with NumPy in the same dtype.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from gpucat import data
from gpucat.backend import available_backends
from gpucat.config import SOLVERS
from gpucat.errors import GpucatError
from gpucat.train import TrainConfig, run_recipe

COLUMNS = (
    "device",
    "backend",
    "dtype",
    "solver",
    "ms_per_iteration",
    "seconds",
    "final_cost",
    "train_accuracy",
    "test_accuracy",
)


def compare(args: argparse.Namespace) -> dict:
    train_set, test_set = data.load_course_data(args.data_dir)
    dtypes = [args.dtype] if args.dtype else ["float64", "float32"]
    rows = []
    for dtype in dtypes:  # NumPy first in each dtype: the reference of the rows after it
        for backend in available_backends():
            config = TrainConfig(
                iterations=args.iterations,
                dtype=dtype,
                solver=args.solver,
                log_every=args.log_every,
            )
            print(f"training on {backend.label}, {dtype} ...", file=sys.stderr, flush=True)
            _, summary = run_recipe(backend, config, train_set, test_set)
            rows.append(summary)
            result = with_deviations(rows)
            if args.json_out:  # after every row: a later failure leaves the rows done
                Path(args.json_out).write_text(json.dumps(slim(result)) + "\n")
    return result


def with_deviations(rows: list[dict]) -> dict:
    """Each row's largest relative cost deviation from NumPy in the same dtype (devices are
    compared within a dtype: float32 and float64 runs part ways by rounding)."""
    deviation = 0.0
    for r in rows:
        ref = next(q for q in rows if q["backend"] == "numpy" and q["dtype"] == r["dtype"])
        r["max_cost_deviation"] = max(
            abs(c - c0) / abs(c0) for (_, c), (_, c0) in zip(r["costs"], ref["costs"])
        )
        deviation = max(deviation, r["max_cost_deviation"])
    return {"rows": rows, "max_cost_deviation": deviation, "reference": "NumPy, same dtype"}


def slim(result: dict) -> dict:
    keep = (*COLUMNS, "max_cost_deviation", "costs", "train_correct", "test_correct")
    return {**result, "rows": [{k: r[k] for k in keep if k in r} for r in result["rows"]]}


def print_table(result: dict) -> None:
    head = f"{'device':44} {'dtype':8} {'solver':7} {'ms/iter':>9} {'seconds':>8} {'final cost':>11} {'train':>7} {'test':>6} {'dev. vs ref':>11}"
    print(head)
    print("-" * len(head))
    for r in result["rows"]:
        print(
            f"{r['device'][:44]:44} {r['dtype']:8} {r['solver']:7} {r['ms_per_iteration']:9.3f} "
            f"{r['seconds']:8.3f} {r['final_cost']:11.6f} {r['train_accuracy']:7.4f} "
            f"{r['test_accuracy']:6.2f} {r['max_cost_deviation']:11.2e}"
        )
    print(
        f"largest relative cost deviation from NumPy in the same dtype: {result['max_cost_deviation']:.2e}"
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--iterations", type=int, default=2500)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--dtype", choices=("float32", "float64"), default=None, help="default: both")
    p.add_argument("--solver", choices=SOLVERS, default="auto")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--plot", default=None, metavar="PNG", help="cost curves and time bars")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")
    p.add_argument("--json-out", default=None, metavar="FILE", help="the JSON, rewritten per row")
    args = p.parse_args(argv)
    try:
        result = compare(args)
        print_table(result)
        if args.plot:
            from gpucat.plots import plot_device_comparison

            plot_device_comparison(args.plot, result["rows"])
            print(f"saved {args.plot}")
    except GpucatError as e:
        print(f"compare_devices: error: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(slim(result)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
