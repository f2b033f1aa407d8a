"""Model files: safetensors with metadata, the original program's JSON, atomic saves."""

from __future__ import annotations

import json
import os
import random

import numpy as np
import pytest

from gpucat import backends
from gpucat.config import TrainConfig
from gpucat.data.inputs import load_csv
from gpucat.errors import GpucatError
from gpucat.modelfiles import model as models
from gpucat.nn.inference import model_probabilities
from gpucat.nn.network import init_params, params_to_host
from gpucat.training.loop import fit

import reference_impl as ref
from conftest import RTOL, data_file, rel_err


def small_model(sizes=(12288, 4, 3, 1), seed=4):
    rng = np.random.default_rng(seed)
    return models.Model(
        [(W, rng.standard_normal(b.shape)) for W, b in init_params(list(sizes), seed)]
    )


def test_safetensors_roundtrip_keeps_values_and_metadata(tmp_path):
    m = small_model()
    m.metadata = {"recipe": {"learning_rate": 0.1}, "result": {"test_accuracy": 0.5}}
    models.save_model(tmp_path / "m.safetensors", m)
    back = models.load_model(tmp_path / "m.safetensors")
    for (W, b), (W2, b2) in zip(m.params, back.params):
        np.testing.assert_array_equal(W, W2)
        np.testing.assert_array_equal(b, b2)
    meta = back.metadata
    assert meta["layer_sizes"] == [12288, 4, 3, 1]
    assert meta["activations"] == ["relu", "relu", "sigmoid"]
    assert meta["dtype"] == "float64" and "255" in meta["preprocessing"]
    assert meta["recipe"]["learning_rate"] == 0.1 and meta["result"]["test_accuracy"] == 0.5
    assert "gpucat_version" in meta


def test_seed_json_import_in_any_key_order(tmp_path):
    """The original format: keys in no particular order, float32 values, row-major."""
    m = small_model()
    doc = {}
    for l, (W, b) in enumerate(m.params, start=1):
        for k, a in ((f"W{l}", W), (f"b{l}", b)):
            doc[k] = {
                "v": 1,
                "dim": list(a.shape),
                "data": [float(x) for x in a.astype(np.float32).ravel()],
            }
    keys = list(doc)
    random.Random(0).shuffle(keys)
    (tmp_path / "model.json").write_text(json.dumps({k: doc[k] for k in keys}))
    back = models.load_model(tmp_path / "model.json")
    assert back.layer_sizes == [12288, 4, 3, 1]
    for (W, b), (W2, b2) in zip(m.params, back.params):
        np.testing.assert_array_equal(W.astype(np.float32), W2)
        np.testing.assert_array_equal(b.astype(np.float32), b2)


def test_seed_json_export_reads_back_exactly(tmp_path):
    m = small_model()
    models.save_model(tmp_path / "out.json", m)
    doc = json.loads((tmp_path / "out.json").read_text())
    assert sorted(doc) == ["W1", "W2", "W3", "b1", "b2", "b3"]
    assert (
        doc["W1"]["v"] == 1
        and doc["W1"]["dim"] == [4, 12288]
        and len(doc["W1"]["data"]) == 4 * 12288
    )
    back = models.load_model(tmp_path / "out.json")
    for (W, _), (W2, _) in zip(m.params, back.params):
        np.testing.assert_array_equal(W.astype(np.float32), W2)


def test_seed_json_model_on_seed_csv_matches_independent_computation(tmp_path, trained_model):
    """A model in the original JSON format, evaluated on the original CSV test set through the
    CLI, gives per-image probabilities equal to a plain NumPy forward pass of the same file."""
    from conftest import run_gpucat

    models.save_model(tmp_path / "seed.json", models.load_model(trained_model))
    csv_path = data_file("seed-csv/test_set.csv")
    out = run_gpucat(
        "evaluate", "--model", str(tmp_path / "seed.json"), "--data", str(csv_path), "--json"
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])

    # independent: parse the JSON by hand, read the CSV with the csv module, course forward
    raw = json.loads((tmp_path / "seed.json").read_text())
    # the format stores float32 arrays: read each number as float32, then compute in float64
    p = {
        k: np.array(v["data"], dtype=np.float32).astype(np.float64).reshape(v["dim"])
        for k, v in raw.items()
    }
    import csv

    with open(csv_path) as f:
        rows = list(csv.reader(f))[1:]
    X = np.array([[float(c) for c in r[:-1]] for r in rows]).T / 255.0
    y = [int(float(r[-1])) for r in rows]
    AL, _ = ref.forward(X, p)
    expected = AL.ravel()
    assert doc["n"] == 50 and doc["labels"] == y
    assert rel_err(doc["probabilities"], expected) <= 1e-12
    assert doc["accuracy"] == pytest.approx(np.mean((expected > 0.5) == np.array(y)))
    assert doc["accuracy"] == pytest.approx(0.8)  # the reference model: 40/50
    assert doc["true_positives"] + doc["false_negatives"] == 33


def test_model_moves_between_devices(tmp_path, device, course_data):
    """Trained on one device, saved, loaded and used on another: the probabilities of an
    independent forward pass of the saved file."""
    train, test = course_data
    result = fit(device, TrainConfig(iterations=40, dtype="float64"), train)
    models.save_model(
        tmp_path / "dev.safetensors", models.Model(params_to_host(device, result.params))
    )
    model = models.load_model(tmp_path / "dev.safetensors")
    expected = ref.forward(
        test.X,
        {f"{k}{l}": a for l, (W, b) in enumerate(model.params, 1) for k, a in (("W", W), ("b", b))},
    )[0].ravel()
    for where in (backends.get_device("cpu"), device):
        assert (
            rel_err(model_probabilities(where, model, test, "float64"), expected) <= RTOL["float64"]
        )


