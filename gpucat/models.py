"""Model files: safetensors with metadata (gpucat's own) and the original program's JSON.

A model is host data: ``Model.params`` is a list of (W, b) NumPy pairs, first layer first.
Saving is atomic (a temp file in the same folder, then a rename), so an interrupted or
failed save never damages an existing file. Loading checks every shape.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpucat import __version__
from gpucat.errors import GpucatError

PREPROCESSING = "RGB 64x64, flattened height-width-channel to 12288 values, divided by 255"


@dataclass
class Model:
    """Trained parameters on the host plus what is known of how they were made."""

    params: list[tuple[np.ndarray, np.ndarray]]
    metadata: dict = field(default_factory=dict)

    @property
    def layer_sizes(self) -> list[int]:
        return [self.params[0][0].shape[1]] + [W.shape[0] for W, _ in self.params]


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write bytes to path through a temp file in the same folder and an atomic rename."""
    path = Path(path)
    if path.parent and not path.parent.is_dir():
        raise GpucatError(f"{path}: the folder {path.parent} does not exist; create it first.")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_shapes(params: list[tuple[np.ndarray, np.ndarray]], source: str) -> None:
    """Every W is (n_l, n_{l-1}) chaining to the next layer, every b is (n_l, 1), finite."""
    if not params:
        raise GpucatError(f"{source}: the model has no layers.")
    n_prev = params[0][0].shape[1] if params[0][0].ndim == 2 else None
    for l, (W, b) in enumerate(params, start=1):
        if W.ndim != 2 or W.shape[1] != n_prev:
            raise GpucatError(
                f"{source}: W{l} has shape {W.shape}, expected ({W.shape[0] if W.ndim else '?'}, "
                f"{n_prev}) to follow the previous layer."
            )
        if b.shape != (W.shape[0], 1):
            raise GpucatError(f"{source}: b{l} has shape {b.shape}, expected ({W.shape[0]}, 1).")
        if not (np.isfinite(W).all() and np.isfinite(b).all()):
            raise GpucatError(f"{source}: layer {l} holds NaN or infinite values.")
        n_prev = W.shape[0]
    if params[-1][0].shape[0] != 1:
        raise GpucatError(
            f"{source}: the last layer must have 1 output, has {params[-1][0].shape[0]}."
        )


def save_safetensors(path: str | os.PathLike, model: Model) -> None:
    """Save as safetensors: tensors W1, b1, ... and the metadata as JSON under "gpucat"."""
    from safetensors.numpy import save

    check_shapes(model.params, str(path))
    tensors = {}
    for l, (W, b) in enumerate(model.params, start=1):
        tensors[f"W{l}"] = np.ascontiguousarray(W)
        tensors[f"b{l}"] = np.ascontiguousarray(b)
    meta = {
        "layer_sizes": model.layer_sizes,
        "activations": ["relu"] * (len(model.params) - 1) + ["sigmoid"],
        "dtype": str(model.params[0][0].dtype),
        "preprocessing": PREPROCESSING,
        "gpucat_version": __version__,
        **model.metadata,
    }
    atomic_write(path, save(tensors, metadata={"gpucat": json.dumps(meta)}))


def _layers_from_keys(
    tensors: dict[str, np.ndarray], source: str
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W1, b1), (W2, b2), ... from a name -> array mapping, with a clear error for gaps."""
    n = sum(1 for k in tensors if k.startswith("W"))
    expected = {f"{p}{l}" for l in range(1, n + 1) for p in "Wb"}
    if n == 0 or set(tensors) != expected:
        raise GpucatError(
            f"{source}: expected keys W1, b1, ..., WL, bL; found {sorted(tensors)[:8]}."
        )
    params = [(tensors[f"W{l}"], tensors[f"b{l}"]) for l in range(1, n + 1)]
    check_shapes(params, source)
    return params


def load_safetensors(path: Path) -> Model:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta_text = (f.metadata() or {}).get("gpucat", "{}")
    except Exception as e:  # safetensors raises its own SafetensorError for damaged files
        raise GpucatError(f"{path}: not a readable safetensors model ({e}).") from None
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError:
        meta = {}
    return Model(_layers_from_keys(tensors, str(path)), meta)


def load_seed_json(path: Path) -> Model:
    """The original program's model file: {"W1": {"v": 1, "dim": [r, c], "data": [...]}, ...}."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise GpucatError(f"{path}: not valid JSON ({e}); is this a model file?") from None
    if not isinstance(doc, dict) or not doc:
        raise GpucatError(
            f"{path}: a JSON model must be an object with keys W1, b1, ...; this is not a model."
        )
    tensors = {}
    for key, value in doc.items():
        try:
            rows, cols = (int(d) for d in value["dim"])
            arr = np.asarray(value["data"], dtype=np.float64).astype(
                np.float32
            )  # the format is f32
            tensors[key] = arr.reshape(rows, cols)
        except (TypeError, KeyError, ValueError) as e:
            raise GpucatError(
                f"{path}: entry {key!r} is not a serialized matrix "
                f'{{"v": 1, "dim": [rows, cols], "data": [...]}} ({type(e).__name__}: {e}); '
                "this is not a gpucat or original-program model."
            ) from None
    return Model(_layers_from_keys(tensors, str(path)), {"format": "seed-json"})


def save_seed_json(path: str | os.PathLike, model: Model) -> None:
    """Export in the original program's JSON format: float32 values, row-major, each
    written in the shortest form that reads back to the same float32."""
    check_shapes(model.params, str(path))
    parts = []
    for l, (W, b) in enumerate(model.params, start=1):
        for name, a in ((f"W{l}", W), (f"b{l}", b)):
            a32 = np.asarray(a, dtype=np.float32)
            numbers = ",".join(str(v) for v in a32.ravel())
            parts.append(
                f'"{name}":{{"v":1,"dim":[{a32.shape[0]},{a32.shape[1]}],"data":[{numbers}]}}'
            )
    atomic_write(path, ("{" + ",".join(parts) + "}").encode("utf-8"))


def _is_safetensors(head: bytes) -> bool:
    if len(head) < 9:
        return False
    (n,) = struct.unpack("<Q", head[:8])
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def load_model(path: str | os.PathLike) -> Model:
    """Load either format, told apart by content rather than by the file name."""
    path = Path(path)
    if not path.is_file():
        raise GpucatError(f"{path}: no such model file; train one with `gpucat train --out FILE`.")
    with open(path, "rb") as f:
        head = f.read(16)
    if _is_safetensors(head):
        return load_safetensors(path)
    if head.lstrip()[:1] in (b"{", b"["):
        return load_seed_json(path)
    raise GpucatError(
        f"{path}: neither a safetensors nor a JSON model file; pass a file written by "
        "`gpucat train --out` or by the original program."
    )


def save_model(path: str | os.PathLike, model: Model) -> None:
    """Save by extension: .json writes the original program's format, anything else safetensors."""
    if str(path).lower().endswith(".json"):
        save_seed_json(path, model)
    else:
        save_safetensors(path, model)
