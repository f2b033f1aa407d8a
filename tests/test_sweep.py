"""`gpucat compare --sweep` and gpucat.sweep_devices: the step's time over data sizes, its
work counted from the layer sizes, each device's peak, the crossover, sizes that do not fit."""

from __future__ import annotations

import json

import pytest

from gpucat.backends import get_device
from gpucat.cli import main
from gpucat.frontends import sweep as sweep_mod
from gpucat.frontends.sweep import crossover, work

from conftest import standin_gpu


def products(shapes) -> int:
    """Floating-point operations of matrix products (rows, inner, columns): 2·r·k·c each."""
    return sum(2 * r * k * c for r, k, c in shapes)


def test_work_is_the_products_counted_by_hand():
    """Direct: per layer Z = W·A and dW = dZ·A_prevᵀ, and past the first dA_prev = Wᵀ·dZ.
    Gram: Z1 = C·G (C: n1 × M, G: M × batch) and no first-layer dW."""
    m = 209
    forward = [(20, 12288, m), (7, 20, m), (5, 7, m), (1, 5, m)]
    weights = [(20, m, 12288), (7, m, 20), (5, m, 7), (1, m, 5)]  # dZ · A_prevᵀ
    inputs = [(20, 7, m), (7, 5, m), (5, 1, m)]  # W2ᵀ·dZ2 (20 × 7 · 7 × m), W3ᵀ·dZ3, W4ᵀ·dZ4
    assert work((12288, 20, 7, 5, 1), m) == products(forward + weights + inputs)
    M = 10
    gram = [(4, M, M), (2, 4, M), (1, 2, M), (2, M, 4), (1, M, 2), (4, 2, M), (2, 1, M)]
    assert work((6, 4, 2, 1), M, "gram", M) == products(gram)
    assert work((4, 3, 1), 5) == products([(3, 4, 5), (1, 3, 5), (3, 5, 4), (1, 5, 3), (3, 1, 5)])


def rows_of(times: dict, dtype="float32", width=20):
    """Sweep rows from {device: {examples: ms}}, the host first."""
    return [
        {"device": d, "dtype": dtype, "width": width, "examples": m, "ms_per_iteration": ms}
        for d, per in times.items()
        for m, ms in per.items()
    ]


def test_the_crossover_is_where_the_gpu_pays_from_on():
    cpu = {209: 1.0, 2000: 10.0, 20000: 100.0, 200000: 1000.0}
    assert crossover(rows_of({"cpu": cpu, "gpu": {209: 3, 2000: 9, 20000: 20, 200000: 90}})) == {
        "float32": 2000
    }
    # faster at 209 by chance, slower at 2000: it pays from 20000 on
    dip = {209: 0.5, 2000: 11, 20000: 20, 200000: 90}
    assert crossover(rows_of({"cpu": cpu, "gpu": dip})) == {"float32": 20000}
    slow = {m: 2 * ms for m, ms in cpu.items()}
    assert crossover(rows_of({"cpu": cpu, "gpu": slow})) == {"float32": None}
    assert crossover(rows_of({"cpu": cpu})) == {"float32": None}
    both = rows_of({"cpu": cpu, "gpu": dip}) + rows_of({"cpu": cpu, "gpu": slow}, dtype="float64")
    assert crossover(both) == {"float32": 20000, "float64": None}
    # only the first width counts
    wide = rows_of({"cpu": cpu, "gpu": slow}) + rows_of({"cpu": cpu, "gpu": dip}, width=100)
    assert crossover(wide) == {"float32": None}


