"""gpucat: a hand-written L-layer cat classifier that runs the same code on CuPy and NumPy.

The public API, for scripts (everything else is internal)::

    >>> import gpucat
    >>> [d.name for d in gpucat.devices()][:1]  # NumPy's CPU always; CuPy's GPU where usable
    ['numpy']
    >>> model = gpucat.train_model(device="cpu")  # the reference recipe on the course data
    >>> result = model.metadata["result"]
    >>> round(result["costs"][0][1], 6), result["train_correct"], result["test_correct"]
    (0.771749, 206, 40)
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "cat.safetensors"
    >>> gpucat.save_model(path, model)
    >>> gpucat.load_model(path).layer_sizes
    [12288, 20, 7, 5, 1]

- ``train_model(data=None, labels=None, *, test=None, device=None, **recipe)``: train and score
  a model (the course data, a path, or arrays); ``TrainConfig`` lists the recipe's knobs.
- ``CatClassifier``: the same trainer as a scikit-learn estimator.
- ``devices()``, ``device(name)``: the usable devices; one by name ("auto", "cpu", "gpu").
- ``compare_devices(...)``: one recipe on every usable device and dtype (`gpucat compare`).
- ``sweep_devices(...)``: the training step over data sizes against each device's peak
  (`gpucat compare --sweep`).
- ``load_model(path)``, ``save_model(path, model)``, ``Model``: model files.
- ``GpucatError``: every error meant for a user.
"""

__version__ = "0.1.0"

# name -> module (or module and name there): imported on first use, so that `import gpucat`
# stays light (no h5py, scikit-learn or CuPy until they are needed). No public name is a
# module's.
_PUBLIC = {
    "train_model": "gpucat.frontends.api",
    "devices": "gpucat.frontends.api",
    "device": "gpucat.frontends.api",
    "CatClassifier": "gpucat.frontends.estimator",
    "compare_devices": ("gpucat.frontends.compare", "compare"),
    "sweep_devices": ("gpucat.frontends.sweep", "sweep"),
    "TrainConfig": "gpucat.config",
    "Model": "gpucat.modelfiles.model",
    "load_model": "gpucat.modelfiles.model",
    "save_model": "gpucat.modelfiles.model",
    "GpucatError": "gpucat.errors",
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str):
    if name in _PUBLIC:
        import importlib

        module, attr = _PUBLIC[name] if isinstance(_PUBLIC[name], tuple) else (_PUBLIC[name], name)
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'gpucat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
