"""The functions a script drives gpucat with (exported by ``gpucat``): train a model from the
course data, a file or arrays; list and choose devices. Everything else is internal."""

from __future__ import annotations

import os

from gpucat.backends import Device, available_devices, get_device
from gpucat.config import TrainConfig
from gpucat.data.course import load_course_data
from gpucat.data.dataset import Dataset
from gpucat.errors import GpucatError
from gpucat.modelfiles.model import Model


def devices() -> list[Device]:
    """Every device usable here, NumPy's CPU first, then CuPy's GPU where one answers; each
    has ``name`` ("numpy", "cupy") and ``label`` ("CPU (...)", "GPU 0 (...)")."""
    return available_devices()


def device(name: str | None = None) -> Device:
    """The device for "auto", "cpu" or "gpu" (None: GPUCAT_DEVICE, else "auto": a usable GPU,
    else the CPU); "gpu" where none is usable is a GpucatError saying why."""
    return get_device(name)


def _dataset(data, labels, what: str) -> Dataset:
    """A labelled data set from a path (any format `gpucat train --train` reads) or from
    arrays: images (m, 64, 64, 3) or rows (m, n_features), with labels (m,) of 0 and 1.
    Integer pixels are scaled to [0, 1] (data.divisor_for); floats are taken as scaled."""
    if isinstance(data, (str, os.PathLike)):
        from gpucat.data.inputs import load_input

        return load_input(data, require_labels=True)
    if labels is None:
        raise GpucatError(f"{what}: arrays need their labels (0 for non-cat, 1 for cat).")
    return Dataset.from_arrays(data, labels, what)


def train_model(
    data=None, labels=None, *, test=None, device: str | Device | None = None, **recipe
) -> Model:
    """Train and score a model; returns it on the host, ready for ``save_model``.

    ``data``: None (the course training set, and the course test set unless ``test`` says
    otherwise), a path, or arrays with ``labels``; ``test``: a path or an (inputs, labels)
    pair. ``recipe``: TrainConfig's knobs (``iterations``, ``learning_rate``, ``dtype``, ...;
    the default is the reference recipe). ``model.metadata["result"]`` is the run's record:
    costs, accuracies, device, time per iteration."""
    from gpucat.frontends.report import run_recipe, to_model

    config = TrainConfig(**recipe)
    if data is None:
        train_set, test_set = load_course_data()
    else:
        train_set, test_set = _dataset(data, labels, "train data"), None
    if test is not None:
        test_set = _dataset(
            *((test, None) if isinstance(test, (str, os.PathLike)) else test), "test data"
        )
    chosen = device if isinstance(device, Device) else get_device(device)
    result, summary = run_recipe(chosen, config, train_set, test_set)
    return to_model(chosen, config, result, summary)
