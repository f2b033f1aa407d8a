#!/usr/bin/env python3
"""The direct algorithm on the reference recipe (the course data, m = 209) against its
floor: its two products with X alone as the CPU device runs them, and again with the update
written into W1 (as the step must), and PyTorch eager. Each round times all of them (a fit's
ms per iteration; the two products back to back; PyTorch's step), rounds alternate, and each
figure is a median over rounds. The solver comes from the solver_for hook, so that the
products see X exactly as the step holds it.

    python benchmarks/floor.py [--rounds 7] [--out F.json]
"""

from __future__ import annotations

import statistics
import time

import gpucat
from gpucat.data.course import load_course_data
from gpucat.training.loop import solver_for

from _common import finish, parser, restart_unpinned


def per_iteration(fn, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        fn()
    return 1000 * (time.perf_counter() - t) / n


def ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b))


def measure(train, dtype: str, iterations: int, rounds: int, torch: bool) -> dict:
    import numpy as np

    cpu = gpucat.device("cpu")
    recipe = dict(dtype=dtype, solver="direct", iterations=iterations, log_every=iterations)
    config = gpucat.TrainConfig(**recipe)
    solver = solver_for(cpu, config, train)[0]
    X, W = solver.shard.X, solver.params[0].W  # X: the rows seen as columns
    dZ = np.random.default_rng(0).standard_normal((W.shape[0], X.shape[1])).astype(dtype)
    buf = np.empty_like(W)

    def products():  # as the CPU device runs them: (Xᵀ·W1ᵀ)ᵀ, dZ·Xᵀ
        np.matmul(X.T, W.T)
        np.matmul(dZ, X.T, out=buf)

    # the same two products as the step must run them: the update lands in W1 (a copy),
    # through the device's own primitives
    W_own, dZ_small = W.copy(), dZ * 1e-3

    def products_into_W():
        cpu.matmul(W_own, X)
        cpu.descend(W_own, dZ_small, X)

    torch_step = None
    if torch:
        from torch_baseline import build, make_step

        torch_step = make_step(*build(train.X, train.Y, config.layers, 0.0075, dtype), False)

    def fit_ms() -> float:
        return gpucat.train_model(device=cpu, **recipe).metadata["result"]["ms_per_iteration"]

    fit_ms()  # warm-up: caches, threads
    times = {"gpucat": [], "floor": [], "floor_into_W": [], "torch": []}
    for _ in range(rounds):
        times["gpucat"].append(fit_ms())
        times["floor"].append(per_iteration(products, iterations))
        times["floor_into_W"].append(per_iteration(products_into_W, iterations))
        if torch_step is not None:
            times["torch"].append(per_iteration(torch_step, iterations))
    solver.close()
    row = {
        "dtype": dtype,
        "ms": {k: statistics.median(v) for k, v in times.items() if v},
        "rounds": times,
        "gpucat_over_floor": ratio(times["gpucat"], times["floor"]),
        "gpucat_over_floor_into_W": ratio(times["gpucat"], times["floor_into_W"]),
    }
    if times["torch"]:
        row["gpucat_over_torch"] = ratio(times["gpucat"], times["torch"])
    return row


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--dtypes", nargs="+", default=["float32", "float64"])
    p.add_argument("--iterations", type=int, default=200)
    p.add_argument("--rounds", type=int, default=7, help="alternating rounds (default: 7)")
    p.add_argument("--no-torch", action="store_true")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    restart_unpinned()
    train, _ = load_course_data()
    rows = [measure(train, d, args.iterations, args.rounds, not args.no_torch) for d in args.dtypes]
    finish({"iterations": args.iterations, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
