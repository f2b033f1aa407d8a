"""Checkpoints: everything a resumed run needs to end exactly where an uninterrupted one would.

One safetensors file (written atomically: a temporary file, fsync, rename, so a run killed
while writing leaves the previous checkpoint whole): the parameters, the optimizer's state,
the best parameters so far (early stopping), and as metadata the recipe, the next
iteration, the logged costs and the early-stopping state. The random
streams are counter-based (sources.host_rng), so the iteration number is their whole state.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gpucat import __version__
from gpucat.errors import GpucatError
from gpucat.files import atomic_write

FORMAT = "gpucat-checkpoint-2"


@dataclass
class Progress:
    """Where training stands: what the loop needs besides parameters and optimizer state."""

    next_iteration: int = 0
    costs: list = field(default_factory=list)  # [iteration, cost] at the log points
    val_costs: list = field(default_factory=list)  # [iteration, cost] at the validations
    best_cost: float | None = None
    best_iteration: int | None = None
    bad_validations: int = 0  # validations since the best one (early stopping)
    stopped_early: bool = False
    solver: str | None = None  # the solver that ran (auto resolved): a resumed run keeps it
    # each iteration's summed batch loss since the last log point, and the examples they
    # cover: a log point reports their mean, summed at once (fsum), so that when they were
    # read (log points, checkpoints, blocks) cannot change the rounding
    since_log: list = field(default_factory=lambda: [[], 0])
    first_loss: float | None = None  # iteration 0's mean loss: the divergence rule's yardstick


def save_checkpoint(
    path: str | os.PathLike,
    config: dict,
    params: list[tuple[np.ndarray, np.ndarray]],
    optimizer_state: dict,
    best_params: list[tuple[np.ndarray, np.ndarray]] | None,
    progress: Progress,
) -> None:
    from safetensors.numpy import save

    tensors, counters = {}, {}
    for l, (W, b) in enumerate(params, start=1):
        tensors[f"param.W{l}"], tensors[f"param.b{l}"] = W, b
    for l, (W, b) in enumerate(best_params or [], start=1):
        tensors[f"best.W{l}"], tensors[f"best.b{l}"] = W, b
    for k, v in optimizer_state.items():
        if isinstance(v, np.ndarray):
            tensors[f"opt.{k}"] = v
        else:
            counters[k] = v
    meta = {
        "format": FORMAT,
        "gpucat_version": __version__,
        "config": config,
        "progress": progress.__dict__,
        "optimizer_counters": counters,
    }
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    atomic_write(path, save(tensors, metadata={"gpucat_checkpoint": json.dumps(meta)}))


def load_checkpoint(path: str | os.PathLike):
    """(config dict, params, optimizer state, best params or None, Progress), each checked
    against the recipe the checkpoint records: anything malformed is a GpucatError."""
    from safetensors import safe_open

    from gpucat.config import TrainConfig
    from gpucat.modelfiles.model import check_shapes

    path = Path(path)
    if not path.is_file():
        raise GpucatError(f"{path}: no such checkpoint file.")
    hint = "pass a file written by `gpucat train --checkpoint FILE`."
    try:
        with safe_open(str(path), framework="np") as f:
            meta = json.loads((f.metadata() or {})["gpucat_checkpoint"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise GpucatError(
            f"{path}: not a gpucat checkpoint ({type(e).__name__}: {e}); {hint}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GpucatError(f"{path}: unknown checkpoint format; {hint}")
    try:
        config = TrainConfig.from_dict(meta["config"])
        recorded = dict(meta["progress"])
        recorded.pop("layout", None)  # NumPy's product layout, chosen by timing before 0.1.0
        progress = Progress(**recorded)
        if not isinstance(progress.since_log[0], list):  # written before 0.1.0's packaging
            progress.since_log[0] = [progress.since_log[0]]
        counters = dict(meta.get("optimizer_counters", {}))
        if not (0 <= int(progress.next_iteration) and all(len(c) == 2 for c in progress.costs)):
            raise ValueError("the progress record is out of range")
    except GpucatError as e:
        raise GpucatError(f"{path}: the recorded recipe is invalid ({e}); {hint}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise GpucatError(
            f"{path}: a damaged checkpoint ({type(e).__name__}: {e}); {hint}"
        ) from None

    def layers(prefix):
        n = sum(1 for k in tensors if k.startswith(prefix + "W"))
        try:
            out = [(tensors[f"{prefix}W{l}"], tensors[f"{prefix}b{l}"]) for l in range(1, n + 1)]
        except KeyError as e:
            raise GpucatError(f"{path}: tensor {e} is missing; {hint}") from None
        if out:
            check_shapes(out, str(path), config.layers[0])
            sizes = [config.layers[0]] + [W.shape[0] for W, _ in out]
            if tuple(sizes) != tuple(config.layers):
                raise GpucatError(
                    f"{path}: its {prefix[:-1]} tensors have layer sizes {sizes}, its recipe "
                    f"{list(config.layers)}; {hint}"
                )
        return out

    params = layers("param.")
    if not params:
        raise GpucatError(f"{path}: the checkpoint holds no parameters; {hint}")
    best = layers("best.") or None
    opt = {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}
    shapes = {
        f"{p}{l}": a.shape for l, (W, b) in enumerate(params, 1) for p, a in (("W", W), ("b", b))
    }
    for k, v in opt.items():
        if k.startswith("solver."):  # a solver's own state (Gram's C, ...): shapes of its own
            continue
        if k.split(".")[-1] not in shapes or v.shape != shapes[k.split(".")[-1]]:
            raise GpucatError(f"{path}: optimizer state {k!r} does not fit the parameters; {hint}")
    opt.update(counters)
    return meta["config"], params, opt, best, progress
