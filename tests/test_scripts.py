"""The scripts a newcomer runs: compare_devices on a CPU-only machine."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import reference_impl as ref
from conftest import RTOL, data_dir, rel_err

from gpucat.backend import available_backends

ROOT = Path(__file__).resolve().parent.parent


def test_compare_devices_json_on_every_usable_backend(tmp_path, course_data):
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
    # every device and dtype against the independent float64 run of the same 30 iterations
    train, _ = course_data
    _, expected = ref.train(train.X, train.Y, [12288, 20, 7, 5, 1], 0.0075, 30, log_every=10)
    for r in rows:
        assert set(r) >= {"device", "backend", "dtype", "ms_per_iteration", "seconds"}
        assert [i for i, _ in r["costs"]] == [0, 10, 20, 29]
        assert rel_err([c for _, c in r["costs"]], [c for _, c in expected]) <= RTOL[r["dtype"]]
        assert r["final_cost"] == r["costs"][-1][1] and r["seconds"] > 0
        assert 0 <= r["train_accuracy"] <= 1 and 0 <= r["test_accuracy"] <= 1
    assert doc["max_cost_deviation"] == max(r["max_cost_deviation"] for r in rows)
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


def test_recipe_benchmark_rows_on_cpu(tmp_path):
    """`benchmark.py recipe`, which gpu_check.sh runs on a GPU, on the CPU: every solver in both
    dtypes, each checked against NumPy float64 from the same start."""
    out = tmp_path / "recipe.json"
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "benchmark.py"),
            "recipe",
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


def _summary(tmp_path, recipe_rows, log="207 passed in 80.0s\npytest exit code 0\n"):
    (tmp_path / "tests.log").write_text(log)
    compare = {
        "rows": [
            {"dtype": "float64", "max_cost_deviation": 3e-14},
            {"dtype": "float32", "max_cost_deviation": 2e-7},
        ]
    }
    (tmp_path / "compare_devices.json").write_text(json.dumps(compare))
    (tmp_path / "recipe.json").write_text(json.dumps({"iterations": 2500, "rows": recipe_rows}))
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_summary.py"), str(tmp_path)],
        capture_output=True,
        text=True,
    )


def test_gpu_summary_judges_every_check(tmp_path):
    good64 = {
        "impl": "gpucat-cupy",
        "dtype": "float64",
        "solver": "direct",
        "median_s": 0.5,
        "cost_0": 0.77174933,
        "max_rel_cost_deviation_vs_numpy_float64": 3e-13,
        "train_correct": 206,
        "test_correct": 40,
    }
    fast32 = {**good64, "dtype": "float32", "median_s": 0.09}
    torch = [
        {"impl": "torch-cuda", "dtype": "float32", "solver": s, "median_s": t}
        for s, t in (("eager", 0.8), ("cuda-graph", 0.1))
    ]
    ok = _summary(tmp_path, [good64, fast32, *torch])
    assert ok.returncode == 0, ok.stdout
    assert ok.stdout.count("PASS") == 7 and "FAIL" not in ok.stdout
    assert "36.0" in ok.stdout  # 0.09 s / 2500 iterations, in microseconds
    # one wrong accuracy, one slow path, one skipped test: each is a FAIL
    bad = _summary(
        tmp_path,
        [{**good64, "test_correct": 39}, {**fast32, "median_s": 0.9}, *torch],
        log="206 passed, 1 skipped in 80.0s\npytest exit code 0\n",
    )
    assert bad.returncode == 1
    assert bad.stdout.count("FAIL") == 5, bad.stdout  # tests, recipe, us/it, eager, graph
