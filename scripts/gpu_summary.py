#!/usr/bin/env python3
"""Read what scripts/gpu_check.sh wrote to OUTDIR and print each acceptance check of the GPU
work with its measured value and PASS or FAIL.

    python scripts/gpu_summary.py OUTDIR [--gpucat gpucat-cupy] [--torch torch-cuda]

``--gpucat`` / ``--torch`` pick the rows to judge (on a CPU-only machine: gpucat-numpy and
torch-cpu), so the same summary runs anywhere. Exit code 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

PUBLISHED = {"cost_0": 0.771749, "train_correct": 206, "test_correct": 40}
COST_RTOL = {"float64": 1e-12, "float32": 1e-5}  # compare_devices, against NumPy, same dtype
RECIPE_RTOL = 1e-10  # float64 recipe: every logged cost against NumPy float64
GOAL_US = 40.0  # microseconds per iteration, float32 direct


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def summarize(out: Path, gpucat: str, torch: str) -> list[tuple[str, str, bool | None]]:
    """(check, measured, passed) rows; passed is None where there was nothing to judge."""
    checks: list[tuple[str, str, bool | None]] = []
    log = (out / "tests.log").read_text() if (out / "tests.log").exists() else ""
    counts = re.findall(r"(\d+) (passed|failed|skipped|errors?)", log)
    tally = {k.rstrip("s"): int(n) for n, k in counts[-4:]} if counts else {}
    tests_ok = bool(tally) and not tally.get("failed") and not tally.get("error")
    tests_ok = tests_ok and not tally.get("skipped") and "pytest exit code 0" in log
    checks.append(("tests with GPUCAT_REQUIRE_GPU=1: none failed or skipped", str(tally), tests_ok))

    doc = load(out / "compare_devices.json")
    if doc:
        for dtype, tol in COST_RTOL.items():
            devs = [r["max_cost_deviation"] for r in doc["rows"] if r["dtype"] == dtype]
            worst = max(devs) if devs else float("nan")
            checks.append(
                (
                    f"compare_devices {dtype}: max cost deviation <= {tol:g}",
                    f"{worst:.2e}",
                    worst <= tol,
                )
            )
    else:
        checks.append(("compare_devices.json", "missing", False))

    doc = load(out / "recipe.json")
    rows = doc["rows"] if doc else []
    mine = [r for r in rows if r["impl"] == gpucat]
    if not mine:
        checks.append((f"{gpucat} rows in recipe.json", "none: the backend never ran", False))
    for r in (r for r in mine if r["dtype"] == "float64"):
        dev = r["max_rel_cost_deviation_vs_numpy_float64"]
        ok = (
            round(r["cost_0"], 6) == PUBLISHED["cost_0"]
            and r["train_correct"] == PUBLISHED["train_correct"]
            and r["test_correct"] == PUBLISHED["test_correct"]
            and dev <= RECIPE_RTOL
        )
        got = f"cost0 {r['cost_0']:.6f}, {r['train_correct']}/209, {r['test_correct']}/50, dev {dev:.1e}"
        checks.append(
            (f"{gpucat} float64 {r['solver']}: published run, costs within 1e-10", got, ok)
        )

    def median(impl, dtype, solver):
        return next(
            (
                r["median_s"]
                for r in rows
                if (r["impl"], r["dtype"], r["solver"]) == (impl, dtype, solver)
            ),
            None,
        )

    # the direct algorithm: as written (direct) or as fused kernels (fused), the faster
    timed = [(median(gpucat, "float32", s), s) for s in ("direct", "fused")]
    timed = [t for t in timed if t[0] is not None]
    direct, which = min(timed) if timed else (None, "direct")
    eager, graph = median(torch, "float32", "eager"), median(torch, "float32", "cuda-graph")
    iters = doc["iterations"] if doc else 1
    if direct is not None:
        us = 1e6 * direct / iters
        checks.append(
            (
                f"{gpucat} float32 {which}: us per iteration (goal <= {GOAL_US:g})",
                f"{us:.1f}",
                us <= GOAL_US,
            )
        )
    for name, t in (("eager", eager), ("CUDA graph", graph)):
        if direct is not None and t is not None:
            checks.append(
                (
                    f"float32 {which} seconds / PyTorch {name}",
                    f"{direct:.4f} / {t:.4f} = {direct / t:.2f}",
                    direct <= t,
                )
            )
        else:
            checks.append((f"float32 direct / PyTorch {name}", "no rows", None))
    return checks


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("outdir")
    p.add_argument("--gpucat", default="gpucat-cupy")
    p.add_argument("--torch", default="torch-cuda")
    a = p.parse_args(argv)
    checks = summarize(Path(a.outdir), a.gpucat, a.torch)
    for name, got, ok in checks:
        mark = "n/a " if ok is None else ("PASS" if ok else "FAIL")
        print(f"{mark}  {name}: {got}")
    return 1 if any(ok is False for _, _, ok in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