def test_loading_checks_every_shape(tmp_path):
    m = small_model()
    W2, b2 = m.params[1]
    bad = models.Model([m.params[0], (W2[:, :3], b2), m.params[2]])  # W2 no longer chains
    with pytest.raises(GpucatError, match="W2 has shape"):
        models.save_model(tmp_path / "bad.safetensors", bad)
    from safetensors.numpy import save_file

    save_file(
        {
            "W1": m.params[0][0],
            "b1": m.params[0][1][:2],
            "W2": W2,
            "b2": b2,
            "W3": m.params[2][0],
            "b3": m.params[2][1],
        },
        str(tmp_path / "bad2.safetensors"),
    )
    with pytest.raises(GpucatError, match=r"b1 has shape \(2, 1\), expected \(4, 1\)"):
        models.load_model(tmp_path / "bad2.safetensors")


def test_failed_save_leaves_existing_file_intact(tmp_path, monkeypatch):
    target = tmp_path / "keep.safetensors"
    models.save_model(target, small_model(seed=1))
    before = target.read_bytes()

    def broken_replace(src, dst):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="simulated"):
        models.save_model(target, small_model(seed=2))
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.safetensors"]  # no temp file left


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"hello": 1}', "is not a serialized matrix"),
        ("[1, 2, 3]", "not a model"),
        ('{"W1": {"v": 1, "dim": [2, 2], "data": [1, 2, 3]}}', "needs 4 values, data has 3"),
        ("{ not json", "not valid JSON"),
        ('{"W1": {"v": 1, "dim": [1, 2], "data": [1, 2]}}', "expected keys W1, b1"),
    ],
)
def test_json_that_is_not_a_model(tmp_path, content, message, capsys):
    from gpucat.cli import main

    path = tmp_path / "notamodel.json"
    path.write_text(content)
    csv_path = data_file("seed-csv/test_set.csv")
    assert main(["evaluate", "--model", str(path), "--data", str(csv_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpucat: error:") and str(path) in err and message in err


def test_model_input_size_must_match_data(tmp_path, capsys):
    from gpucat.cli import main

    models.save_model(tmp_path / "small.safetensors", small_model(sizes=(100, 3, 1)))
    assert (
        main(
            [
                "predict",
                "--model",
                str(tmp_path / "small.safetensors"),
                str(data_file("photos/chelsea.png")),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "small.safetensors" in err and "W1 has shape (3, 100)" in err and "12288" in err


def test_csv_loader_matches_h5(course_data):
    _, test = course_data
    ds = load_csv(data_file("seed-csv/test_set.csv"))
    np.testing.assert_array_equal(ds.X, test.X)
    np.testing.assert_array_equal(ds.Y, test.Y)


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_every_file_gpucat_writes_has_the_mode_the_umask_gives(tmp_path, course_data, mask):
    """Models (both formats), checkpoints, plots, ONNX files and prepared h5 files get
    0o666 & ~umask, as open() would give them, not the owner-only mode of the temporary
    files that make the writes atomic."""
    from gpucat.data.prepare import prepare
    from gpucat.frontends.plots import plot_costs
    from gpucat.modelfiles.export import export_onnx

    train, _ = course_data
    old = os.umask(mask)
    try:
        model = small_model()
        models.save_model(tmp_path / "m.safetensors", model)
        models.save_model(tmp_path / "m.json", model)
        cfg = TrainConfig(layers=(12288, 3, 1), iterations=2)
        fit(backends.get_device("cpu"), cfg, train, checkpoint=str(tmp_path / "ck.safetensors"))
        plot_costs(tmp_path / "cost.png", {"numpy": [(0, 0.7), (1, 0.6)]}, "costs")
        export_onnx(model, tmp_path / "m.onnx")
        prepare(data_file("catvnoncat/test_catvnoncat.h5"), tmp_path / "fast.h5", progress=False)
    finally:
        os.umask(old)
    written = sorted(p.name for p in tmp_path.iterdir())
    assert written == ["ck.safetensors", "cost.png", "fast.h5", "m.json", "m.onnx", "m.safetensors"]
    for p in tmp_path.iterdir():
        assert oct(p.stat().st_mode & 0o777) == oct(0o666 & ~mask), p.name


def test_a_checkpoint_given_as_a_model_says_what_it_is_and_how_to_get_one(tmp_path, course_data):
    train, _ = course_data
    ck = tmp_path / "ck.safetensors"
    cfg = TrainConfig(layers=(12288, 3, 1), iterations=2)
    fit(backends.get_device("cpu"), cfg, train, checkpoint=str(ck))
    with pytest.raises(GpucatError, match="is a training checkpoint") as e:
        models.load_model(ck)
    assert f"gpucat train --resume {ck} --out model.safetensors" in str(e.value)


def test_a_model_with_one_tensor_too_many_is_refused(tmp_path):
    from safetensors.numpy import save_file

    tensors = {
        f"{k}{l}": np.asarray(a)
        for l, pair in enumerate(small_model().params, 1)
        for k, a in zip("Wb", pair)
    }
    save_file(tensors, str(tmp_path / "ok.safetensors"))
    assert models.load_model(tmp_path / "ok.safetensors").layer_sizes == [12288, 4, 3, 1]
    save_file({**tensors, "extra": np.zeros((2, 2))}, str(tmp_path / "extra.safetensors"))
    with pytest.raises(GpucatError, match="expected keys W1, b1, ..., WL, bL; found"):
        models.load_model(tmp_path / "extra.safetensors")
