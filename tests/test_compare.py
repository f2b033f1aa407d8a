"""`gpucat compare` and gpucat.frontends.compare: every usable device and dtype from the same start,
each against the independent reference, with NaN never passing as a small deviation."""

from __future__ import annotations

import json
import math

from gpucat.backends import available_devices, get_device
from gpucat.frontends import compare as compare_mod

import reference_impl as ref
from conftest import RTOL, data_dir, rel_err, run_gpucat


def test_compare_json_and_plot_on_every_usable_backend(tmp_path, course_data):
    png, saved = tmp_path / "devices.png", tmp_path / "compare.json"
    out = run_gpucat(
        *("compare", "--iterations", "30", "--log-every", "10", "--json", "--plot", str(png)),
        *("--json-out", str(saved)),
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert json.loads(saved.read_text()) == doc  # the file after the last run is the result
    rows = doc["rows"]
    assert len(rows) == 2 * len(available_devices())
    assert [r["dtype"] for r in rows][:: len(available_devices())] == ["float64", "float32"]
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
    assert "largest relative cost deviation" in out.stdout
    assert png.stat().st_size > 10_000


def test_compare_from_python_on_the_strict_device(course_data, monkeypatch, tmp_path):
    """The function behind the command, with devices named: the strict stand-in device
    gives NumPy's costs from the same start, in the dtype, solver, iterations and data
    folder asked for."""
    folder = data_dir()
    monkeypatch.setenv("GPUCAT_DATA_DIR", str(tmp_path / "not-here"))
    devices = [get_device("cpu"), get_device("strict")]
    seen = []
    result = compare_mod.compare(
        iterations=12,
        dtypes=["float32"],
        solver="direct",
        log_every=4,
        data_dir=folder,
        devices=devices,
        on_row=seen.append,
    )
    assert [r["backend"] for r in result["rows"]] == ["numpy", "strict"]
    assert len(seen) == 2 and seen[-1] is result
    assert result["max_cost_deviation"] <= RTOL["float32"]
    assert result["reference"] == "NumPy, same dtype"
    numpy_row, strict_row = result["rows"]
    assert strict_row["train_correct"] == numpy_row["train_correct"]
    _, test = course_data
    for r in result["rows"]:
        assert r["dtype"] == "float32" and r["solver"] == "direct"
        assert [i for i, _ in r["costs"]] == [0, 4, 8, 11]
        assert 0 <= r["test_correct"] <= test.n_examples < r["train_correct"]


def test_compare_defaults_to_the_reference_recipe_and_nothing_asked_is_nothing_run():
    import inspect

    from gpucat.config import TrainConfig

    defaults = inspect.signature(compare_mod.compare).parameters
    recipe = TrainConfig()
    assert defaults["iterations"].default == recipe.iterations
    assert defaults["log_every"].default == recipe.log_every
    assert defaults["solver"].default == recipe.solver
    assert defaults["dtypes"].default == ("float64", "float32")
    empty = compare_mod.compare(dtypes=[], data_dir=data_dir())
    assert empty == {"rows": [], "max_cost_deviation": 0.0, "reference": "NumPy, same dtype"}


def test_the_table_shows_each_run_and_the_largest_deviation():
    rows = [
        {"device": "CPU (a processor whose name is longer than the column is wide)",
         "dtype": "float64", "solver": "gram", "ms_per_iteration": 0.1714, "seconds": 0.4286,
         "final_cost": 0.0884401, "train_accuracy": 0.98564, "test_accuracy": 0.8,
         "max_cost_deviation": 0.0},
        {"device": "GPU", "dtype": "float32", "solver": "direct", "ms_per_iteration": 12.5,
         "seconds": 31.25, "final_cost": 0.08844, "train_accuracy": 1.0, "test_accuracy": 0.78,
         "max_cost_deviation": 2.5e-6},
    ]  # fmt: skip
    lines = compare_mod.table({"rows": rows, "max_cost_deviation": 2.5e-6}).splitlines()
    assert lines[0].split() == [
        "device", "dtype", "solver", "ms/iter", "seconds", "final", "cost", "train", "test",
        "dev.", "vs", "ref",
    ]  # fmt: skip
    assert lines[1] == "-" * len(lines[0])
    assert lines[2] == (
        f"{rows[0]['device'][:44]} float64  gram        0.171    0.429    0.088440  0.9856"
        "   0.80    0.00e+00"
    )
    assert lines[3] == (
        f"{'GPU':44} float32  direct     12.500   31.250    0.088440  1.0000   0.78    2.50e-06"
    )
    assert lines[4] == "largest relative cost deviation from NumPy in the same dtype: 2.50e-06"
    assert len(lines[2]) == len(lines[0])


def row(device, dtype, costs):
    return {"backend": device, "dtype": dtype, "costs": list(enumerate(costs))}


def test_a_nan_cost_is_the_worst_deviation_wherever_it_comes():
    """max() keeps a NaN only when it comes first; the comparison must not."""
    for costs in ([0.7, 0.6, math.nan], [math.nan, 0.6, 0.5], [0.7, math.nan, 0.5]):
        result = compare_mod.with_deviations(
            [row("numpy", "float64", [0.7, 0.6, 0.5]), row("cupy", "float64", costs)]
        )
        assert math.isnan(result["rows"][1]["max_cost_deviation"])
        assert math.isnan(result["max_cost_deviation"])
    fine = compare_mod.with_deviations(
        [row("numpy", "float32", [0.7, 0.6]), row("cupy", "float32", [0.7, 0.6 * (1 + 1e-6)])]
    )
    assert math.isclose(fine["max_cost_deviation"], 1e-6, rel_tol=1e-6)


def test_float32_rows_are_measured_against_numpys_float32_run():
    """float32 and float64 part ways by rounding, devices should not: a float32 row's
    deviation is from NumPy's float32 run (1e-6 here), not from the float64 one (1e-3)."""
    f64, f32 = [0.7, 0.6, 0.5], [0.7 * (1 + 1e-3), 0.6, 0.5]
    result = compare_mod.with_deviations(
        [
            row("numpy", "float64", f64),
            row("cupy", "float64", f64),
            row("numpy", "float32", f32),
            row("cupy", "float32", [f32[0] * (1 + 1e-6), *f32[1:]]),
        ]
    )
    deviations = [r["max_cost_deviation"] for r in result["rows"]]
    assert deviations[:3] == [0.0, 0.0, 0.0]
    assert math.isclose(deviations[3], 1e-6, rel_tol=1e-6)


def test_compare_refuses_a_bad_setting_before_training():
    out = run_gpucat("compare", "--iterations", "0")
    assert out.returncode == 2 and out.stderr.startswith("gpucat: error:")
    assert "iterations" in out.stderr and "trained on" not in out.stderr
    assert "Traceback" not in out.stderr


def test_compare_reads_the_data_folder_it_is_given(tmp_path):
    out = run_gpucat("compare", "--iterations", "2", "--data-dir", str(tmp_path))
    assert out.returncode == 2 and str(tmp_path) in out.stderr and "Traceback" not in out.stderr
    assert data_dir() != tmp_path
