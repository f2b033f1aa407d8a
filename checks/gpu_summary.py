#!/usr/bin/env python3
"""Read what checks/gpu_check.sh wrote to OUTDIR and print each acceptance check of the GPU
work with its measured value and PASS or FAIL (and the speed goals as GOAL met / missed).

    python checks/gpu_summary.py OUTDIR [--gpucat gpucat-cupy] [--torch torch-cuda]

``--gpucat`` / ``--torch`` pick the rows to judge (on a CPU-only machine: gpucat-numpy and
torch-cpu), so the same summary runs anywhere. Exit code 1 when a check fails; a missed
goal does not fail.

What float32 can promise: NumPy/OpenBLAS and cuBLAS/CUB add in different orders, and over
2500 iterations of the reference recipe float32 rounding differences grow until a
pre-activation crosses a ReLU kink on one device and not the other (reversing the order of
the bias sums alone moves float32 costs by up to 0.11 on the CPU). So float64 must agree
to 1e-10 over the whole run, float32 costs to 1e-5 over the first 60 iterations, and both
dtypes must reach the same accuracies.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

from gpucat.frontends.compare import worst

PUBLISHED = {"cost_0": 0.771749, "train_correct": 206, "test_correct": 40}
FLOAT64_RTOL = 1e-10  # every cost of the whole run, any device against NumPy float64
FLOAT32_RTOL, FLOAT32_ITERATIONS = 1e-5, 60  # float32 costs of the first 60 iterations
MPI_RTOL = 1e-10
GOAL_US = {"direct": 40.0, "gram": 10.0}  # microseconds per iteration


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def rel_dev(costs, ref, below: int | None = None) -> float:
    """The largest relative difference between two lists of (iteration, cost), matched by
    iteration (those below ``below`` only); NaN where a cost is NaN, inf when they share no
    iteration."""
    ref = dict(map(tuple, ref))
    devs = [
        abs(c - ref[i]) / abs(ref[i]) for i, c in costs if i in ref and (below is None or i < below)
    ]
    return worst(devs) if devs else float("inf")


def check_tests(out: Path) -> list:
    log = (out / "tests.log").read_text() if (out / "tests.log").exists() else ""
    # pytest's last word: "340 passed, 2 skipped in 61.2s" (with = signs without -q)
    final = next(
        (ln for ln in reversed(log.splitlines()) if re.search(r"\d+ \w+.* in [\d.]+s", ln)), ""
    )
    counts = re.findall(r"(\d+) (passed|failed|skipped|errors?)", final)
    tally = {k.rstrip("s"): int(n) for n, k in counts}
    ok = bool(tally.get("passed")) and not tally.get("failed") and not tally.get("error")
    ok = ok and "pytest exit code 0" in log
    # a skip about the GPU is a broken device run (GPUCAT_REQUIRE_GPU=1 already fails those);
    # a skip for another reason (the CPU's BLAS, say) is reported, not failed
    skips = re.findall(r"^SKIPPED \[(\d+)\] (.*)$", log, flags=re.M)
    gpu = sum(int(n) for n, why in skips if re.search(r"cupy|gpu|cuda", why, flags=re.I))
    gpu += max(tally.get("skipped", 0) - sum(int(n) for n, _ in skips), 0)  # no reason shown
    checks = [("tests with GPUCAT_REQUIRE_GPU=1: none failed", str(tally or "no log"), ok)]
    checks.append(("tests: no GPU test skipped", f"{gpu} GPU skips", gpu == 0 and bool(log)))
    other = [f"{n}x {why}" for n, why in skips if not re.search(r"cupy|gpu|cuda", why, re.I)]
    if other:
        checks.append(("tests: skipped for other reasons", "; ".join(other), None))
    return checks


def check_devices(out: Path, gpucat: str) -> list:
    doc = load(out / "compare.json")
    if not doc:
        return [("compare.json", "missing", False)]
    backend = gpucat.removeprefix("gpucat-")
    checks = []
    for dtype in ("float64", "float32"):
        ref = next(
            (r for r in doc["rows"] if r["backend"] == "numpy" and r["dtype"] == dtype), None
        )
        mine = [r for r in doc["rows"] if r["backend"] == backend and r["dtype"] == dtype]
        if ref is None or not mine:
            checks.append((f"compare {dtype}: NumPy and {backend} rows", "missing", False))
            continue
        for r in mine:
            if dtype == "float64":
                dev = rel_dev(r["costs"], ref["costs"])
                name = f"compare float64: every cost within {FLOAT64_RTOL:g} of NumPy"
                checks.append(
                    (name, f"{dev:.1e} over {len(r['costs'])} costs", dev <= FLOAT64_RTOL)
                )
            else:
                dev = rel_dev(r["costs"], ref["costs"], below=FLOAT32_ITERATIONS)
                name = (
                    f"compare float32: costs of iterations < {FLOAT32_ITERATIONS} "
                    f"within {FLOAT32_RTOL:g} of NumPy"
                )
                checks.append((name, f"{dev:.1e}", dev <= FLOAT32_RTOL))
            same = all(r.get(k) == ref.get(k) for k in ("train_correct", "test_correct"))
            got = f"{r.get('train_correct')}/{r.get('test_correct')} vs NumPy {ref.get('train_correct')}/{ref.get('test_correct')}"
            checks.append((f"compare {dtype}: the same train/test accuracies", got, same))
    return checks


def check_mpi(out: Path) -> list:
    doc = load(out / "mpi.json")
    if not doc:
        return [("mpi.json (mpiexec -n 2 on the GPU)", "missing", False)]
    dev = worst([doc["cost_rel_err"], doc["param_rel_err"]])
    got = f"{doc['processes']} processes on {doc['device']} ({doc['reduce']}): {dev:.1e}"
    ok = doc["processes"] >= 2 and dev <= MPI_RTOL
    return [(f"mpiexec -n 2 equals one process within {MPI_RTOL:g}", got, ok)]


def check_recipe(out: Path, gpucat: str, torch: str) -> list:
    doc = load(out / "recipe.json")
    rows = doc["rows"] if doc else []
    mine = [r for r in rows if r["impl"] == gpucat]
    if not mine:
        return [(f"{gpucat} rows in recipe.json", "none: the backend never ran", False)]
    checks = []
    if not any(r["dtype"] == "float64" for r in mine):
        checks.append((f"{gpucat} float64: the published run", "no float64 row", False))
    for r in (r for r in mine if r["dtype"] == "float64"):
        dev = r["max_rel_cost_deviation_vs_numpy_float64"]
        ok = (
            round(r["cost_0"], 6) == PUBLISHED["cost_0"]
            and r["train_correct"] == PUBLISHED["train_correct"]
            and r["test_correct"] == PUBLISHED["test_correct"]
            and dev <= FLOAT64_RTOL
        )
        got = f"cost0 {r['cost_0']:.6f}, {r['train_correct']}/209, {r['test_correct']}/50, dev {dev:.1e}"
        checks.append(
            (f"{gpucat} float64 {r['solver']}: the published run, costs within 1e-10", got, ok)
        )
    iters = doc["iterations"]

    def median(impl, dtype, solver):
        return next(
            (
                r["median_s"]
                for r in rows
                if (r["impl"], r["dtype"], r["solver"]) == (impl, dtype, solver)
            ),
            None,
        )

    for dtype in ("float32", "float64"):
        timed = sorted((r["median_s"], r["solver"]) for r in mine if r["dtype"] == dtype)
        if not timed:
            continue
        best, which = timed[0]
        eager = median(torch, dtype, "eager")
        graph = median(torch, dtype, "cuda-graph")
        if eager is None:
            checks.append((f"{dtype}: PyTorch eager row", "missing", None))
        else:
            got = f"{which} {best:.4f} s / eager {eager:.4f} s = {best / eager:.2f}"
            checks.append((f"{dtype}: best gpucat solver <= PyTorch eager", got, best <= eager))
        if graph is not None:
            got = f"{which} {best:.4f} s / graph {graph:.4f} s = {best / graph:.2f}"
            checks.append((f"{dtype}: best gpucat solver / PyTorch CUDA graph", got, None))
        for seconds, solver in timed:
            if solver in GOAL_US:
                us = 1e6 * seconds / iters
                goal = GOAL_US[solver]
                checks.append(
                    (
                        f"goal {dtype} {solver}: <= {goal:g} us per iteration",
                        f"{us:.1f}",
                        "goal" if us <= goal else "missed",
                    )
                )
    return checks


def check_sweep(out: Path, gpucat: str) -> list[tuple[str, str, object]]:
    """sweep.json (gpucat compare --sweep): the device's rows in both dtypes, each within its
    measured peak; the crossover reported (no verdict: it is what it is)."""
    doc = load(out / "sweep.json")
    if not doc:
        return [("sweep.json", "missing", False)]
    backend = gpucat.removeprefix("gpucat-")
    mine = [r for r in doc["rows"] if r["backend"] == backend]
    checks = []
    for dtype in ("float64", "float32"):
        rows = [r for r in mine if r["dtype"] == dtype]
        within = all(0 < r["gflops"] <= r["peak_gflops"] for r in rows)
        sizes = ", ".join(f"{r['examples']}: {r['ms_per_iteration']:.3g} ms" for r in rows)
        checks.append(
            (
                f"sweep {dtype}: {backend} rows within its peak",
                sizes or "none",
                bool(rows) and within,
            )
        )
    checks.append(
        ("sweep: crossover (examples from which the GPU pays)", str(doc.get("crossover")), None)
    )
    return checks


def summarize(out: Path, gpucat: str, torch: str) -> list[tuple[str, str, object]]:
    """(check, measured, verdict) rows: True / False, "goal" / "missed", or None (n/a)."""
    return (
        check_tests(out)
        + check_devices(out, gpucat)
        + check_mpi(out)
        + check_recipe(out, gpucat, torch)
        + check_sweep(out, gpucat)
    )


MARKS = {True: "PASS", False: "FAIL", None: "n/a ", "goal": "GOAL", "missed": "MISS"}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir")
    p.add_argument("--gpucat", default="gpucat-cupy")
    p.add_argument("--torch", default="torch-cuda")
    a = p.parse_args(argv)
    checks = summarize(Path(a.outdir), a.gpucat, a.torch)
    for name, got, verdict in checks:
        print(f"{MARKS[verdict]}  {name}: {got}")
    failed = sum(v is False for _, _, v in checks)
    print(f"{'FAIL' if failed else 'PASS'}: {failed} of {len(checks)} checks failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
