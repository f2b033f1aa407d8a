#!/usr/bin/env python3
"""Benchmarks: milliseconds per iteration over a sweep, and gpucat against PyTorch eager.

    python scripts/benchmark.py sweep --out DIR/NAME [--quick] [--json-only]
        Sweeps examples m (209 .. 20,000, synthetic data of the real shape), hidden width,
        dtype, device and solver; a PyTorch-eager baseline of the same network when torch
        is installed. Median ms/iteration over repeats after warm-up, device synchronized.
        Writes OUT.json (after every row), then OUT.csv and OUT.png
        (`benchmark.py plot-sweep OUT.json` makes those two from a JSON alone).

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
import csv
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


def bench_gpucat(device, solver_name, X, Y, sizes, dtype, repeats, per_repeat, batch=None):
    """Median ms per iteration of one solver, timed alone (no trainer loop) after warm-up:
    full batch on X, or mini-batches of ``batch`` taken from uint8 pixels resident on the
    device and converted there, as `gpucat train --batch-size` runs them."""
    import numpy as np

    from gpucat.config import TrainConfig
    from gpucat.data import Dataset
    from gpucat.train import solver_for

    pixels = np.rint(X.T * 255).astype(np.uint8)  # synthetic() made X as pixels / 255
    config = TrainConfig(layers=tuple(sizes), dtype=dtype, solver=solver_name, batch_size=batch)
    device.synchronize()
    t = time.perf_counter()
    solver = solver_for(device, config, Dataset(pixels, Y, "synthetic"))[0]
    device.synchronize()
    setup_ms = 1000 * (time.perf_counter() - t)
    steps = iter(range(10**9))
    ms = time_steps(lambda: solver.step(next(steps)), device.synchronize, repeats, per_repeat)
    solver.close()
    return {
        "impl": f"gpucat-{device.name}",
        "solver": solver_name if batch is None else f"{solver_name} minibatch-{batch}",
        "ms_per_iteration": ms,
        "setup_ms": setup_ms,
        "device": device.label,
    }


MINIBATCH = 256


def bench_torch(X, Y, sizes, dtype, repeats, per_repeat, device="cpu", graph=False, batch=None):
    """PyTorch's step on the same data in memory: full batch (eager, or replayed as a CUDA
    graph), or eager mini-batches of ``batch`` rows indexed out of the float tensor in a
    shuffled order."""
    import torch
    from torch_baseline import build, make_step

    model, Xt, Yt, loss_fn, opt = built = build(X, Y, sizes, 0.0075, dtype, device)
    step = make_step(*built, graph=graph)
    if batch is not None:
        m, gen = Xt.shape[0], torch.Generator(device="cpu").manual_seed(1)
        order = {"perm": torch.randperm(m, generator=gen), "k": 0}

        def step():
            if (order["k"] + 1) * batch > m:
                order["perm"], order["k"] = torch.randperm(m, generator=gen), 0
            idx = order["perm"][order["k"] * batch : (order["k"] + 1) * batch].to(device)
            order["k"] += 1
            opt.zero_grad(set_to_none=True)
            loss_fn(model(Xt[idx]), Yt[idx]).backward()
            opt.step()

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    solver = f"minibatch-{batch}" if batch else "cuda-graph" if graph else "eager"
    return {
        "impl": f"torch-{device}",
        "solver": solver,
        "ms_per_iteration": time_steps(step, sync, repeats, per_repeat),
        "setup_ms": 0.0,
        "device": device,
    }


def selected_devices(devices: str) -> list:
    """The usable backends among --devices: cpu, gpu or all."""
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
    ms_list = [209, 1000] if args.quick else [209, 1000, 5000, 20000]
    widths = [20] if args.quick else [20, 100, 400]
    cases = [(m, 20) for m in ms_list] + [(209, w) for w in widths if w != 20]
    rows = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    doc = {"machine": machine_info(), "repeats": args.repeats, "rows": rows}

    def add(row: dict) -> None:  # OUT.json after every row: an interrupted sweep keeps its rows
        rows.append(row)
        print(json.dumps(row), flush=True)
        out.with_suffix(".json").write_text(json.dumps(doc, indent=1))

    for m, width in cases:
        X, Y = synthetic(m)
        sizes = [12288, width, 7, 5, 1]
        # big problems take long per step: fewer steps per repeat keeps the sweep bounded
        per_repeat = max(1, min(20, int(20 * 1000 / m)))
        for dtype in ("float32", "float64"):
            for device in selected_devices(args.devices):
                for solver in SOLVERS:
                    if solver == "gram" and m >= 12288:
                        continue  # auto never picks it there: G is bigger than X
                    r = bench_gpucat(device, solver, X, Y, sizes, dtype, args.repeats, per_repeat)
                    add({"m": m, "hidden": width, "dtype": dtype, **r})
                batch = min(MINIBATCH, m)
                r = bench_gpucat(device, "direct", X, Y, sizes, dtype, args.repeats, 20, batch)
                add({"m": m, "hidden": width, "dtype": dtype, **r})
            for dev, graph in torch_devices(args.devices):
                r = bench_torch(X, Y, sizes, dtype, args.repeats, per_repeat, dev, graph)
                add({"m": m, "hidden": width, "dtype": dtype, **r})
                if not graph:
                    batch = min(MINIBATCH, m)
                    r = bench_torch(X, Y, sizes, dtype, args.repeats, 20, dev, batch=batch)
                    add({"m": m, "hidden": width, "dtype": dtype, **r})
    if not rows:
        print(f"no usable device among --devices {args.devices}: nothing to time", file=sys.stderr)
        return
    if not args.json_only:
        write_tables(out.with_suffix(".json"))


def write_tables(json_path: Path) -> None:
    """OUT.csv and OUT.png beside a sweep's OUT.json."""
    rows = json.loads(Path(json_path).read_text())["rows"]
    out = Path(json_path).with_suffix("")
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    plot_sweep(rows, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.csv')}, .json and .png", file=sys.stderr)


def compare_sweeps(before: list[Path], after: list[Path]) -> None:
    """A Markdown table of the gpucat rows sweeps share, before and after a change. Each row
    is divided by PyTorch's row of the same case in its own run (eager, or mini-batch for
    mini-batch rows), so that the machine's drift between runs cancels out; with several
    runs a side, the median. The last column compares the two sides (below 1: faster)."""

    def ratios(paths):
        out: dict = {}
        for path in paths:
            rows = {}
            for r in json.loads(path.read_text())["rows"]:
                solver = r["solver"].replace("direct minibatch", "minibatch")
                rows[(r["m"], r["hidden"], r["dtype"], r["impl"], solver)] = r["ms_per_iteration"]
            for (m, h, dtype, impl, solver), ms in rows.items():
                torch = rows.get(
                    (m, h, dtype, "torch-cpu", solver if "mini" in solver else "eager")
                )
                if impl != "torch-cpu" and torch:
                    out.setdefault((m, h, dtype, solver), []).append((ms, ms / torch))
        return {k: [statistics.median(x) for x in zip(*v)] for k, v in out.items()}

    old, new = ratios(before), ratios(after)
    print("| m | hidden | dtype | solver | before ms (/ torch) | after ms (/ torch) | change |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for key, (ms, r) in new.items():
        if key in old:
            was, q = old[key]
            print(
                f"| {' | '.join(map(str, key))} | {was:.3g} ({q:.2f}) | {ms:.3g} ({r:.2f}) | {r / q:.2f} |"
            )


def plot_sweep(rows, path) -> None:
    try:
        from gpucat.plots import _pyplot, _save

        plt = _pyplot()
    except Exception as e:
        print(f"no plot: {e}", file=sys.stderr)
        return
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), layout="constrained")
    for ax, (key, fixed, xlabel) in zip(
        axes,
        (
            ("m", ("hidden", 20), "examples m (hidden width 20)"),
            ("hidden", ("m", 209), "hidden width (m = 209)"),
        ),
    ):
        series = {}
        for r in rows:
            if r[fixed[0]] != fixed[1]:
                continue
            series.setdefault(f"{r['impl']} {r['solver']} {r['dtype']}", []).append(
                (r[key], r["ms_per_iteration"])
            )
        for label, pts in sorted(series.items()):
            pts.sort()
            if len(pts) > 1:
                ax.plot(
                    *zip(*pts), marker="o", label=label, linestyle="--" if "torch" in label else "-"
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("ms per iteration (median)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    _save(fig, path)


def recipe(args) -> dict:
    """The reference recipe on the real data: every solver, both dtypes, each device, and
    PyTorch beside it, in one process; medians of --runs after a warm-up run of each."""
    from gpucat import data
    from gpucat.backends import get_device
    from gpucat.compare import worst
    from gpucat.inference import probabilities, scores
    from gpucat.train import TrainConfig, fit

    train, test = data.load_course_data(args.data_dir)
    iters = args.iterations

    def rel(a, b) -> float:  # NaN when a cost is NaN, wherever it comes
        return worst(abs(x - y) / abs(y) for (_, x), (_, y) in zip(a, b))

    ref = fit(
        get_device("cpu"),
        TrainConfig(iterations=iters, dtype="float64", solver="direct"),
        train.X,
        train.Y,
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
                fit(device, warm, train.X, train.Y)
                runs = [fit(device, config, train.X, train.Y) for _ in range(args.runs)]
                r = runs[-1]
                correct = [
                    scores(probabilities(device, r.params, ds.X, dtype), ds.Y)["correct"]
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
from gpucat import data, __file__ as where
from gpucat.train import TrainConfig, fit
solver, dtype, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
train, _ = data.load_course_data()
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

    from gpucat import data
    from gpucat.backends import get_device
    from gpucat.backends.cpu import NumpyDevice
    from gpucat.train import TrainConfig, fit, solver_for

    train, _ = data.load_course_data(args.data_dir)
    cpu = get_device("cpu")
    out = []
    for dtype in args.dtypes:
        config = TrainConfig(dtype=dtype, solver="direct", iterations=args.iterations)
        config.log_every = args.iterations
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
        help="ms/iteration over examples, width, dtype, device and solver (synthetic data), "
        "PyTorch eager beside it; OUT.json, .csv and .png",
    )
    s.add_argument("--repeats", type=int, default=5)
    s.add_argument("--quick", action="store_true", help="a small sweep (m 209 and 1000, width 20)")
    s.add_argument(
        "--out",
        required=True,
        metavar="DIR/NAME",
        help="where the results go: NAME.json, .csv and .png in DIR (nothing is written into "
        "the repository unless you name it)",
    )
    s.add_argument("--devices", default="all", choices=("cpu", "gpu", "all"))
    s.add_argument("--json-only", action="store_true", help="write OUT.json alone")
    ps = sub.add_parser("plot-sweep", help="OUT.csv and OUT.png from a sweep's OUT.json")
    ps.add_argument("json_path", metavar="OUT.json")
    cs = sub.add_parser("compare-sweeps", help="a Markdown table of two sweeps' common rows")
    cs.add_argument("--before", type=Path, nargs="+", required=True)
    cs.add_argument("--after", type=Path, nargs="+", required=True)
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
    if args.cmd == "plot-sweep":
        write_tables(Path(args.json_path))
        return
    if args.cmd == "compare-sweeps":
        compare_sweeps(args.before, args.after)
        return
    {"sweep": sweep, "recipe": recipe, "floor": floor, "ab": ab}[args.cmd](args)


if __name__ == "__main__":
    main()
