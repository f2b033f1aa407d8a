"""checks/gpu_summary.py judges a GPU check's outputs: a recorded passing run passes, and
each way a run can fall short fails (or, for the speed goals, is reported without failing)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import gpu_summary  # checks/ is on the tests' path (pyproject.toml)

ROOT = Path(__file__).resolve().parent.parent

ITERS = 2500


def costs(shift=lambda i: 0.0):
    """(iteration, cost) for every iteration: a smooth descent, moved by shift(i) relatively."""
    return [[i, (0.77 - 0.7 * i / ITERS) * (1 + shift(i))] for i in range(ITERS)]


def devices_row(device, dtype, shift=lambda i: 0.0, train=206, test=40):
    return {
        "backend": device,
        "dtype": dtype,
        "device": device,
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


def sweep_row(backend, dtype, examples, ms, gflops, peak=50_000.0):
    return {
        "backend": backend, "dtype": dtype, "examples": examples, "ms_per_iteration": ms,
        "gflops": gflops, "peak_gflops": peak,
    }  # fmt: skip


SWEEP = {
    "rows": [
        sweep_row("numpy", dtype, m, ms, 30.0, 100.0)
        for dtype in ("float64", "float32")
        for m, ms in ((209, 0.2), (20000, 300.0))
    ]
    + [
        sweep_row("cupy", dtype, m, ms, g)
        for dtype in ("float64", "float32")
        for m, ms, g in ((209, 0.5, 10.0), (20000, 4.0, 9000.0))
    ],
    "crossover": {"float64": 20000, "float32": 20000},
}


def write_run(out: Path, **change) -> Path:
    """A passing GPU check's files; keyword arguments replace one file's content."""
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "tests.log": "....\n===== slowest 15 durations =====\n12.1s call test_x\n"
        "352 passed in 81.40s (0:01:21)\npytest exit code 0\n",
        "compare.json": {
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
        "sweep.json": SWEEP,
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
    assert "PASS  compare float32" in text and text.rstrip().endswith("0 of 19 checks failed")
    assert "n/a   sweep: crossover (examples from which the GPU pays): {'float64': 20000" in text
    # speed goals are reported, not failed: gram 80 us, direct 240 us per iteration
    assert "MISS  goal float32 gram: <= 10 us per iteration: 80.0" in text


def test_the_sweep_needs_the_gpus_rows_in_both_dtypes_within_its_peak(tmp_path):
    out = write_run(tmp_path / "missing", **{"sweep.json": None})
    assert failed(out) == ["sweep.json"]
    over = json.loads(json.dumps(SWEEP))
    over["rows"][-1]["gflops"] = 60_000.0  # above the peak measured: a wrong count or clock
    out = write_run(tmp_path / "over", **{"sweep.json": over})
    assert failed(out) == ["sweep float32: cupy rows within its peak"]
    cpu_only = {**SWEEP, "rows": [r for r in SWEEP["rows"] if r["backend"] == "numpy"]}
    out = write_run(tmp_path / "cpu", **{"sweep.json": cpu_only})
    assert failed(out) == [
        "sweep float64: cupy rows within its peak",
        "sweep float32: cupy rows within its peak",
    ]


def test_float64_that_drifts_late_fails(tmp_path):
    rows = json.loads((write_run(tmp_path / "ok") / "compare.json").read_text())["rows"]
    rows[1] = devices_row("cupy", "float64", lambda i: 2e-9 if i > 2000 else 0.0)
    out = write_run(tmp_path / "run", **{"compare.json": {"rows": rows}})
    assert failed(out) == ["compare float64: every cost within 1e-10 of NumPy"]


def test_float32_judged_on_its_first_60_iterations_and_accuracies(tmp_path):
    rows = json.loads((write_run(tmp_path / "ok") / "compare.json").read_text())["rows"]
    rows[3] = devices_row("cupy", "float32", lambda i: 3e-5 if i == 59 else 0.0)
    out = write_run(tmp_path / "early", **{"compare.json": {"rows": rows}})
    assert failed(out) == ["compare float32: costs of iterations < 60 within 1e-05 of NumPy"]
    rows[3] = devices_row("cupy", "float32", lambda i: 3e-5 if i == 60 else 0.0, test=39)
    out = write_run(tmp_path / "accuracy", **{"compare.json": {"rows": rows}})
    assert failed(out) == ["compare float32: the same train/test accuracies"]


@pytest.mark.parametrize(
    "log, fails",
    [
        ("350 passed, 2 skipped in 80.0s\npytest exit code 0\n", "tests: no GPU test skipped"),
        ("349 passed, 1 failed in 80.0s\npytest exit code 1\n", "none failed"),
        ("....\n", "none failed"),  # killed by the time limit: no final line
    ],
)
def test_tests_that_skip_fail_or_never_finish_fail(tmp_path, log, fails):
    """Skips with no reason shown count as GPU skips; a log without pytest's last line fails."""
    out = write_run(tmp_path, **{"tests.log": log})
    assert failed(out) == [
        fails if fails.startswith("tests:") else f"tests with GPUCAT_REQUIRE_GPU=1: {fails}"
    ]


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


def test_no_float64_row_is_a_failure_not_an_absent_check(tmp_path):
    doc = json.loads((write_run(tmp_path / "ok") / "recipe.json").read_text())
    doc["rows"] = [
        r for r in doc["rows"] if not (r["impl"] == "gpucat-cupy" and r["dtype"] == "float64")
    ]
    out = write_run(tmp_path / "run", **{"recipe.json": doc})
    assert failed(out) == ["gpucat-cupy float64: the published run"]


