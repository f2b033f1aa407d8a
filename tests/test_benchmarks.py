"""The measurements' own logic (benchmarks/), on a CPU-only machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import data_dir

ROOT = Path(__file__).resolve().parent.parent


def test_step_timing_is_the_median_of_synchronized_repeats(monkeypatch):
    """sweep.timed (gpucat's sweep and the PyTorch rows beside it): the warm-up steps first,
    then each step followed by a device sync before the clock is read, and the median."""
    from gpucat.frontends import sweep

    calls = []
    clock = iter([0.0, 0.005, 1.0, 1.015, 2.0, 2.010])  # steps of 5, 15 and 10 ms
    monkeypatch.setattr(sweep.time, "perf_counter", lambda: next(clock))
    seconds = sweep.timed(lambda: calls.append("step"), lambda: calls.append("sync"), 3, warmup=2)
    assert calls == ["step", "step", "sync"] + ["step", "sync"] * 3
    assert seconds == pytest.approx(0.010)


def test_benchmark_data_is_real_shaped_and_never_zeros():
    import _common

    X, Y = _common.synthetic(30)
    assert X.shape == (12288, 30) and 0 <= X.min() and X.max() <= 1 and X.std() > 0.2
    assert set(np.unique(Y)) == {0.0, 1.0}
    assert np.array_equal(X * 255, np.round(X * 255))  # pixels / 255, as the trainer sees them


def test_recipe_benchmark_rows_on_cpu(tmp_path):
    """benchmarks/recipe.py, which gpu_check.sh runs on a GPU, on the CPU: every solver in both
    dtypes, each checked against NumPy float64 from the same start."""
    out = tmp_path / "recipe.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "recipe.py"),
            "--devices",
            "cpu",
            "--iterations",
            "30",
            "--runs",
            "2",
            "--no-torch",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "GPUCAT_DATA_DIR": str(data_dir())},
        check=True,
    )
    rows = json.loads(out.read_text())["rows"]
    assert {(r["dtype"], r["solver"]) for r in rows} == {
        (d, s) for d in ("float32", "float64") for s in ("direct", "gram")
    }
    for r in rows:
        assert len(r["seconds"]) == 2 and r["median_s"] > 0
        assert round(r["cost_0"], 6) == 0.771749  # the published first cost, in both dtypes
        limit = 1e-12 if r["dtype"] == "float64" else 1e-5
        assert r["max_rel_cost_deviation_vs_numpy_float64"] <= limit
