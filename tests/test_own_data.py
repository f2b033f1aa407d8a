"""Your own data: `train --train/--test` on every input format, images read as the picture
they show, strict model and checkpoint files, ONNX export, the original program's model."""

from __future__ import annotations

import json
import re

import h5py
import numpy as np
import pytest
from PIL import Image

from gpucat.backends import get_device
from gpucat.cli import main
from gpucat.config import TrainConfig
from gpucat.data.inputs import load_image, load_input
from gpucat.errors import GpucatError
from gpucat.modelfiles import model as models
from gpucat.nn.inference import model_probabilities

from conftest import data_file, rel_err, run_gpucat


def fails_with(capsys, argv, *needles) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpucat: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def subset(course_data, n=40):
    """The first n training images and labels: small, real, both classes."""
    train, _ = course_data
    return train.images[:n], train.Y[0, :n].astype(int)


def write_formats(tmp_path, images, labels):
    """The same images as a course h5, the original CSV, and a cat/ non-cat/ PNG folder."""
    with h5py.File(tmp_path / "mine.h5", "w") as f:
        f["train_set_x"], f["train_set_y"] = images, labels
    header = ",".join([*map(str, range(12288)), "y"])
    rows = [",".join(map(str, [*img.reshape(-1).tolist(), y])) for img, y in zip(images, labels)]
    (tmp_path / "mine.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    for k, (img, y) in enumerate(zip(images, labels)):
        sub = tmp_path / "folder" / ("Cat" if y else "NON-CAT")  # any letter case
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(sub / f"{k:03d}.png")
    return tmp_path / "mine.h5", tmp_path / "mine.csv", tmp_path / "folder"


def train_json(*args) -> dict:
    out = run_gpucat("train", "--device", "cpu", "--json", *args)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_same_images_train_the_same_in_every_format(tmp_path, course_data):
    h5, csv, folder = write_formats(tmp_path, *subset(course_data))
    common = [
        "--dtype",
        "float64",
        "--iterations",
        "30",
        "--log-every",
        "5",
        "--layers",
        "12288,6,1",
    ]
    docs = [train_json("--train", str(p), *common) for p in (h5, csv, folder)]
    for doc in docs[1:]:
        assert rel_err([c for _, c in doc["costs"]], [c for _, c in docs[0]["costs"]]) <= 1e-6
    for doc in docs:  # no --test: the training accuracy only
        assert doc["train_examples"] == 40 and "test_accuracy" not in doc
    with_test = train_json("--train", str(csv), "--test", str(folder), *common)
    assert (
        with_test["test_examples"] == 40 and with_test["test_correct"] == with_test["train_correct"]
    )


def test_folders_skip_hidden_and_other_files_but_not_broken_images(tmp_path, capsys, course_data):
    _, _, folder = write_formats(tmp_path, *subset(course_data, 6))
    cat = folder / "Cat"
    (cat / "._000.png").write_bytes(b"\x00\x05\x16\x07AppleDouble")  # macOS resource fork
    (cat / ".DS_Store").write_bytes(b"\x00\x00\x00\x01Bud1")
    (cat / "notes.txt").write_text("not an image")
    ds = load_input(folder, require_labels=True)
    assert ds.n_examples == 6 and not any(
        n.startswith("Cat/.") or n.endswith(".txt") for n in ds.names
    )
    (cat / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    fails_with(
        capsys, ["train", "--train", str(folder)], str(cat / "broken.png"), "not a readable image"
    )


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--train", "NOPE"], ["NOPE", "no such file or folder"]),
        (["--train", "NOLABELS"], ["carry no labels"]),
        (["--test", "NOPE"], ["NOPE", "no such file"]),
        (["--train", "GOOD", "--data-dir", "x"], ["--data-dir"]),
        (["--seed", "-3"], ["--seed"]),
    ],
)
def test_bad_training_inputs_exit_2(tmp_path, capsys, args, needles):
    (tmp_path / "plain").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8) + 90).save(tmp_path / "plain" / "a.png")
    h5 = tmp_path / "good.h5"
    with h5py.File(h5, "w") as f:
        f["train_set_x"] = np.full((2, 64, 64, 3), 7, np.uint8)
        f["train_set_y"] = np.array([0, 1])
    names = {
        "NOPE": str(tmp_path / "nope.h5"),
        "NOLABELS": str(tmp_path / "plain"),
        "GOOD": str(h5),
    }
    argv = ["train", "--device", "cpu", "--iterations", "1", *[names.get(a, a) for a in args]]
    fails_with(capsys, argv, *[names.get(n, n) for n in needles])