@pytest.mark.parametrize("where", [0, 1, -1])
def test_a_nan_cost_fails_wherever_it_comes(tmp_path, where):
    """max() keeps a NaN only when it comes first: NaN at the first, second or last cost
    must fail the device comparison, and NaN deviations the recipe and MPI checks."""
    rows = json.loads((write_run(tmp_path / "ok") / "compare.json").read_text())["rows"]
    rows[1]["costs"][where][1] = float("nan")
    out = write_run(tmp_path / f"compare{where}", **{"compare.json": {"rows": rows}})
    assert failed(out) == ["compare float64: every cost within 1e-10 of NumPy"]
    doc = json.loads((tmp_path / "ok" / "recipe.json").read_text())
    doc["rows"][2]["max_rel_cost_deviation_vs_numpy_float64"] = float("nan")
    mpi = {**json.loads((tmp_path / "ok" / "mpi.json").read_text()), "cost_rel_err": float("nan")}
    out = write_run(tmp_path / f"recipe{where}", **{"recipe.json": doc, "mpi.json": mpi})
    assert failed(out) == [
        "mpiexec -n 2 equals one process within 1e-10",
        "gpucat-cupy float64 direct: the published run, costs within 1e-10",
    ]


def test_only_gpu_skips_fail_the_tests_line(tmp_path):
    log = (
        "352 passed, 3 skipped in 81.40s (0:01:21)\n"
        "SKIPPED [2] tests/test_x.py:40: OpenBLAS without cblas_dgemm here\n"
        "SKIPPED [1] tests/test_y.py:10: cupy device unavailable: no usable GPU\n"
        "pytest exit code 0\n"
    )
    out = write_run(tmp_path / "gpu", **{"tests.log": log})
    assert failed(out) == ["tests: no GPU test skipped"]
    other = log.replace(
        "SKIPPED [1] tests/test_y.py:10: cupy device unavailable: no usable GPU\n", ""
    )
    out = write_run(tmp_path / "other", **{"tests.log": other.replace("3 skipped", "2 skipped")})
    assert failed(out) == [] and verdicts(out)["tests: skipped for other reasons"] is None


def gpu_check(tmp_path, **env) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GPUCAT_")}
    return subprocess.run(
        ["bash", str(ROOT / "checks" / "gpu_check.sh"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        env={**clean, "GPUCAT_GPU_VENV": str(tmp_path / "venv"), **env},
        timeout=120,
    )


def test_the_gpu_checks_limits_fit_its_budget_and_the_devices_minutes(tmp_path):
    """A dry run sums the steps' limits: with the summary's, within 8 minutes (the device
    allows 10 a command and 15 in all); every step's line is there and the summary too."""
    out = gpu_check(tmp_path, GPUCAT_CHECK_DRY_RUN="1")
    assert out.returncode == 0, out.stdout + out.stderr
    limits = [int(n) for n in re.findall(r"^== .* \(limit (\d+) s, at", out.stdout, re.M)]
    assert len(limits) == 6 and sum(limits) + 15 <= 480
    assert re.search(
        r"planned: (\d+) s of steps \+ 15 s summary within a budget of 480 s", out.stdout
    )
    assert (tmp_path / "out" / "summary.txt").read_text().startswith("FAIL")


def test_the_deadline_stops_the_steps_and_the_summary_is_still_written(tmp_path):
    """A budget that leaves one second: the first step is cut at the deadline, the others are
    not started, and the exit trap writes the summary (FAIL) within the budget."""
    started = time.monotonic()
    out = gpu_check(tmp_path, GPUCAT_CHECK_BUDGET="16")
    assert time.monotonic() - started < 16
    assert out.returncode == 1
    steps = (tmp_path / "out" / "steps.log").read_text()
    assert "(exit code 124: out of time)" in steps or "(exit code" in steps
    assert steps.count("(not run: no time left before the deadline)") >= 4
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "FAIL  compare.json: missing" in summary and summary.rstrip().endswith("checks failed")


def test_the_gpu_checks_environment_sees_the_packages_of_a_venv_python3(tmp_path):
    """python3 on the PATH is itself a virtual environment holding NumPy (as machine images
    that ship PyTorch in a venv are built): the check's environment, made from it, imports
    that NumPy, not the base interpreter's, and env.json names it."""
    machine = tmp_path / "machine"
    subprocess.run([sys._base_executable, "-m", "venv", "--without-pip", machine], check=True)
    site = subprocess.run(
        [
            machine / "bin" / "python",
            "-c",
            "import sysconfig; print(sysconfig.get_path('purelib'))",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    here = Path(np.__file__).parent  # this NumPy, made the machine venv's own by a link
    for name in (here.name, f"{here.name}.libs"):
        if (here.parent / name).exists():
            (Path(site) / name).symlink_to(here.parent / name)
    path = f"{machine / 'bin'}:{os.environ['PATH']}"
    gpu_check(tmp_path, PATH=path, GPUCAT_CHECK_STEPS="environment")
    env = json.loads((tmp_path / "out" / "env.json").read_text())
    assert env["locations"]["numpy"] == str(Path(site) / here.name)
    assert env["numpy"] == np.__version__
    assert env["locations"]["gpucat"] == str(ROOT / "gpucat")
    steps = (tmp_path / "out" / "steps.log").read_text()
    assert "== tests (GPUCAT_REQUIRE_GPU=1) (not selected)" in steps
