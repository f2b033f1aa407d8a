"""scripts/gpu_summary.py judges a GPU check's outputs: a recorded passing run passes, and
each way a run can fall short fails (or, for the speed goals, is reported without failing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
import gpu_summary  # noqa: E402

ITERS = 2500


def costs(shift=lambda i: 0.0):
    """(iteration, cost) for every iteration: a smooth descent, moved by shift(i) relatively."""
    return [[i, (0.77 - 0.7 * i / ITERS) * (1 + shift(i))] for i in range(ITERS)]


def devices_row(backend, dtype, shift=lambda i: 0.0, train=206, test=40):
    return {
        "backend": backend,
        "dtype": dtype,
        "device": backend,
        "costs": costs(shift),
        "train_correct": train,
        "test_correct": test,
    }


def recipe_row(impl, dtype, solver, seconds, cost_0=0.7717493, dev=1e-13):
    return {
        "impl": impl,
        "dtype": dtype,
        "solver": solver,
        "median_s": seconds,
        "cost_0": cost_0,
        "max_rel_cost_deviation_vs_numpy_float64": dev,
        "train_correct": 206,
        "test_correct": 40,
    }


def write_run(out: Path, **change) -> Path:
    """A passing GPU check's files; keyword arguments replace one file's content."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "tests.log": "....\n===== slowest 15 durations =====\n12.1s call test_x\n"
        "352 passed in 81.40s (0:01:21)\npytest exit code 0\n",
        "compare_devices.json": {
            "rows": [
                devices_row("numpy", "float64"),
                devices_row("cupy", "float64", lambda i: 3e-14 * (1 + i / 100)),
                devices_row("numpy", "float32"),
                # float32 within rounding early, far apart late (a ReLU kink crossed): fine
                devices_row("cupy", "float32", lambda i: 2e-7 if i < 500 else 0.08),
            ]
        },
        "mpi.json": {
            "device": "GPU 0 (NVIDIA H100 80GB HBM3)",
            "processes": 2,
            "reduce": "staged through pinned host memory",
            "cost_rel_err": 4e-15,
            "param_rel_err": 6e-15,
        },
        "recipe.json": {
            "iterations": ITERS,
            "rows": [
                recipe_row("gpucat-cupy", "float32", "direct", 0.60),
                recipe_row("gpucat-cupy", "float32", "gram", 0.20),
                recipe_row("gpucat-cupy", "float64", "direct", 0.70),
                recipe_row("gpucat-cupy", "float64", "gram", 0.25),
                recipe_row("torch-cuda", "float32", "eager", 0.75),
                recipe_row("torch-cuda", "float32", "cuda-graph", 0.15),
                recipe_row("torch-cuda", "float64", "eager", 0.80),
            ],
        },
    }
    files.update(change)
    for name, content in files.items():
        if content is None:
            continue
        text = content if isinstance(content, str) else json.dumps(content)
        (out / name).write_text(text)
    return out


def verdicts(out: Path) -> dict[str, object]:
    return {name: v for name, _, v in gpu_summary.summarize(out, "gpucat-cupy", "torch-cuda")}


def failed(out: Path) -> list[str]:
    return [name for name, v in verdicts(out).items() if v is False]


def test_a_recorded_passing_run_passes(tmp_path, capsys):
    out = write_run(tmp_path)
    assert failed(out) == []
    assert gpu_summary.main([str(out)]) == 0
    text = capsys.readouterr().out
    assert "PASS  compare_devices float32" in text and text.rstrip().endswith(
        "0 of 15 checks failed"
    )
    # speed goals are reported, not failed: gram 80 us, direct 240 us per iteration
    assert "MISS  goal float32 gram: <= 10 us per iteration: 80.0" in text


def test_float64_that_drifts_late_fails(tmp_path):
    rows = json.loads((write_run(tmp_path / "ok") / "compare_devices.json").read_text())["rows"]
    rows[1] = devices_row("cupy", "float64", lambda i: 2e-9 if i > 2000 else 0.0)
    out = write_run(tmp_path / "run", **{"compare_devices.json": {"rows": rows}})
    assert failed(out) == ["compare_devices float64: every cost within 1e-10 of NumPy"]