# --- images as the picture they show ------------------------------------------------------


@pytest.fixture(scope="module")
def gray8():
    """A real photo as 8-bit gray (and the same picture as RGB, 64x64)."""
    with Image.open(data_file("photos/chelsea.png")) as im:
        return np.asarray(im.convert("L").resize((96, 64)))


@pytest.mark.parametrize(
    "kind",
    ["I;16 png", "I tiff", "F [0,1] tiff", "F [0,255] tiff", "F [0,65535] tiff"],
)
def test_wide_images_read_as_their_8bit_picture(tmp_path, gray8, kind):
    """16-bit and float copies of a photo give the 8-bit copy's pixels exactly (a black and a
    white pixel included), where Pillow's convert('RGB') gives white (16-bit) or black
    (float in [0, 1])."""
    gray8 = gray8.copy()
    gray8[0, :2] = (0, 255)
    g = gray8.astype(np.float64)
    arr = {
        "I;16 png": (g * 257).astype(np.uint16),
        "I tiff": (g * 257).astype(np.int32),
        "F [0,1] tiff": (g / 255).astype(np.float32),
        "F [0,255] tiff": g.astype(np.float32),
        "F [0,65535] tiff": (g * 257).astype(np.float32),
    }[kind]
    path = tmp_path / ("x.png" if "png" in kind else "x.tif")
    Image.fromarray(arr).save(path)
    Image.fromarray(gray8).save(tmp_path / "ref.png")
    got = load_image(path).astype(int)
    expected = load_image(tmp_path / "ref.png").astype(int)
    np.testing.assert_array_equal(got, expected)
    assert 60 < got.mean() < 200  # the picture itself: neither all white nor all black


@pytest.mark.parametrize(
    "values, mode, expected",
    [
        ([0.0, 1.0, 2.0], "F", [0, 1, 2]),  # floats above 1: the 0..255 scale (a dark picture)
        ([0.0, 255.0, 255.5], "F", [0, 1, 1]),  # above 255: the 0..65535 scale
        ([-0.5, 0.5, 1.0], "F", [0, 128, 255]),  # below 0: black, not a wrapped-around byte
        ([0, 32768, 70000], "I", [0, 128, 255]),  # 32-bit gray beyond 16 bits: white
        ([0.0, 51529.0, 65535.0], "F", [0, 201, 255]),  # 16-bit values as floats: 257 a step
    ],
)
def test_the_scale_of_a_gray_image_is_read_from_its_values(tmp_path, values, mode, expected):
    column = np.array(values, dtype=np.float32 if mode == "F" else np.int32)
    Image.fromarray(np.repeat(column[:, None], 3, axis=1)).save(tmp_path / "g.tif")
    with Image.open(tmp_path / "g.tif") as im:
        assert im.mode == mode
        from gpucat.data.inputs import as_rgb8

        got = np.asarray(as_rgb8(im))[:, 0, 0]
    assert got.tolist() == expected


