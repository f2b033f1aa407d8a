"""Model files: safetensors with metadata (gpucat's own) and the original program's JSON.

A model is host data: ``Model.params`` is a list of (W, b) NumPy pairs, first layer first.
Saving is atomic (a temp file in the same folder, then a rename), so an interrupted or
failed save never damages an existing file. Loading checks every shape.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpucat import __version__
from gpucat.data.dataset import N_FEATURES
from gpucat.errors import GpucatError
from gpucat.files import atomic_write

PREPROCESSING = "RGB 64x64, flattened height-width-channel to 12288 values, divided by 255"


@dataclass
class Model:
    """Trained parameters on the host plus what is known of how they were made."""

    params: list[tuple[np.ndarray, np.ndarray]]
    metadata: dict = field(default_factory=dict)

    @property
    def layer_sizes(self) -> list[int]:
        return [self.params[0][0].shape[1]] + [W.shape[0] for W, _ in self.params]


def check_shapes(
    params: list[tuple[np.ndarray, np.ndarray]], source: str, n_inputs: int | None = N_FEATURES
) -> None:
    """Float layers that chain: every W is (n_l, n_{l-1}) with sizes >= 1, from ``n_inputs``
    inputs (None: any) to 1 output, every b is (n_l, 1), every value finite."""
    if not params:
        raise GpucatError(f"{source}: the model has no layers.")
    n_prev = n_inputs
    for l, (W, b) in enumerate(params, start=1):
        for name, a in ((f"W{l}", W), (f"b{l}", b)):
            if not np.issubdtype(a.dtype, np.floating):
                raise GpucatError(
                    f"{source}: {name} holds {a.dtype} values; weights must be floats."
                )
        if W.ndim != 2 or min(W.shape) < 1:
            raise GpucatError(
                f"{source}: W{l} has shape {W.shape}; it must be a matrix of sizes >= 1."
            )
        if n_prev is not None and W.shape[1] != n_prev:
            raise GpucatError(
                f"{source}: W{l} has shape {W.shape}, expected ({W.shape[0]}, {n_prev}) to "
                + (
                    "take the 12288 values of a 64x64 RGB image."
                    if l == 1
                    else "follow the previous layer."
                )
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


def check_metadata(meta: dict, params, source: str) -> None:
    """What a file's metadata says must agree with its tensors: they, not it, define the model."""
    sizes = [params[0][0].shape[1]] + [W.shape[0] for W, _ in params]
    if "layer_sizes" in meta and meta["layer_sizes"] != sizes:
        raise GpucatError(
            f"{source}: its metadata says layer sizes {meta['layer_sizes']} but its tensors "
            f"are {sizes}; the file is inconsistent."
        )
    want = ["relu"] * (len(params) - 1) + ["sigmoid"]
    if "activations" in meta and meta["activations"] != want:
        raise GpucatError(
            f"{source}: its metadata asks for activations {meta['activations']}; gpucat "
            f"networks have ReLU hidden layers and a sigmoid output ({want})."
        )


