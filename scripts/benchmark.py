#!/usr/bin/env python3
"""Benchmarks: milliseconds per iteration over a sweep, and gpucat against PyTorch eager.

    python scripts/benchmark.py sweep --out DIR/NAME [--examples 209,2000] [--widths 20,100]
        gpucat's own sweep (`gpucat compare --sweep`, the one implementation) with PyTorch
        eager's step timed beside each of its sizes when torch is installed: OUT.json and
        OUT.png.

    python scripts/benchmark.py compare-sweeps --before A.json [...] --after B.json [...]
        A Markdown table of the rows two sweeps share: before, after, each also as a ratio
        to PyTorch's row in its own run, and the change of that ratio.

    python scripts/benchmark.py floor [--rounds 7] [--out F.json]
        The direct algorithm on the reference recipe against its floor (its two products
        with X alone, as NumpyDevice runs them; and again with the update written into W1, as
        the step must) and PyTorch eager, in alternating rounds.

    python scripts/benchmark.py ab --old DIR [--rounds 7] [--out F.json]
        The reference recipe's ms/iteration (direct and Gram, both dtypes) with the code of
        an older tree against this one, whole processes alternating, ratios pair by pair.

    python scripts/benchmark.py recipe [--devices gpu] [--runs 3] [--out F.json]
        The reference recipe on the real data in one process: every solver in both dtypes on
        each device, and PyTorch eager (and, on CUDA, replayed as a CUDA graph) beside it;
        a warm-up run first, then the median of --runs training times. Each run's logged
        costs are compared with NumPy float64 (direct solver).

OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, when set, pin older BLAS kernels than a user's
machine would pick: this script removes both, for every side of every comparison.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import ROOT, machine_info, restart_unpinned, unpinned_env

from gpucat.config import SOLVERS as SOLVER_CHOICES

SOLVERS = tuple(s for s in SOLVER_CHOICES if s != "auto")  # the algorithms, not the choice


def synthetic(m: int, seed: int = 0):
    """Random pixels 0..255 / 255 and random labels: real shape, never zeros."""
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.integers(0, 256, size=(12288, m), dtype=np.uint8).astype(np.float64) / 255.0
    Y = (rng.random((1, m)) < 0.35).astype(np.float64)
    return X, Y


def time_steps(step, sync, repeats: int, per_repeat: int, warmup: int = 2) -> float:
    """Median over repeats of (seconds for per_repeat steps) / per_repeat, in milliseconds."""
    for _ in range(warmup):
        step()
    sync()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        for _ in range(per_repeat):
            step()
        sync()
        samples.append((time.perf_counter() - t) / per_repeat)
    return 1000 * statistics.median(samples)


def bench_torch(X, Y, sizes, dtype, repeats, per_repeat, device="cpu", graph=False):
    """PyTorch's full-batch step on the same data in memory: eager, or replayed as a CUDA
    graph."""
    import torch
    from torch_baseline import build, make_step

    built = build(X, Y, sizes, 0.0075, dtype, device)
    step = make_step(*built, graph=graph)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    return {
        "impl": f"torch-{device}",
        "solver": "cuda-graph" if graph else "eager",
        "ms_per_iteration": time_steps(step, sync, repeats, per_repeat),
        "device": device,
    }


def selected_devices(devices: str) -> list:
    """The usable devices among --devices: cpu, gpu or all."""
    from gpucat.backends import available_devices

    return [b for b in available_devices() if devices == "all" or b.flag == devices]


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


def sweep(args) -> None:
    """gpucat's sweep with PyTorch beside it at each size (its rows under "torch")."""
    import gpucat
    from gpucat.frontends.plots import plot_sweep

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = gpucat.sweep_devices(
        examples=args.examples,
        widths=args.widths,
        iterations=args.repeats,
        devices=selected_devices(args.devices),
        on_row=lambda row: print(json.dumps(row), flush=True),
    )
    result["torch"] = []
    for m, width, dtype in dict.fromkeys(
        (r["examples"], r["width"], r["dtype"]) for r in result["rows"]
    ):
        if not torch_devices(args.devices):
            break
        X, Y = synthetic(m)
        for dev, graph in torch_devices(args.devices):
            sizes = [12288, width, 7, 5, 1]
            r = bench_torch(X, Y, sizes, dtype, args.repeats, 1, dev, graph)
            result["torch"].append({"examples": m, "width": width, "dtype": dtype, **r})
            print(json.dumps(result["torch"][-1]), flush=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot_sweep(out.with_suffix(".png"), result)


def recipe(args) -> dict:
    """The reference recipe on the real data: every solver, both dtypes, each device, and
    PyTorch beside it, in one process; medians of --runs after a warm-up run of each."""
    from gpucat.backends import get_device
    from gpucat.config import TrainConfig
    from gpucat.data.course import load_course_data
    from gpucat.frontends.compare import worst
    from gpucat.nn.inference import probabilities, scores
    from gpucat.training.loop import fit

    train, test = load_course_data(args.data_dir)
    iters = args.iterations

    def rel(a, b) -> float:  # NaN when a cost is NaN, wherever it comes
        return worst(abs(x - y) / abs(y) for (_, x), (_, y) in zip(a, b))

    ref = fit(
        get_device("cpu"),
        TrainConfig(iterations=iters, dtype="float64", solver="direct"),
        train,
    )
    rows = []
    doc = {"machine": machine_info(), "iterations": iters, "runs": args.runs, "rows": rows}

    def save() -> None:  # --out after every change: a later failure keeps what was done
        if args.out:
            Path(args.out).write_text(json.dumps(doc, indent=1))

    def add(row: dict) -> None:
        row["ms_per_iteration"] = 1000 * row["median_s"] / iters
        rows.append(row)
        print(json.dumps(row), flush=True)
        save()

    def gpucat_rows(device):
        for dtype in ("float32", "float64"):
            for solver in SOLVERS:
                config = TrainConfig(iterations=iters, dtype=dtype, solver=solver)
                warm = TrainConfig(iterations=20, dtype=dtype, solver=solver)
                fit(device, warm, train)
                runs = [fit(device, config, train) for _ in range(args.runs)]
                r = runs[-1]
                correct = [
                    scores(probabilities(device, r.params, ds, dtype), ds.Y)["correct"]
                    for ds in (train, test)
                ]
                add(
                    {
                        "impl": f"gpucat-{device.name}",
                        "device": device.label,
                        "dtype": dtype,
                        "solver": r.solver,
                        "seconds": [x.seconds for x in runs],
                        "median_s": statistics.median(x.seconds for x in runs),
                        "cost_0": r.costs[0][1],
                        "max_rel_cost_deviation_vs_numpy_float64": rel(r.costs, ref.costs),
                        "train_correct": correct[0],
                        "test_correct": correct[1],
                    }
                )

    devices = selected_devices(args.devices)
    for device in devices:
        gpucat_rows(device)
    if not args.no_torch:
        from torch_baseline import train_torch

        for dev, graph in torch_devices(args.devices):
            for dtype in ("float32", "float64"):

                def run(n, dtype=dtype, dev=dev, graph=graph):
                    return train_torch(
                        train.X, train.Y, (12288, 20, 7, 5, 1), 0.0075, n, dtype, dev, graph=graph
                    )

                run(20)  # warm-up
                runs = [run(iters) for _ in range(args.runs)]
                add(
                    {
                        "impl": f"torch-{dev}",
                        "device": dev,
                        "dtype": dtype,
                        "solver": "cuda-graph" if graph else "eager",
                        "seconds": [x["seconds"] for x in runs],
                        "median_s": statistics.median(x["seconds"] for x in runs),
                        "cost_0": runs[-1]["costs"][0][1],
                        "max_rel_cost_deviation_vs_numpy_float64": rel(
                            runs[-1]["costs"], ref.costs
                        ),
                        "train_correct": round(runs[-1]["train_accuracy"] * train.m),
                        "test_correct": None,
                    }
                )
    print_recipe_table(rows)
    return doc


AB_CHILD = """
import json, sys
import gpucat
from gpucat import __file__ as where
try:  # this tree's layout, else an older tree's (gpucat.train, gpucat.data)
    from gpucat.config import TrainConfig
    from gpucat.data.course import load_course_data
    from gpucat.training.loop import fit
except ImportError:
    from gpucat.data import load_course_data
    from gpucat.train import TrainConfig, fit
solver, dtype, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
train, _ = load_course_data()
cpu = gpucat.device("cpu")  # the public API: the same call in older trees
# warm-up, as long as the timed run: threads, caches and clocks settle before the clock starts
fit(cpu, TrainConfig(iterations=iterations, dtype=dtype, solver=solver), train)
r = fit(cpu, TrainConfig(iterations=iterations, dtype=dtype, solver=solver), train)
print(json.dumps({"ms": r.ms_per_iteration, "solver": r.solver, "gpucat": where}))
"""


def ab(args) -> dict:
    """The reference recipe's ms/iteration (training time alone, after a warm-up) with the
    code in --old against this tree: whole processes, old and new alternating, each pair's
    ratio new / old; medians."""
    trees = {"old": str(Path(args.old).resolve()), "new": str(ROOT)}
    rows = []
    for solver in args.solvers:
        for dtype in args.dtypes:
            ms: dict[str, list[float]] = {"old": [], "new": []}
            for _ in range(args.rounds):
                for side, tree in trees.items():
                    env = {**unpinned_env(), "PYTHONPATH": tree, "GPUCAT_LAYOUT_CACHE": ""}
                    cmd = [sys.executable, "-c", AB_CHILD, solver, dtype, str(args.iterations)]
                    # cwd: the tree itself (python -c puts the folder it starts in first)
                    out = subprocess.run(
                        cmd, capture_output=True, text=True, env=env, check=True, cwd=tree
                    )
                    doc = json.loads(out.stdout.strip().splitlines()[-1])
                    assert doc["gpucat"].startswith(tree) and doc["solver"] == solver, doc
                    ms[side].append(doc["ms"])
            ratios = [n / o for n, o in zip(ms["new"], ms["old"])]
            row = {
                "solver": solver,
                "dtype": dtype,
                "old_ms": statistics.median(ms["old"]),
                "new_ms": statistics.median(ms["new"]),
                "new_over_old": statistics.median(ratios),
                "ratios": ratios,
                "rounds": ms,
            }
            rows.append(row)
            print(json.dumps({k: v for k, v in row.items() if k != "rounds"}), flush=True)
    doc = {"machine": machine_info(), "iterations": args.iterations, "old": args.old, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1))
    return doc


