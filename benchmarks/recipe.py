#!/usr/bin/env python3
"""The reference recipe on the course data, in one process: every solver in both dtypes on
each device (gpucat.train_model), and PyTorch eager (and, on CUDA, replayed as a CUDA graph)
beside it; a warm-up run first, then the median of --runs training times. Each run's logged
costs are compared with NumPy float64's (direct solver). The course data comes from
GPUCAT_DATA_DIR, else the project's data/.

    python benchmarks/recipe.py [--devices gpu] [--runs 3] [--out F.json]
"""

from __future__ import annotations

import json
import statistics

import gpucat
from gpucat.config import SOLVERS

from _common import finish, parser, restart_unpinned, selected_devices, torch_devices

ALGORITHMS = tuple(s for s in SOLVERS if s != "auto")  # the algorithms, not the choice


def worst(values) -> float:
    """The largest, or NaN when any is NaN (max would skip it)."""
    values = list(values)
    return float("nan") if any(v != v for v in values) else max(values)


def rel(costs, reference) -> float:
    return worst(abs(x - y) / abs(y) for (_, x), (_, y) in zip(costs, reference))


def gpucat_row(device, dtype: str, solver: str, iterations: int, runs: int, reference) -> dict:
    gpucat.train_model(device=device, iterations=20, dtype=dtype, solver=solver)  # warm-up
    done = [
        gpucat.train_model(device=device, iterations=iterations, dtype=dtype, solver=solver)
        for _ in range(runs)
    ]
    results = [m.metadata["result"] for m in done]
    r = results[-1]
    return {
        "impl": f"gpucat-{device.name}",
        "device": device.label,
        "dtype": dtype,
        "solver": r["solver"],
        "seconds": [x["seconds"] for x in results],
        "median_s": statistics.median(x["seconds"] for x in results),
        "cost_0": r["costs"][0][1],
        "max_rel_cost_deviation_vs_numpy_float64": rel(r["costs"], reference),
        "train_correct": r["train_correct"],
        "test_correct": r["test_correct"],
    }


def torch_row(dev: str, graph: bool, dtype: str, iterations: int, runs: int, reference) -> dict:
    from gpucat.data.course import load_course_data

    from torch_baseline import train_torch

    train, _ = load_course_data()

    def run(n):
        return train_torch(train.X, train.Y, (12288, 20, 7, 5, 1), 0.0075, n, dtype, dev, graph)

    run(20)  # warm-up
    done = [run(iterations) for _ in range(runs)]
    return {
        "impl": f"torch-{dev}",
        "device": dev,
        "dtype": dtype,
        "solver": "cuda-graph" if graph else "eager",
        "seconds": [x["seconds"] for x in done],
        "median_s": statistics.median(x["seconds"] for x in done),
        "cost_0": done[-1]["costs"][0][1],
        "max_rel_cost_deviation_vs_numpy_float64": rel(done[-1]["costs"], reference),
        "train_correct": round(done[-1]["train_accuracy"] * train.n_examples),
        "test_correct": None,
    }


def print_table(rows) -> None:
    head = f"{'impl':14} {'device':28} {'dtype':8} {'solver':10} {'median s':>9} {'ms/it':>8} {'cost dev':>9} {'train':>6} {'test':>5}"
    print(head)
    for r in rows:
        print(
            f"{r['impl']:14} {r['device'][:28]:28} {r['dtype']:8} {r['solver']:10} "
            f"{r['median_s']:9.4f} {r['ms_per_iteration']:8.4f} "
            f"{r['max_rel_cost_deviation_vs_numpy_float64']:9.1e} {r['train_correct']!s:>6} "
            f"{r['test_correct']!s:>5}"
        )


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--devices", default="all", choices=("cpu", "gpu", "all"))
    p.add_argument("--iterations", type=int, default=2500)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", default=None, help="write the JSON here (after every row)")
    args = p.parse_args()
    restart_unpinned()
    iters = args.iterations
    ref = gpucat.train_model(device="cpu", iterations=iters, dtype="float64", solver="direct")
    reference = ref.metadata["result"]["costs"]
    rows = []
    doc = {"iterations": iters, "runs": args.runs, "rows": rows}

    def add(row: dict) -> None:  # --out after every row: a later failure keeps what was done
        row["ms_per_iteration"] = 1000 * row["median_s"] / iters
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(doc, f, indent=1)

    for device in selected_devices(args.devices):
        for dtype in ("float32", "float64"):
            for solver in ALGORITHMS:
                add(gpucat_row(device, dtype, solver, iters, args.runs, reference))
    if not args.no_torch:
        for dev, graph in torch_devices(args.devices):
            for dtype in ("float32", "float64"):
                add(torch_row(dev, graph, dtype, iters, args.runs, reference))
    print_table(rows)
    finish(doc, args.out)


if __name__ == "__main__":
    main()