def save_safetensors(path: str | os.PathLike, model: Model) -> None:
    """Save as safetensors: tensors W1, b1, ... and the metadata as JSON under "gpucat"."""
    from safetensors.numpy import save

    check_shapes(model.params, str(path), None)
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
    tensors: dict[str, np.ndarray], source: str, n_inputs: int | None = N_FEATURES
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(W1, b1), (W2, b2), ... from a name -> array mapping, with a clear error for gaps."""
    n = sum(1 for k in tensors if k.startswith("W"))
    expected = {f"{p}{l}" for l in range(1, n + 1) for p in "Wb"}
    if n == 0 or set(tensors) != expected:
        raise GpucatError(
            f"{source}: expected keys W1, b1, ..., WL, bL; found {sorted(tensors)[:8]}."
        )
    params = [(tensors[f"W{l}"], tensors[f"b{l}"]) for l in range(1, n + 1)]
    check_shapes(params, source, n_inputs)
    return params


def load_safetensors(path: Path, n_inputs: int | None = N_FEATURES) -> Model:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="np") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            header = f.metadata() or {}
    except Exception as e:  # safetensors raises its own SafetensorError for damaged files
        raise GpucatError(f"{path}: not a readable safetensors model ({e}).") from None
    if "gpucat_checkpoint" in header:
        raise GpucatError(
            f"{path} is a training checkpoint (written by --checkpoint), not a model; make a "
            f"model of it with `gpucat train --resume {path} --out model.safetensors` (a "
            "finished run saves at once), and pass that."
        )
    meta_text = header.get("gpucat", "{}")
    try:
        meta = json.loads(meta_text)
    except json.JSONDecodeError:
        meta = {}
    meta = meta if isinstance(meta, dict) else {}
    params = _layers_from_keys(tensors, str(path), n_inputs)
    check_metadata(meta, params, str(path))
    return Model(params, meta)


def _matrix(key: str, value, source: str) -> np.ndarray:
    """One entry of the original JSON format, checked: {"v": 1, "dim": [r, c], "data": [...]}."""
    where = f"{source}: entry {key!r}"
    if not isinstance(value, dict) or "dim" not in value or "data" not in value:
        raise GpucatError(
            f'{where} is not a serialized matrix {{"v": 1, "dim": [rows, cols], "data": [...]}}; '
            "this is not a gpucat or original-program model."
        )
    if value.get("v", 1) != 1:
        raise GpucatError(f"{where} has format version {value.get('v')!r}; only 1 is known.")
    dim, data = value["dim"], value["data"]
    if not (
        isinstance(dim, list)
        and len(dim) == 2
        and all(isinstance(d, int) and not isinstance(d, bool) and d >= 1 for d in dim)
    ):
        raise GpucatError(f"{where}: dim must be [rows, cols] of whole numbers >= 1, got {dim!r}.")
    if not isinstance(data, list) or not all(
        isinstance(x, (int, float)) and not isinstance(x, bool) for x in data
    ):
        raise GpucatError(f"{where}: data must be a flat list of numbers.")
    if len(data) != dim[0] * dim[1]:
        raise GpucatError(
            f"{where}: dim {dim} needs {dim[0] * dim[1]} values, data has {len(data)}."
        )
    return np.asarray(data, dtype=np.float64).astype(np.float32).reshape(dim)  # the format is f32


def load_seed_json(path: Path, n_inputs: int | None = N_FEATURES) -> Model:
    """The original program's model file: {"W1": {"v": 1, "dim": [r, c], "data": [...]}, ...}."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise GpucatError(f"{path}: not valid JSON ({e}); is this a model file?") from None
    if not isinstance(doc, dict) or not doc:
        raise GpucatError(
            f"{path}: a JSON model must be an object with keys W1, b1, ...; this is not a model."
        )
    tensors = {key: _matrix(key, value, str(path)) for key, value in doc.items()}
    return Model(_layers_from_keys(tensors, str(path), n_inputs), {"format": "seed-json"})


def save_seed_json(path: str | os.PathLike, model: Model) -> None:
    """Export in the original program's JSON format: float32 values, row-major, each
    written in the shortest form that reads back to the same float32."""
    check_shapes(model.params, str(path), None)
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


def load_model(path: str | os.PathLike, n_inputs: int | None = N_FEATURES) -> Model:
    """Load either format, told apart by content rather than by the file name. The model
    must take ``n_inputs`` values (a 64x64 RGB image; None: any) and give one."""
    path = Path(path)
    if not path.is_file():
        raise GpucatError(f"{path}: no such model file; train one with `gpucat train --out FILE`.")
    with open(path, "rb") as f:
        head = f.read(16)
    if _is_safetensors(head):
        return load_safetensors(path, n_inputs)
    if head.lstrip()[:1] in (b"{", b"["):
        return load_seed_json(path, n_inputs)
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