def test_wide_copies_predict_like_the_8bit_copy(tmp_path, gray8, trained_model):
    g = gray8.astype(np.float64)
    Image.fromarray(gray8).convert("RGB").save(tmp_path / "a8.png")
    Image.fromarray((g * 257).astype(np.uint16)).save(tmp_path / "b16.png")
    Image.fromarray((g / 255).astype(np.float32)).save(tmp_path / "cf.tif")
    model = models.load_model(trained_model)
    p = model_probabilities(get_device("cpu"), model, load_input(tmp_path), "float64")
    assert np.abs(p - p[0]).max() <= 0.05


def la_alpha() -> np.ndarray:
    """An alpha plane: the left half transparent, the right opaque."""
    alpha = np.zeros((64, 64), np.uint8)
    alpha[:, 32:] = 255
    return alpha


def test_transparency_is_white_and_cmyk_keeps_its_colours(tmp_path):
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[:, :32] = (200, 30, 40)
    rgb[:, 32:] = (10, 20, 250)
    # palette image whose second colour is transparent
    p = Image.fromarray(rgb).quantize(colors=2)
    blue = int(p.getpixel((40, 5)))
    p.save(tmp_path / "p.png", transparency=blue)
    got = load_image(tmp_path / "p.png")
    assert (got[5, 50] == 255).all() and abs(int(got[5, 10, 0]) - 200) <= 2
    # colour-key transparency on an RGB image
    Image.fromarray(rgb).save(tmp_path / "key.png", transparency=(10, 20, 250))
    got = load_image(tmp_path / "key.png")
    assert (got[5, 50] == 255).all() and tuple(got[5, 10]) == (200, 30, 40)
    # gray + alpha: half opaque black over white is mid gray
    la = Image.fromarray(
        np.dstack([np.zeros((64, 64), np.uint8), np.full((64, 64), 128, np.uint8)]), "LA"
    )
    la.save(tmp_path / "la.png")
    assert abs(int(load_image(tmp_path / "la.png")[10, 10, 0]) - 127) <= 1
    # TIFFs: palette with alpha (PA), and gray with associated alpha (La), which Pillow
    # writes only as LA: its ExtraSamples tag (338) made 1, associated, by hand
    pa = Image.new("PA", (64, 64))
    pa.putpalette([200, 30, 40] * 256)
    pa.putdata([(0, int(a)) for a in la_alpha().reshape(-1)])
    pa.save(tmp_path / "pa.tif")
    got = load_image(tmp_path / "pa.tif")
    assert (got[:, :30] == 255).all() and (got[:, 34:] == (200, 30, 40)).all()
    gray = Image.fromarray(np.dstack([np.full((64, 64), 200, np.uint8), la_alpha()]), "LA")
    gray.save(tmp_path / "la.tif")
    raw = (tmp_path / "la.tif").read_bytes()
    entry = b"\x52\x01\x03\x00\x01\x00\x00\x00\x02\x00"  # tag 338, SHORT, 1 value: 2
    assert raw.count(entry) == 1
    (tmp_path / "la.tif").write_bytes(raw.replace(entry, entry[:-2] + b"\x01\x00"))
    with Image.open(tmp_path / "la.tif") as im:
        assert im.mode == "La"
    got = load_image(tmp_path / "la.tif")
    assert (got[:, :30] == 255).all() and (got[:, 34:] == 200).all()
    # CMYK (lossless TIFF): the same colours as the RGB picture
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "c.tif")
    got = load_image(tmp_path / "c.tif").astype(int)
    assert np.abs(got[:, 4:28] - rgb[:, 4:28]).max() <= 1