def floor(args) -> dict:
    """The direct algorithm on the reference recipe (the real data, m = 209) against its
    floor, its two products with X alone as NumpyDevice runs them, and against PyTorch eager:
    each round times all three (a fit's ms per iteration; the two products back to back;
    PyTorch's step), rounds alternate, and each figure is a median over rounds."""
    import numpy as np

    from gpucat.backends import get_device
    from gpucat.backends.cpu import NumpyDevice
    from gpucat.config import TrainConfig
    from gpucat.data.course import load_course_data
    from gpucat.training.loop import fit, solver_for

    train, _ = load_course_data(args.data_dir)
    cpu = get_device("cpu")
    out = []
    for dtype in args.dtypes:
        config = TrainConfig(
            dtype=dtype, solver="direct", iterations=args.iterations, log_every=args.iterations
        )
        solver = solver_for(cpu, config, train)[0]
        X, W = solver.shard.X, solver.params[0].W  # X: the rows seen as columns
        dZ = np.random.default_rng(0).standard_normal((W.shape[0], X.shape[1])).astype(dtype)
        buf = np.empty_like(W)

        def products(X=X, W=W, dZ=dZ, buf=buf):  # as NumpyDevice runs them: (Xᵀ·W1ᵀ)ᵀ, dZ·Xᵀ
            np.matmul(X.T, W.T)
            np.matmul(dZ, X.T, out=buf)

        # the same two products as the step must run them: the update lands in W1 (a copy),
        # through the step's own primitive
        W_own, dZ_small, ops = W.copy(), dZ * 1e-3, NumpyDevice()

        def products_into_W(X=X, W=W_own, dZ=dZ_small, ops=ops):
            ops.matmul(W, X)
            ops.descend(W, dZ, X)

        def per_iteration(fn, n):
            t = time.perf_counter()
            for _ in range(n):
                fn()
            return 1000 * (time.perf_counter() - t) / n

        torch_step = None
        if not args.no_torch:
            from torch_baseline import build, make_step

            torch_step = make_step(*build(train.X, train.Y, config.layers, 0.0075, dtype), False)
        fit(cpu, config, train)  # warm-up: plans, caches, threads
        rounds = {"gpucat": [], "floor": [], "floor_into_W": [], "torch": []}
        for _ in range(args.rounds):
            rounds["gpucat"].append(fit(cpu, config, train).ms_per_iteration)
            rounds["floor"].append(per_iteration(products, args.iterations))
            rounds["floor_into_W"].append(per_iteration(products_into_W, args.iterations))
            if torch_step is not None:
                rounds["torch"].append(per_iteration(torch_step, args.iterations))
        med = {k: statistics.median(v) for k, v in rounds.items() if v}
        ratio = [g / f for g, f in zip(rounds["gpucat"], rounds["floor"])]
        row = {
            "dtype": dtype,
            "ms": med,
            "rounds": rounds,
            "gpucat_over_floor": statistics.median(ratio),
            "gpucat_over_floor_into_W": statistics.median(
                [g / f for g, f in zip(rounds["gpucat"], rounds["floor_into_W"])]
            ),
        }
        if rounds["torch"]:
            row["gpucat_over_torch"] = statistics.median(
                [g / t for g, t in zip(rounds["gpucat"], rounds["torch"])]
            )
        solver.close()
        out.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "rounds"}), flush=True)
    doc = {"machine": machine_info(), "iterations": args.iterations, "rows": out}
    if args.out:
        Path(args.out).write_text(json.dumps(doc, indent=1))
    return doc


