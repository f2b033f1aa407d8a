"""The public API a script uses: the example in gpucat's docstring runs, train_model takes
the course data, a path or arrays and gives what the command line gives, and only the
documented names are public."""

from __future__ import annotations

import doctest

import numpy as np
import pytest

import gpucat
from gpucat.errors import GpucatError

from conftest import data_file


def test_the_docstring_example_runs():
    result = doctest.testmod(gpucat, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 6 and result.failed == 0


def test_the_public_names_are_the_documented_ones():
    assert set(gpucat.__all__) == {
        "__version__", "train_model", "devices", "device", "CatClassifier", "compare_devices",
        "sweep_devices",
        "TrainConfig", "Model", "load_model", "save_model", "GpucatError",
    }  # fmt: skip
    for name in gpucat.__all__:
        assert getattr(gpucat, name) is not None
        assert name == "__version__" or f"``{name}" in gpucat.__doc__  # each one documented
    with pytest.raises(AttributeError):
        gpucat.fit  # noqa: B018  (internal: gpucat.training.loop.fit)


def test_train_model_from_a_path_and_from_arrays_agree(course_data):
    """The same examples as a file and as uint8 arrays (images, and rows) give the same
    model; a test pair is scored."""
    train, test = course_data
    path = data_file("catvnoncat/train_catvnoncat.h5")
    images = train.rows.reshape(-1, 64, 64, 3)
    labels = train.Y.reshape(-1)
    recipe = dict(iterations=30, device="cpu", layers=(12288, 7, 1))
    by_path = gpucat.train_model(path, **recipe)
    by_images = gpucat.train_model(images, labels, test=(test.rows, test.Y.ravel()), **recipe)
    by_rows = gpucat.train_model(train.rows, labels, **recipe)
    for other in (by_images, by_rows):
        for (W, b), (W0, b0) in zip(other.params, by_path.params):
            np.testing.assert_array_equal(W, W0)
            np.testing.assert_array_equal(b, b0)
    assert by_path.metadata["result"]["costs"] == by_images.metadata["result"]["costs"]
    assert by_images.metadata["result"]["test_examples"] == 50
    assert "test_examples" not in by_path.metadata["result"]


def test_train_model_refuses_bad_input_with_one_message():
    with pytest.raises(GpucatError, match="need their labels"):
        gpucat.train_model(np.zeros((3, 12288), np.uint8), device="cpu")
    with pytest.raises(GpucatError, match="labels must be 0"):
        gpucat.train_model(np.zeros((3, 12288), np.uint8), [0, 1, 2], device="cpu")
    with pytest.raises(GpucatError, match="iterations"):
        gpucat.train_model(iterations=0)


def test_devices_and_device():
    names = [d.name for d in gpucat.devices()]
    assert names[0] == "numpy" and set(names) <= {"numpy", "cupy"}
    assert gpucat.device("cpu").name == "numpy"
    with pytest.raises(GpucatError, match="unknown device"):
        gpucat.device("tpu")


def test_no_public_name_is_shadowed_by_a_submodule():
    """Importing every module of gpucat (gpucat.frontends.compare among them) leaves the public
    functions callable: no public name is also a subpackage's or a module's."""
    import importlib
    import pkgutil

    for info in pkgutil.walk_packages(gpucat.__path__, "gpucat."):
        if not info.name.endswith("__main__"):  # that one runs the command
            importlib.import_module(info.name)
        assert info.name.split(".")[1] not in gpucat.__all__, info.name
    assert callable(gpucat.train_model) and callable(gpucat.compare_devices)