def test_exif_orientation_is_applied(tmp_path):
    """Stored sideways with orientation 6 ('rotate 90° clockwise to view'): the left half
    of the stored picture becomes the top of the upright one."""
    stored = np.zeros((32, 64, 3), np.uint8)
    stored[:, :32] = (255, 0, 0)
    stored[:, 32:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(stored).save(tmp_path / "r.png", exif=exif)
    got = load_image(tmp_path / "r.png").astype(int)
    assert got[4, 32, 0] > 200 and got[4, 32, 2] < 50  # top: red
    assert got[60, 32, 2] > 200 and got[60, 32, 0] < 50  # bottom: blue


def test_decompression_bomb_is_a_clean_error(tmp_path, capsys, monkeypatch, trained_model):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 4096 pixels > 2 x 1000: a "bomb"
    fails_with(
        capsys,
        ["predict", "--model", str(trained_model), str(tmp_path / "big.png")],
        "big.png",
        "decompression bomb",
    )


def test_h5_floats_in_0_1_are_not_divided_twice(tmp_path, course_data):
    images, labels = subset(course_data, 10)
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["train_set_x"], f["train_set_y"] = images / 255.0, labels
    ds = load_input(tmp_path / "f.h5")
    np.testing.assert_allclose(ds.X, images.reshape(10, -1).T / 255.0, rtol=1e-15)


# --- strict models, checkpoints and settings ---------------------------------------------


def seed_doc(**overrides):
    doc = {}
    for l, (r, c) in enumerate([(2, 12288), (1, 2)], start=1):
        doc[f"W{l}"] = {"v": 1, "dim": [r, c], "data": [0.01] * (r * c)}
        doc[f"b{l}"] = {"v": 1, "dim": [r, 1], "data": [0.0] * r}
    doc.update(overrides)
    return doc


@pytest.mark.parametrize(
    "overrides, needle",
    [
        ({"W1": {"v": 1, "dim": [2, 12288], "data": [0.01] * 5}}, "needs 24576 values, data has 5"),
        ({"W1": {"v": 1, "dim": [2, 100], "data": [0.01] * 200}}, "expected (2, 12288)"),
        ({"W2": {"v": 1, "dim": [0, 2], "data": []}}, "whole numbers >= 1"),
        ({"W2": {"v": 1, "dim": [1.5, 2], "data": [1, 2]}}, "whole numbers >= 1"),
        ({"b2": {"v": 1, "dim": [1, 1], "data": [True]}}, "flat list of numbers"),
        ({"b2": {"v": 1, "dim": [1, 1], "data": ["0.5"]}}, "flat list of numbers"),
        ({"b2": {"v": 2, "dim": [1, 1], "data": [0.5]}}, "format version 2"),
        ({"W3": {"v": 1, "dim": [1, 1], "data": [1]}}, "expected keys W1, b1"),
        (
            {
                "W2": {"v": 1, "dim": [2, 2], "data": [1, 2, 3, 4]},
                "b2": {"v": 1, "dim": [2, 1], "data": [0, 0]},
            },
            "must have 1 output",
        ),
    ],
)
def test_malformed_json_models_are_refused(tmp_path, capsys, overrides, needle):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(seed_doc(**overrides)))
    fails_with(
        capsys,
        ["predict", "--model", str(path), str(data_file("photos/chelsea.png"))],
        str(path),
        needle,
    )