def test_float32_judged_on_its_first_60_iterations_and_accuracies(tmp_path):
    rows = json.loads((write_run(tmp_path / "ok") / "compare_devices.json").read_text())["rows"]
    rows[3] = devices_row("cupy", "float32", lambda i: 3e-5 if i == 59 else 0.0)
    out = write_run(tmp_path / "early", **{"compare_devices.json": {"rows": rows}})
    assert failed(out) == [
        "compare_devices float32: costs of iterations < 60 within 1e-05 of NumPy"
    ]
    rows[3] = devices_row("cupy", "float32", lambda i: 3e-5 if i == 60 else 0.0, test=39)
    out = write_run(tmp_path / "accuracy", **{"compare_devices.json": {"rows": rows}})
    assert failed(out) == ["compare_devices float32: the same train/test accuracies"]


@pytest.mark.parametrize(
    "log",
    [
        "350 passed, 2 skipped in 80.0s\npytest exit code 0\n",
        "349 passed, 1 failed in 80.0s\npytest exit code 1\n",
        "....\n",  # killed by the time limit: no final line
    ],
)
def test_tests_that_skip_fail_or_never_finish_fail(tmp_path, log):
    out = write_run(tmp_path, **{"tests.log": log})
    assert failed(out) == ["tests with GPUCAT_REQUIRE_GPU=1: none failed or skipped"]


def test_a_slower_solver_than_pytorch_eager_fails_and_missing_steps_fail(tmp_path):
    doc = json.loads((write_run(tmp_path / "ok") / "recipe.json").read_text())
    doc["rows"] = [
        dict(r, median_s=r["median_s"] * 4) if r["impl"] == "gpucat-cupy" else r
        for r in doc["rows"]
    ]
    out = write_run(tmp_path / "slow", **{"recipe.json": doc})
    assert failed(out) == [
        "float32: best gpucat solver <= PyTorch eager",
        "float64: best gpucat solver <= PyTorch eager",
    ]
    doc["rows"] = [r for r in doc["rows"] if r["impl"] != "gpucat-cupy"]
    out = write_run(tmp_path / "none", **{"recipe.json": doc, "mpi.json": None})
    assert set(failed(out)) == {
        "gpucat-cupy rows in recipe.json",
        "mpi.json (mpiexec -n 2 on the GPU)",
    }


def test_the_published_run_and_mpi_agreement_are_checked(tmp_path):
    doc = json.loads((write_run(tmp_path / "ok") / "recipe.json").read_text())
    doc["rows"][3] = recipe_row("gpucat-cupy", "float64", "direct", 0.7, cost_0=0.771760)
    mpi = {**json.loads((tmp_path / "ok" / "mpi.json").read_text()), "param_rel_err": 3e-9}
    out = write_run(tmp_path / "run", **{"recipe.json": doc, "mpi.json": mpi})
    assert failed(out) == [
        "mpiexec -n 2 equals one process within 1e-10",
        "gpucat-cupy float64 direct: the published run, costs within 1e-10",
    ]


def test_replayed_graph_rows_are_judged_like_the_others(tmp_path):
    """The experimental "+graph" rows (one CUDA graph launch an iteration) must reproduce
    the published run too and get their speed goal; when they could not run, the reason is
    shown without failing the check."""
    doc = json.loads((write_run(tmp_path / "ok") / "recipe.json").read_text())
    doc["rows"] += [
        recipe_row("gpucat-cupy", "float64", "direct+graph", 0.09, dev=1e-13),
        recipe_row("gpucat-cupy", "float64", "gram+graph", 0.02, dev=2e-9),
    ]
    out = write_run(tmp_path / "graph", **{"recipe.json": doc})
    v = verdicts(out)
    assert failed(out) == ["gpucat-cupy float64 gram+graph: the published run, costs within 1e-10"]
    assert v["goal float64 direct+graph: <= 40 us per iteration"] == "goal"
    assert v["goal float64 gram+graph: <= 10 us per iteration"] == "goal"
    doc["rows"] = doc["rows"][:-2]
    doc["graph_error"] = "OSError: cuBLAS not found"
    out = write_run(tmp_path / "error", **{"recipe.json": doc})
    assert failed(out) == [] and v.get("CUDA graph rows (GPUCAT_CUDA_GRAPH=1)") is None
    assert verdicts(out)["CUDA graph rows (GPUCAT_CUDA_GRAPH=1)"] is None
