"""Every input format, and every kind of bad input: one clear message, exit code 2."""

from __future__ import annotations

import json
import re
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from gpucat.cli import main
from gpucat.data.inputs import load_image, load_input
from gpucat.errors import GpucatError
from gpucat.modelfiles.model import load_model
from gpucat.nn.inference import model_probabilities

import reference_impl as ref
from conftest import RTOL, data_file, rel_err, run_gpucat

PHOTOS = ["chelsea.png", "coffee.png", "rocket.jpg", "astronaut.png"]


def fails_with(capsys, argv, *needles) -> str:
    """Run the CLI in-process; assert exit 2 and one message holding every needle."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpucat: error:") and "Traceback" not in err
    for n in needles:
        assert n in err, err
    return err


def evaluate_fails(capsys, model, data, *needles) -> str:
    """`gpucat evaluate --model MODEL --data DATA` fails with one clear message."""
    return fails_with(capsys, ["evaluate", "--model", str(model), "--data", str(data)], *needles)


def write_h5(path, x, y, names=("test_set_x", "test_set_y")):
    with h5py.File(path, "w") as f:
        f[names[0]] = x
        f[names[1]] = y
    return path


def good_images(m=4):
    return np.random.default_rng(0).integers(0, 256, (m, 64, 64, 3), dtype=np.uint8)


# --- course h5 files ---------------------------------------------------------------------


def test_html_page_saved_as_h5(tmp_path, capsys, trained_model):
    page = tmp_path / "test_catvnoncat.h5"
    page.write_text("<!DOCTYPE HTML>\n<html><head><title>GitHub</title></head><body>" + "x" * 8000)
    evaluate_fails(
        capsys,
        trained_model,
        page,
        str(page),
        "HTML web page",
        "gpucat fetch-data",
    )


def test_truncated_download(tmp_path, capsys, trained_model):
    src = data_file("catvnoncat/test_catvnoncat.h5").read_bytes()
    cut = tmp_path / "test_catvnoncat.h5"
    cut.write_bytes(src[: len(src) // 2])
    evaluate_fails(
        capsys,
        trained_model,
        cut,
        str(cut),
        "truncated or damaged",
        "gpucat fetch-data",
    )


def test_missing_files(tmp_path, capsys, trained_model):
    evaluate_fails(
        capsys,
        trained_model,
        tmp_path / "nope.h5",
        "nope.h5",
        "no such file",
    )
    fails_with(
        capsys,
        ["evaluate", "--model", str(tmp_path / "none.safetensors"), "--data", str(tmp_path)],
        "none.safetensors",
        "no such model file",
    )


def test_missing_course_data_without_network(tmp_path):
    """train with no data anywhere: tries the download, then says what to do."""
    out = run_gpucat(
        "train",
        "--data-dir",
        str(tmp_path / "empty"),
        env_extra={"GPUCAT_DATA_URL": "http://127.0.0.1:9/"},
    )  # nothing listens on port 9
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "could not download a verified copy" in out.stderr and "--data-dir" in out.stderr
    assert not (tmp_path / "empty" / "train_catvnoncat.h5").exists()


def test_wrong_dataset_names(tmp_path, capsys, trained_model):
    path = write_h5(tmp_path / "x.h5", good_images(), np.ones(4, int), names=("images", "labels"))
    evaluate_fails(
        capsys,
        trained_model,
        path,
        str(path),
        "'*_set_x'",
        "['images', 'labels']",
    )


def test_image_label_count_mismatch(tmp_path, capsys, trained_model):
    path = write_h5(tmp_path / "x.h5", good_images(5), np.ones(4, int))
    evaluate_fails(
        capsys,
        trained_model,
        path,
        "5 images but 4 labels",
    )


def test_labels_outside_0_1(tmp_path, capsys, trained_model):
    path = write_h5(tmp_path / "x.h5", good_images(), np.array([0, 1, 2, 1]))
    evaluate_fails(
        capsys,
        trained_model,
        path,
        "labels must be 0 (non-cat) or 1 (cat)",
        "found 2 at example 2",
    )


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_pixels_in_h5(tmp_path, capsys, trained_model, bad):
    x = good_images().astype(np.float64)
    x[1, 5, 5, 0] = bad
    path = write_h5(tmp_path / "x.h5", x, np.ones(4, int))
    fails_with(
        capsys, ["evaluate", "--model", str(trained_model), "--data", str(path)], "NaN or infinity"
    )


# --- the original CSV --------------------------------------------------------------------


def csv_text(rows, header=None):
    header = header or ",".join([*map(str, range(12288)), "y"])
    return header + "\n" + "\n".join(",".join(map(str, r)) for r in rows) + "\n"


def csv_rows(n=3):
    rng = np.random.default_rng(1)
    return [[*rng.integers(0, 256, 12288).tolist(), k % 2] for k in range(n)]


def test_csv_non_numeric_cell(tmp_path, capsys, trained_model):
    rows = csv_rows()
    rows[1][17] = "abc"
    path = tmp_path / "bad.csv"
    path.write_text(csv_text(rows))
    evaluate_fails(
        capsys,
        trained_model,
        path,
        str(path),
        "line 3, column 17",
        "'abc' is not a number",
    )


def test_csv_nan_pixel(tmp_path, capsys, trained_model):
    rows = csv_rows()
    rows[0][3] = "nan"
    path = tmp_path / "nan.csv"
    path.write_text(csv_text(rows))
    evaluate_fails(
        capsys,
        trained_model,
        path,
        "row 2, column 3",
        "must be finite",
    )


def test_csv_without_y_column(tmp_path, capsys, trained_model):
    rows = [r[:-1] for r in csv_rows()]
    path = tmp_path / "noy.csv"
    path.write_text(csv_text(rows, header=",".join(map(str, range(12288)))))
    evaluate_fails(
        capsys,
        trained_model,
        path,
        str(path),
        "no 'y' column",
    )
    # prediction needs no labels: the same file works there
    assert main(["predict", "--model", str(trained_model), str(path)]) == 0


def test_csv_with_wrong_header(tmp_path, capsys, trained_model):
    path = tmp_path / "hdr.csv"
    path.write_text(csv_text(csv_rows(), header="a,b,c"))
    evaluate_fails(
        capsys,
        trained_model,
        path,
        "not a gpucat CSV",
        "0,1,...,12287,y",
    )


def test_csv_label_outside_0_1(tmp_path, capsys, trained_model):
    rows = csv_rows()
    rows[2][-1] = 7
    path = tmp_path / "lab.csv"
    path.write_text(csv_text(rows))
    evaluate_fails(
        capsys,
        trained_model,
        path,
        "found 7 at example 2",
    )


# --- images ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P", "I;16", "CMYK"])
def test_any_image_mode_and_size_becomes_rgb_64(tmp_path, mode):
    rng = np.random.default_rng(2)
    im = Image.fromarray(rng.integers(0, 256, (37, 91, 3), dtype=np.uint8)).convert(
        "RGB" if mode in ("I;16",) else mode
    )
    if mode == "I;16":
        im = Image.fromarray(rng.integers(0, 65535, (37, 91), dtype=np.uint16))
    ext = "png" if mode != "CMYK" else "jpg"
    im.save(tmp_path / f"x.{ext}")
    a = load_image(tmp_path / f"x.{ext}")
    assert a.shape == (64, 64, 3) and a.dtype == np.uint8


def test_not_an_image(tmp_path, capsys, trained_model):
    path = tmp_path / "fake.png"
    path.write_bytes(b"definitely not a png")
    fails_with(
        capsys,
        ["predict", "--model", str(trained_model), str(path)],
        str(path),
        "not a readable image",
    )


def test_labelled_and_unlabelled_folders(tmp_path):
    for sub, files in (("cat", ["chelsea.png"]), ("non-cat", ["coffee.png", "rocket.jpg"])):
        (tmp_path / "lab" / sub).mkdir(parents=True)
        for f in files:
            shutil.copy(data_file(f"photos/{f}"), tmp_path / "lab" / sub / f)
    ds = load_input(tmp_path / "lab", require_labels=True)
    assert ds.n_examples == 3 and ds.Y.tolist() == [[1.0, 0.0, 0.0]]
    assert ds.names == ["cat/chelsea.png", "non-cat/coffee.png", "non-cat/rocket.jpg"]
    un = load_input(data_file("photos"))
    assert un.Y is None and un.n_examples == 4


def test_predict_real_photos_on_every_backend(device, trained_model):
    """The pipeline on photos from outside the data set: shape, range, deterministic, and the
    probabilities of an independent forward pass."""
    model = load_model(trained_model)
    ds = load_input(data_file("photos"))
    assert ds.X.shape == (12288, 4) and 0.0 <= ds.X.min() and ds.X.max() <= 1.0
    got = model_probabilities(device, model, ds, "float64")
    p = {f"{k}{l}": a for l, (W, b) in enumerate(model.params, 1) for k, a in (("W", W), ("b", b))}
    assert ((got > 0) & (got < 1)).all()
    assert rel_err(got, ref.forward(ds.X, p)[0].ravel()) <= RTOL["float64"]
    again = model_probabilities(device, model, load_input(data_file("photos")), "float64")
    np.testing.assert_array_equal(got, again)  # deterministic


def test_predict_cli_json_on_a_photo(trained_model):
    out = run_gpucat(
        "predict",
        "--model",
        str(trained_model),
        "--device",
        "cpu",
        str(data_file("photos/chelsea.png")),
        "--json",
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    (row,) = doc["predictions"]
    assert row["input"] == str(data_file("photos/chelsea.png")) and 0 < row["probability"] < 1
    assert row["label"] == ("cat" if row["probability"] > 0.5 else "non-cat")


def test_evaluate_json_and_mislabeled_grid(tmp_path, trained_model, course_data):
    _, test = course_data
    png = tmp_path / "grid.png"
    out = run_gpucat(
        "evaluate",
        "--model",
        str(trained_model),
        "--data",
        str(data_file("catvnoncat/test_catvnoncat.h5")),
        "--json",
        "--mislabeled",
        str(png),
    )
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["n"] == 50 and len(doc["probabilities"]) == 50
    wrong = sum(int(p > 0.5) != y for p, y in zip(doc["probabilities"], doc["labels"]))
    assert wrong == doc["false_positives"] + doc["false_negatives"] == 50 - doc["correct"]
    assert f"Saved {wrong} mislabeled images" in out.stdout
    with Image.open(png) as im:
        assert im.size[0] > 300


def test_missing_matplotlib_is_a_clear_message(tmp_path):
    out = run_gpucat(
        "train",
        "--iterations",
        "3",
        "--plot",
        str(tmp_path / "c.png"),
        env_extra={"PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 0, out.stderr  # with matplotlib: fine
    (tmp_path / "matplotlib.py").write_text("raise ImportError('No module named matplotlib')\n")
    out = run_gpucat(
        "train",
        "--iterations",
        "3",
        "--plot",
        str(tmp_path / "d.png"),
        env_extra={"PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 2 and "pip install 'gpucat[plot]'" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "d.png").exists()


def test_diverging_learning_rate_stops_with_advice():
    out = run_gpucat("train", "--learning-rate", "1e4", "--device", "cpu")
    assert out.returncode == 2
    assert "training diverged" in out.stderr and "smaller --learning-rate" in out.stderr
    assert "nan" not in out.stdout.lower() and "Train accuracy" not in out.stdout


# --- each message as a user reads it, and what each loader hands on -------------------------


def raised(call, *args, **kw) -> str:
    """The GpucatError message of call(*args, **kw)."""
    from gpucat.errors import GpucatError

    with pytest.raises(GpucatError) as e:
        call(*args, **kw)
    return str(e.value)


def test_every_csv_message_names_the_file_the_place_and_what_to_do(tmp_path):
    from gpucat.data.inputs import load_csv

    p = tmp_path / "x.csv"
    assert raised(load_csv, p) == f"{p}: no such file."
    p.write_text("")
    assert raised(load_csv, p) == f"{p}: the file is empty."
    p.write_text("a,b,a_column_name_of_25_chars\n")
    assert raised(load_csv, p) == (
        f"{p}: not a gpucat CSV: its header has 3 columns ending in 'a_column_name_of_25_'; "
        "expected 0,1,...,12287,y (12,288 pixel columns, then the label y)."
    )
    p.write_text(csv_text([r[:-1] for r in csv_rows()], header=",".join(map(str, range(12288)))))
    assert raised(load_csv, p) == (
        f"{p}: the CSV has no 'y' column, so there are no labels to evaluate against; add "
        "the label column (1 cat, 0 non-cat) or use `gpucat predict`."
    )
    p.write_text(csv_text([]).rstrip("\n") + "\n")
    assert raised(load_csv, p) == f"{p}: the CSV has a header but no rows."
    p.write_text(csv_text([r[:-1] for r in csv_rows()]))  # every row one value short
    assert raised(load_csv, p) == f"{p}: rows have 12288 values, expected 12289."
    rows = csv_rows()
    rows[1][:12] = [0, 255, 0, 255, 7, 300, 8, 9, 10, -1, 11, 12]  # 0 and 255 are pixels
    p.write_text(csv_text(rows))
    assert raised(load_csv, p) == f"{p}: row 3, column 5: pixel 300 is outside 0..255."
    rows = csv_rows()
    rows[0][7] = 255.5
    p.write_text(csv_text(rows))
    assert raised(load_csv, p) == f"{p}: row 2, column 7: pixel 255.5 is outside 0..255."
    rows = csv_rows()
    rows[2][-1] = "7X"
    p.write_text(csv_text(rows))
    assert raised(load_csv, p) == (
        f"{p}: line 4, column y: '7X' is not a number; every cell must be a pixel value "
        "0..255 (or the label 0/1)."
    )
    rows = csv_rows()
    rows[0][3] = "z" * 40
    p.write_text(csv_text(rows))
    assert f"column 3: {'z' * 30!r} is not a number" in raised(load_csv, p)
    rows = csv_rows()
    rows[2][-1] = 7
    p.write_text(csv_text(rows))
    assert (
        raised(load_csv, p) == f"{p}: labels must be 0 (non-cat) or 1 (cat); found 7 at example 2."
    )
    header, body = csv_text(csv_rows()).split("\n", 1)
    p.write_bytes(f"{header}\n1\xff7{body[body.index(',') :]}".encode("latin-1"))
    # a byte that is not UTF-8: the cell is named, not a UnicodeDecodeError
    assert raised(load_csv, p).startswith(f"{p}: line 2, column 0: '1\ufffd7' is not a number")


def test_a_csv_keeps_whole_pixels_as_uint8_and_fractions_as_float32(tmp_path, monkeypatch):
    """Whole pixels stay uint8 (a quarter of float32's memory); a file with fractional
    pixels becomes float32, one block of whole pixels beside another of fractions included;
    one row is a file too; the rows are named by their line."""
    from gpucat.data import inputs

    rows = csv_rows(3)
    p = tmp_path / "x.csv"
    p.write_text(csv_text(rows[:1]))
    one = inputs.load_csv(p)
    assert one.rows.shape == (1, 12288) and one.rows.dtype == np.uint8
    assert (one.origin, one.names, one.divisor) == (str(p), ["x.csv:row2"], 255.0)
    np.testing.assert_array_equal(one.X[:, 0], np.array(rows[0][:-1]) / 255.0)
    rows[2][5] = 12.5
    p.write_text(csv_text(rows))
    monkeypatch.setattr(inputs, "CSV_BLOCK", 2)  # block 1 whole, block 2 with the fraction
    mixed = inputs.load_csv(p)
    assert mixed.rows.dtype == np.float32 and mixed.rows[2, 5] == np.float32(12.5)
    assert mixed.names == ["x.csv:row2", "x.csv:row3", "x.csv:row4"]
    rows[0][7] = 300  # a bad pixel in a full block (read before the file ends): named too
    p.write_text(csv_text(rows))
    with pytest.raises(GpucatError, match=rf"^{re.escape(str(p))}: row 2, column 7: pixel 300"):
        inputs.load_csv(p)
    np.testing.assert_array_equal(mixed.Y, [[0.0, 1.0, 0.0]])


def test_image_and_folder_messages(tmp_path):
    from gpucat.data.inputs import load_folder, load_image

    missing = tmp_path / "nope.png"
    assert raised(load_image, missing) == f"{missing}: no such file."
    assert raised(load_input, missing) == f"{missing}: no such file or folder."
    (tmp_path / "empty").mkdir()
    assert raised(load_folder, tmp_path / "empty") == (
        f"{tmp_path / 'empty'}: no images found; put PNG/JPEG files in it, or in cat/ and "
        "non-cat/ subfolders for labelled data."
    )
    odd = tmp_path / "x.dat"
    odd.write_text("?")
    assert raised(load_input, odd) == (
        f"{odd}: unknown input format; give a course .h5 file, the original program's .csv, "
        "an image (PNG, JPEG, ...) or a folder of images."
    )
    fake = tmp_path / "x.hdf5"  # the suffix makes it an h5 to read: the h5 reader explains
    fake.write_text("not hdf5")
    assert "is not an HDF5 file (wrong signature)" in raised(load_input, fake)
    Image.fromarray(good_images(1)[0]).save(tmp_path / "one.png")
    assert raised(load_input, tmp_path / "one.png", require_labels=True) == (
        f"{tmp_path / 'one.png'}: these inputs carry no labels; evaluation needs labelled data "
        "(an .h5 file, a CSV with a 'y' column, or cat/ and non-cat/ subfolders)."
    )
    nan = np.full((8, 8), 0.5, np.float32)
    nan[2, 2] = np.nan
    Image.fromarray(nan).save(tmp_path / "nan.tif")
    assert raised(load_image, tmp_path / "nan.tif") == (
        f"{tmp_path / 'nan.tif'}: not a readable image (the image holds NaN or infinite "
        "values); replace or remove it (PNG and JPEG work)."
    )


def test_one_image_and_one_sided_folders_as_data(tmp_path):
    """A single image is one unlabelled example named by its file; a folder with cat/ alone
    is all cats (not the folder's own images); a file called 'cat' is no subfolder."""
    images = good_images(3)
    Image.fromarray(images[0]).save(tmp_path / "a.png")
    one = load_input(tmp_path / "a.png")
    assert one.rows.shape == (1, 12288) and one.Y is None
    assert (one.origin, one.names) == (str(tmp_path / "a.png"), ["a.png"])
    np.testing.assert_array_equal(one.rows[0], load_image(tmp_path / "a.png").reshape(-1))
    (tmp_path / "cat").write_text("not a folder")
    loose = load_input(tmp_path)
    assert loose.Y is None and loose.names == ["a.png"] and loose.origin == str(tmp_path)
    only = tmp_path / "only"
    (only / "Cat").mkdir(parents=True)
    for k in (1, 2):
        Image.fromarray(images[k]).save(only / "Cat" / f"{k}.png")
    Image.fromarray(images[0]).save(only / "stray.png")
    cats = load_input(only)
    assert cats.names == ["Cat/1.png", "Cat/2.png"] and cats.Y.tolist() == [[1.0, 1.0]]
    (only / "Cat").rename(only / "non-cat")
    assert load_input(only).Y.tolist() == [[0.0, 0.0]]


def test_h5_streams_only_when_asked(tmp_path):
    from gpucat.data.dataset import Dataset
    from gpucat.data.streaming import H5Source

    path = write_h5(tmp_path / "x.h5", good_images(), np.array([0, 1, 1, 0]))
    assert isinstance(load_input(path, stream=True), H5Source)
    assert isinstance(load_input(path), Dataset)


def test_images_are_resized_with_lanczos_and_transparency_is_white(tmp_path):
    """The resize is Lanczos's (the default filter, bicubic, gives other pixels); RGBA
    pixels with no opacity are white, as every other kind of transparency."""
    from PIL import ImageOps

    with Image.open(data_file("photos/chelsea.png")) as im:
        photo = im.convert("RGB")
        photo.save(tmp_path / "c.png")
    got = load_image(tmp_path / "c.png")
    lanczos = np.asarray(ImageOps.fit(photo, (64, 64), Image.Resampling.LANCZOS))
    np.testing.assert_array_equal(got, lanczos)
    assert not np.array_equal(got, np.asarray(ImageOps.fit(photo, (64, 64))))
    rgba = np.zeros((64, 64, 4), np.uint8)
    rgba[..., :3] = (200, 30, 40)
    rgba[:, 32:, 3] = 255  # the left half transparent
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    got = load_image(tmp_path / "half.png")
    assert (got[:, :30] == 255).all() and (got[:, 34:] == (200, 30, 40)).all()