def test_json_nan_weights_are_refused(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(json.dumps(seed_doc(b1={"v": 1, "dim": [2, 1], "data": [0.0, float("nan")]})))
    with pytest.raises(GpucatError, match="NaN or infinite"):
        models.load_model(path)


def test_safetensors_must_be_float_and_agree_with_its_metadata(tmp_path):
    from safetensors.numpy import save_file

    W1, W2 = np.full((2, 12288), 0.01), np.ones((1, 2))
    b1, b2 = np.zeros((2, 1)), np.zeros((1, 1))
    save_file(
        {"W1": W1.astype(np.int32), "b1": b1, "W2": W2, "b2": b2}, str(tmp_path / "int.safetensors")
    )
    with pytest.raises(GpucatError, match="W1 holds int32 values"):
        models.load_model(tmp_path / "int.safetensors")
    meta = {"gpucat": json.dumps({"layer_sizes": [12288, 5, 1]})}
    save_file(
        {"W1": W1, "b1": b1, "W2": W2, "b2": b2}, str(tmp_path / "lie.safetensors"), metadata=meta
    )
    with pytest.raises(GpucatError, match=r"metadata says layer sizes \[12288, 5, 1\]"):
        models.load_model(tmp_path / "lie.safetensors")
    meta = {"gpucat": json.dumps({"activations": ["tanh", "sigmoid"]})}
    save_file(
        {"W1": W1, "b1": b1, "W2": W2, "b2": b2}, str(tmp_path / "act.safetensors"), metadata=meta
    )
    with pytest.raises(GpucatError, match="ReLU hidden layers"):
        models.load_model(tmp_path / "act.safetensors")


def test_malformed_checkpoints_are_clean_errors(tmp_path, capsys, course_data):
    from safetensors.numpy import load_file, save_file

    from gpucat.training.loop import fit

    train, _ = course_data
    ck = tmp_path / "ck.safetensors"
    cfg = TrainConfig(layers=(12288, 3, 1), iterations=4, optimizer="adam", dtype="float64")
    fit(get_device("cpu"), cfg, train, checkpoint=str(ck), checkpoint_every=2)
    tensors = load_file(str(ck))
    from safetensors import safe_open

    with safe_open(str(ck), framework="np") as f:
        meta = json.loads(f.metadata()["gpucat_checkpoint"])

    def variant(name, tensors=tensors, meta=meta):
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors, str(path), metadata={"gpucat_checkpoint": json.dumps(meta)})
        return path

    cases = {
        variant(
            "shape", {**tensors, "param.W1": tensors["param.W1"][:, :100]}
        ): "expected (3, 12288)",
        variant("missing", {k: v for k, v in tensors.items() if k != "param.b2"}): "missing",
        variant(
            "adam", {k: v for k, v in tensors.items() if not k.startswith("opt.m.")}
        ): "optimizer state",
        variant("recipe", meta={**meta, "config": {**meta["config"], "seed": -1}}): "--seed",
        variant("progress", meta={**meta, "progress": {"next": 3}}): "damaged checkpoint",
        variant("optshape", {**tensors, "opt.v.W2": np.zeros((4, 4))}): "does not fit",
    }
    (tmp_path / "junk.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    cases[tmp_path / "junk.safetensors"] = "not a gpucat checkpoint"
    for path, needle in cases.items():
        fails_with(capsys, ["train", "--device", "cpu", "--resume", str(path)], str(path), needle)


def test_config_coerces_numpy_scalars_so_float32_stays_float32(course_data):
    from gpucat.nn.network import params_to_host
    from gpucat.training.loop import fit

    train, _ = course_data
    cfg = TrainConfig(
        layers=(np.int64(12288), np.int64(3), 1),
        learning_rate=np.float64(0.01),
        iterations=np.int64(3),
        l2=np.float64(0.1),
        dtype="float32",
    )
    r = fit(get_device("cpu"), cfg, train)
    assert type(cfg.learning_rate) is float and type(cfg.iterations) is int
    assert all(W.dtype == np.float32 for W, _ in params_to_host(get_device("cpu"), r.params))


# --- ONNX export --------------------------------------------------------------------------


@pytest.mark.parametrize("inputs", ["images", "features"])
def test_onnx_export_runs_in_onnxruntime_like_evaluate(
    tmp_path, trained_model, course_data, inputs
):
    import onnxruntime

    _, test = course_data
    out = tmp_path / "cat.onnx"
    assert (
        main(["export", "--model", str(trained_model), "--out", str(out), "--input", inputs]) == 0
    )
    ev = run_gpucat(
        "evaluate",
        "--model",
        str(trained_model),
        "--data",
        str(data_file("catvnoncat/test_catvnoncat.h5")),
        "--json",
    )
    expected = json.loads(ev.stdout.strip().splitlines()[-1])["probabilities"]
    session = onnxruntime.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    feed = test.images if inputs == "images" else test.X.T.astype(np.float32)
    got = session.run(["p_cat"], {inputs: feed})[0]
    assert got.shape == (50, 1)
    assert np.abs(got.ravel() - np.array(expected)).max() <= 1e-5


@pytest.mark.parametrize("inputs, dtype", [("images", "float32"), ("features", "float64")])
def test_onnx_graph_declares_its_interface(tmp_path, trained_model, inputs, dtype):
    """What another runtime reads before running the graph: producer, opset and IR version,
    the input's and output's names, element types and shapes (N examples), the description,
    and the Gemm taking W transposed."""
    import onnx

    import gpucat
    from gpucat.modelfiles.export import OPSET, export_onnx

    export_onnx(models.load_model(trained_model), tmp_path / "m.onnx", inputs, dtype)
    proto = onnx.load(str(tmp_path / "m.onnx"))
    assert (proto.producer_name, proto.producer_version) == ("gpucat", gpucat.__version__)
    assert [(o.domain, o.version) for o in proto.opset_import] == [("", OPSET)] and OPSET == 17
    assert proto.ir_version <= 9 and proto.graph.name == "gpucat"

    def interface(value):
        t = value.type.tensor_type
        return value.name, t.elem_type, [d.dim_param or d.dim_value for d in t.shape.dim]

    ftype = {"float32": onnx.TensorProto.FLOAT, "float64": onnx.TensorProto.DOUBLE}[dtype]
    (graph_input,), (output,) = proto.graph.input, proto.graph.output
    if inputs == "images":
        assert interface(graph_input) == ("images", onnx.TensorProto.UINT8, ["N", 64, 64, 3])
        assert proto.doc_string == (
            "P(cat) for 64x64 RGB images: uint8 (N, 64, 64, 3), height-width-channel, "
            "divided by 255 inside."
        )
    else:
        assert interface(graph_input) == ("features", ftype, ["N", 12288])
        assert proto.doc_string == (
            "P(cat) for 64x64 RGB images: float (N, 12288): pixels flattened "
            "height-width-channel, divided by 255."
        )
    assert interface(output) == ("p_cat", ftype, ["N", 1])
    gemms = [n for n in proto.graph.node if n.op_type == "Gemm"]
    assert len(gemms) == 4 and all(
        [(a.name, a.i) for a in n.attribute] == [("transB", 1)] for n in gemms
    )


def test_onnx_export_defaults_and_refusals(trained_model, monkeypatch):
    import sys

    from gpucat.modelfiles.export import to_onnx

    model = models.load_model(trained_model)
    proto = to_onnx(model)  # raw pictures in, float32 out
    assert proto.graph.input[0].name == "images"
    assert proto.graph.output[0].type.tensor_type.elem_type == 1  # FLOAT
    with pytest.raises(
        GpucatError, match=re.escape("--input must be one of images, features, got 'pixels'.")
    ):
        to_onnx(model, "pixels")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(GpucatError) as e:
        to_onnx(model)
    assert str(e.value) == (
        "ONNX export needs the onnx package, which is not installed: "
        "pip install 'gpucat[onnx]' (or pip install onnx)."
    )


def test_onnx_export_of_a_broken_model_is_a_clean_error(tmp_path, capsys):
    (tmp_path / "bad.json").write_text("{}")
    fails_with(
        capsys,
        ["export", "--model", str(tmp_path / "bad.json"), "--out", str(tmp_path / "o.onnx")],
        "bad.json",
    )
    assert not (tmp_path / "o.onnx").exists()


# --- the original program's own model ----------------------------------------------------


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_original_programs_model_scores_what_it_printed(dtype, course_data):
    """The Rust program printed 99.52153 % (208/209) on the training set and 72 % (36/50) on
    the test set for its model.json; reading that file, gpucat scores exactly those."""
    train, test = course_data
    model = models.load_model(data_file("seed-model/model.json"))
    assert model.layer_sizes == [12288, 20, 7, 5, 1]
    cpu = get_device("cpu")
    csv = load_input(data_file("seed-csv/test_set.csv"))
    for ds, correct in ((train, 208), (test, 36), (csv, 36)):
        p = model_probabilities(cpu, model, ds, dtype)
        assert int(np.sum((p > 0.5) == (ds.Y.ravel() > 0.5))) == correct


def test_original_model_on_every_backend(device, course_data):
    _, test = course_data
    model = models.load_model(data_file("seed-model/model.json"))
    p = model_probabilities(device, model, test, "float64")
    assert int(np.sum((p > 0.5) == (test.Y.ravel() > 0.5))) == 36


def test_an_unreadable_file_is_one_message(tmp_path, capsys, monkeypatch, trained_model):
    """Files the loaders cannot open (a folder where a file belongs, no permission)."""
    folder_model = tmp_path / "model.json"
    folder_model.mkdir()
    fails_with(
        capsys,
        ["predict", "--model", str(folder_model), str(data_file("photos/chelsea.png"))],
        "model.json",
    )
    locked = tmp_path / "locked.csv"
    locked.write_text("0,1\n")
    real_open = open

    def no_permission(path, *a, **k):  # what a plain user meets on a file mode 000
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr("builtins.open", no_permission)
    err = fails_with(
        capsys, ["evaluate", "--model", str(trained_model), "--data", str(locked)], str(locked)
    )
    assert "Permission denied" in err


def test_predict_names_each_input_as_it_was_given(tmp_path, trained_model, monkeypatch, capsys):
    """Two photos of the same name in two folders stay apart: each printed path is the one
    given (relative where it was given relative), a folder's photos under the folder, a data
    file's examples as FILE[index]; each line says the label its probability gives. In this
    process, so that the mutation run traces it."""
    import shutil

    for sub in ("a", "b", "c/cat"):
        (tmp_path / sub).mkdir(parents=True)
        shutil.copy(data_file("photos/chelsea.png"), tmp_path / sub / "chelsea.png")
    h5 = data_file("catvnoncat/test_catvnoncat.h5")
    monkeypatch.chdir(tmp_path)
    given = ["a/chelsea.png", "b/chelsea.png", "c", str(tmp_path / "a" / "chelsea.png"), str(h5)]
    assert (
        main(["predict", "--model", str(trained_model), "--device", "cpu", "--json", *given]) == 0
    )
    out = capsys.readouterr().out.splitlines()
    doc = json.loads(out[-1])
    assert (doc["model"], doc["device"]) == (str(trained_model), get_device("cpu").label)
    rows = doc["predictions"]
    assert [r["input"] for r in rows[:4]] == [
        "a/chelsea.png",
        "b/chelsea.png",
        "c/cat/chelsea.png",
        str(tmp_path / "a" / "chelsea.png"),
    ]
    assert [r["input"] for r in rows[4:6]] == [f"{h5}[0]", f"{h5}[1]"] and len(rows) == 54
    for line, r in zip(out, rows):
        assert r["label"] == ("cat" if r["probability"] > 0.5 else "non-cat")
        assert line == f"{r['input']}: {r['label']} (p(cat) = {r['probability']:.4f})"
    assert {r["label"] for r in rows} == {"cat", "non-cat"}


def test_predict_calls_one_half_non_cat(zero_model, capsys):
    """A model of zeros gives every picture p(cat) = 0.5 exactly: not above one half."""
    photo = str(data_file("photos/coffee.png"))
    model = str(zero_model)
    assert main(["predict", "--model", model, "--device", "cpu", "--json", photo]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{photo}: non-cat (p(cat) = 0.5000)"
    assert json.loads(out[-1])["device"] == get_device("cpu").label


def test_a_float_image_whose_brightest_pixel_is_exactly_1_is_on_the_0_1_scale(tmp_path, gray8):
    """Floats in [0, 1] with a white pixel (exactly 1.0): the [0, 1] picture. Read on the
    0..255 scale it would come out near black."""
    g = gray8.astype(np.float64)
    g[0, 0] = 255.0  # a white pixel: exactly 1.0 below
    Image.fromarray((g / 255).astype(np.float32)).save(tmp_path / "white.tif")
    Image.fromarray(g.astype(np.uint8)).save(tmp_path / "ref.png")
    got = load_image(tmp_path / "white.tif").astype(int)
    assert np.abs(got - load_image(tmp_path / "ref.png").astype(int)).max() <= 1
    assert got.mean() > 60


@pytest.mark.parametrize("tall", [False, True])
def test_a_photo_of_another_shape_is_center_cropped_not_stretched(tmp_path, tall):
    """A 2:1 photo, red | green | blue by quarters, half, quarter: the model sees its
    middle square, green throughout; a stretched photo would keep the red and blue ends."""
    bands = np.zeros((64, 128, 3), np.uint8)
    bands[:, :32, 0] = bands[:, 32:96, 1] = bands[:, 96:, 2] = 255
    picture = bands.transpose(1, 0, 2) if tall else bands
    Image.fromarray(np.ascontiguousarray(picture)).save(tmp_path / "bands.png")
    got = load_image(tmp_path / "bands.png")
    assert got.shape == (64, 64, 3)
    assert (got[..., 1] == 255).all() and (got[..., 0] == 0).all() and (got[..., 2] == 0).all()


def test_evaluate_and_predict_on_rows_of_a_csv(
    tmp_path, trained_model, zero_model, monkeypatch, capsys
):
    """A CSV of two labelled rows and one of a single row, in this process: each row is named
    FILE[its name], a single row too (only an image is named by its path alone), the JSON
    lists the rows' names, --device wins over GPUCAT_DEVICE, --dtype is the arithmetic done,
    and p(cat) = 0.5 exactly (a model of zeros) is predicted non-cat."""
    lines = data_file("seed-csv/test_set.csv").read_text().splitlines(keepends=True)
    two, one = tmp_path / "two.csv", tmp_path / "one.csv"
    two.write_text("".join(lines[:3]))
    one.write_text("".join(lines[:2]))
    monkeypatch.setenv("GPUCAT_DEVICE", "strict")  # the flag below decides
    cpu = ["--device", "cpu", "--json"]

    def run(*argv):
        assert main([*argv, *cpu]) == 0
        return capsys.readouterr().out.splitlines()

    out = run("predict", "--model", str(trained_model), str(two), str(one))
    names = [f"{two}[two.csv:row2]", f"{two}[two.csv:row3]", f"{one}[one.csv:row2]"]
    assert [line.split(": ")[0] for line in out[:3]] == names
    doc = json.loads(out[-1])
    assert doc["device"] == get_device("cpu").label
    p64 = np.array([r["probability"] for r in doc["predictions"]])
    rows = load_input(str(two))
    expected = model_probabilities(
        get_device("cpu"), models.load_model(trained_model), rows, "float64"
    )
    assert np.abs(p64[:2] - expected).max() <= 1e-12

    doc = json.loads(run("evaluate", "--model", str(trained_model), "--data", str(two))[-1])
    assert doc["names"] == ["two.csv:row2", "two.csv:row3"]
    assert doc["device"] == get_device("cpu").label
    assert np.abs(np.array(doc["probabilities"]) - expected).max() <= 1e-12
    for command in (["predict", str(two)], ["evaluate", "--data", str(two)]):
        out = run(command[0], "--model", str(trained_model), "--dtype", "float32", *command[1:])
        doc = json.loads(out[-1])
        p32 = doc.get("probabilities") or [r["probability"] for r in doc["predictions"]]
        assert 1e-12 < np.abs(np.array(p32) - expected).max() <= 1e-5  # float32 arithmetic

    doc = json.loads(run("evaluate", "--model", str(zero_model), "--data", str(two))[-1])
    assert doc["probabilities"] == [0.5, 0.5] and doc["predicted"] == [0, 0]
