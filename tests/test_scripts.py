"""The scripts a newcomer runs: compare_devices on a CPU-only machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from conftest import data_dir

from gpucat.backend import available_backends

ROOT = Path(__file__).resolve().parent.parent


def test_compare_devices_json_on_every_usable_backend(tmp_path):
    env = {**os.environ, "GPUCAT_DATA_DIR": str(data_dir())}
    png = tmp_path / "devices.png"
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "compare_devices.py"),
            "--iterations",
            "30",
            "--log-every",
            "10",
            "--json",
            "--plot",
            str(png),
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    rows = doc["rows"]
    assert len(rows) == 2 * len(available_backends())
    assert {r["dtype"] for r in rows} == {"float32", "float64"}
    for r in rows:
        assert set(r) >= {
            "device",
            "backend",
            "dtype",
            "ms_per_iteration",
            "seconds",
            "final_cost",
            "train_accuracy",
            "test_accuracy",
        }
        assert 0 < r["final_cost"] < 0.78 and r["seconds"] > 0
    # identical initial parameters: same dtype, same numbers on every device (dtype tolerance)
    assert doc["max_cost_deviation"] <= 1e-5
    assert png.stat().st_size > 10_000


def test_benchmark_pieces_run_the_real_solvers():
    """The sweep's building blocks: real-shaped, non-zero data; each solver as gpucat runs it."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import benchmark

    X, Y = benchmark.synthetic(30)
    assert X.shape == (12288, 30) and 0 <= X.min() and X.max() <= 1 and X.std() > 0.2
    assert set(np.unique(Y)) == {0.0, 1.0}
    from gpucat.backend import get_backend

    for solver in ("direct", "gram"):
        r = benchmark.bench_gpucat(get_backend("cpu"), solver, X, Y, [12288, 4, 1], "float64", 2, 2)
        assert r["impl"] == "gpucat-numpy" and r["solver"] == solver and r["ms_per_iteration"] > 0