def test_sweep_json_on_the_cpu(capsys, tmp_path):
    """Rows for each size in both dtypes, each with its time, GFLOP/s within the device's
    measured peak, and its work as counted from the layers; a crossover key; the JSON file
    rewritten after each row equals the result."""
    saved = tmp_path / "sweep.json"
    argv = ["compare", "--sweep", "--examples", "209,13000", "--iterations", "2", "--json"]
    assert main([*argv, "--json-out", str(saved)]) == 0
    out, err = capsys.readouterr()
    doc = json.loads(out.strip().splitlines()[-1])
    assert json.loads(saved.read_text()) == doc
    rows = doc["rows"]
    assert [(r["dtype"], r["examples"]) for r in rows] == [
        ("float64", 209), ("float64", 13000), ("float32", 209), ("float32", 13000)
    ]  # fmt: skip
    assert set(doc) >= {"rows", "crossover", "machine"} and doc["crossover"] == {
        "float64": None,
        "float32": None,
    }
    for r in rows:
        assert set(r) >= set(sweep_mod.COLUMNS)
        assert 0 < r["gflops"] <= r["peak_gflops"] and r["peak_gbps"] > 0
        assert r["fraction_of_peak"] == pytest.approx(r["gflops"] / r["peak_gflops"])
        implied = r["gflops"] * 1e9 * r["ms_per_iteration"] / 1000
        assert implied == pytest.approx(
            work(r["layers"], r["examples"], r["solver"], r["examples"])
        )
    # the solver the run would choose: Gram below 12288 examples, direct above
    assert [r["solver"] for r in rows] == ["gram", "direct", "gram", "direct"]
    direct = rows[1]
    forward = [(20, 12288, 13000), (7, 20, 13000), (5, 7, 13000), (1, 5, 13000)]
    hand = 2 * products(forward) + products([(20, 7, 13000), (7, 5, 13000), (5, 1, 13000)])
    assert direct["gflops"] * direct["ms_per_iteration"] * 1e6 == pytest.approx(hand)
    assert "crossover: one device measured" in out and "timed CPU" in err


def test_a_size_that_does_not_fit_is_skipped_with_a_note(monkeypatch):
    """On a GPU with 96 MiB: 209 examples fit, 20,000 do not (the memory check says so
    before anything is allocated); and were the figure short, the device's own
    OutOfMemoryError is a note too, never a crash."""
    gpu = standin_gpu(monkeypatch, memory=(96 * 2**20, 96 * 2**20))
    notes = []
    result = sweep_mod.sweep(
        examples=[209, 20000], dtypes=["float32"], iterations=1, devices=[gpu], on_note=notes.append
    )
    assert [r["examples"] for r in result["rows"]] == [209]
    assert len(notes) == 1 and "20000 examples: skipped, it does not fit" in notes[0]
    assert "needs" in notes[0] and result["notes"] == notes

    from gpucat.training import loop as train_mod

    monkeypatch.setattr(train_mod, "check_memory", lambda *a, **k: None)  # a figure too short
    result = sweep_mod.sweep(examples=[20000], dtypes=["float32"], iterations=1, devices=[gpu])
    assert result["rows"] == [] and "Out of memory" in result["notes"][0]


def test_the_sweep_on_a_gpu_beside_the_cpu(monkeypatch, tmp_path):
    """The GPU's path (the CuPy stand-in where no GPU is usable): rows for both devices, the
    host's first; the plot drawn."""
    from gpucat.frontends.plots import plot_sweep

    gpu = standin_gpu(monkeypatch)
    result = sweep_mod.sweep(
        examples=[209, 400], dtypes=["float32"], iterations=1, devices=[get_device("cpu"), gpu]
    )
    assert [r["backend"] for r in result["rows"]] == ["numpy", "numpy", "cupy", "cupy"]
    assert set(result["crossover"]) == {"float32"}
    png = tmp_path / "sweep.png"
    plot_sweep(png, result)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--sweep", "--examples", "0"], "argument --examples: expected comma-separated whole"),
        (["--sweep", "--examples", "209,x"], "argument --examples: expected comma-separated"),
        (["--sweep", "--widths", "-3"], "argument --widths: expected comma-separated whole"),
        (["--sweep", "--iterations", "0"], "--iterations must be at least 1"),
        (["--examples", "209"], "--examples is for --sweep only"),
        (["--widths", "20"], "--widths is for --sweep only"),
        (["--sweep", "--log-every", "5"], "--log-every is for the recipe comparison only"),
        (["--sweep", "--solver", "gram"], "--solver is for the recipe comparison only"),
        (["--sweep", "--plot", "/nonexistent/x.png"], "/nonexistent"),
    ],
)
def test_bad_sweep_flags_are_one_error_line(capsys, argv, needle):
    try:
        code = main(["compare", *argv])
    except SystemExit as e:  # argparse's own refusals exit from the parser
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("gpucat: error:") and needle in err