def print_recipe_table(rows) -> None:
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser(
        "sweep",
        help="gpucat's sweep (gpucat compare --sweep) with PyTorch eager beside each size: "
        "OUT.json and OUT.png",
    )
    s.add_argument("--repeats", type=int, default=5, help="iterations timed at each size")
    s.add_argument("--examples", type=lambda t: [int(x) for x in t.split(",")], default=None)
    s.add_argument("--widths", type=lambda t: [int(x) for x in t.split(",")], default=None)
    s.add_argument(
        "--out",
        required=True,
        metavar="DIR/NAME",
        help="where the results go: NAME.json and .png in DIR (nothing is written into "
        "the repository unless you name it)",
    )
    s.add_argument("--devices", default="all", choices=("cpu", "gpu", "all"))
    r = sub.add_parser(
        "recipe",
        help="the reference recipe on the course data: every solver, both dtypes, each "
        "device, PyTorch beside it; medians of --runs",
    )
    r.add_argument("--devices", default="all", choices=("cpu", "gpu", "all"))
    r.add_argument("--iterations", type=int, default=2500)
    r.add_argument("--runs", type=int, default=3)
    r.add_argument("--no-torch", action="store_true")
    r.add_argument("--data-dir", default=None)
    r.add_argument("--out", default=None, help="write the JSON here")
    a = sub.add_parser(
        "ab",
        help="the reference recipe's ms/iteration with an older tree's code (--old) against "
        "this one's, whole processes alternating",
    )
    a.add_argument("--old", required=True, metavar="DIR", help="the root of the older tree")
    a.add_argument("--solvers", nargs="+", default=["direct", "gram"])
    a.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    a.add_argument("--iterations", type=int, default=400)
    a.add_argument("--rounds", type=int, default=7)
    a.add_argument("--out", default=None)
    fl = sub.add_parser("floor", help="the direct step against its two products with X")
    fl.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    fl.add_argument("--iterations", type=int, default=200)
    fl.add_argument("--rounds", type=int, default=7, help="alternating rounds (default: 7)")
    fl.add_argument("--no-torch", action="store_true")
    fl.add_argument("--data-dir", default=None)
    fl.add_argument("--out", default=None)
    args = p.parse_args()
    restart_unpinned()
    {"sweep": sweep, "recipe": recipe, "floor": floor, "ab": ab}[args.cmd](args)


if __name__ == "__main__":
    main()
