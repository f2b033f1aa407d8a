"""Checkpoints: everything a resumed run needs to end exactly where an uninterrupted one would.

One safetensors file (written atomically: a temporary file, fsync, rename, so a run killed
while writing leaves the previous checkpoint whole): the parameters, the optimizer's state,
the best parameters so far (early stopping), and as metadata the recipe, the next
iteration, the logged costs and the early-stopping state. The random
streams are counter-based (batches.host_rng), so the iteration number is their whole state.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpucat import __version__
from gpucat.config import OBSERVERS, TrainConfig
from gpucat.errors import GpucatError
from gpucat.files import atomic_write
from gpucat.nn.network import params_to_host

FORMAT = "gpucat-checkpoint-2"


@dataclass
class RunState:
    """Where a run stands, all of it: what a checkpoint stores, the cost log's record (the
    logged costs, the losses since the last log point, the first loss) and what the result
    reports. The loop, the cost log and validation write into it; nothing is copied back."""

    next_iteration: int = 0
    costs: list = field(default_factory=list)  # [iteration, cost] at the log points
    val_costs: list = field(default_factory=list)  # [iteration, cost] at the validations
    best_cost: float | None = None
    best_iteration: int | None = None
    bad_validations: int = 0  # validations in a row without a better cost (early stopping)
    stopped_early: bool = False
    solver: str | None = None  # the solver that ran (auto resolved): a resumed run keeps it
    # each iteration's summed batch loss since the last log point, and the examples they
    # cover: a log point reports their mean, summed at once (fsum), so that when they were
    # read (log points, checkpoints, blocks) cannot change the rounding
    since_log: list = field(default_factory=lambda: [[], 0])
    first_loss: float | None = None  # iteration 0's mean loss: the divergence rule's yardstick


@dataclass
class Saved:
    """What a checkpoint holds, checked: the recipe (as recorded), the parameters, the
    optimizer's state, the best parameters so far, and the run's state."""

    config: dict
    params: list[tuple[np.ndarray, np.ndarray]]
    optimizer: dict[str, Any]
    best: list[tuple[np.ndarray, np.ndarray]] | None
    state: RunState


HINT = "pass a file written by `gpucat train --checkpoint FILE`."


def save_checkpoint(path, device, config: TrainConfig, solver, best, state: RunState) -> None:
    """Write the run as it stands: the solver's parameters and optimizer state, the best
    parameters, the recipe and the run's state (the end's own log point left out: a longer
    run would not log there), atomically."""
    from safetensors.numpy import save

    tensors, counters = {}, {}
    for prefix, layers in (("param.", solver.parameters()), ("best.", best or [])):
        for l, (W, b) in enumerate(params_to_host(device, layers), start=1):
            tensors[f"{prefix}W{l}"], tensors[f"{prefix}b{l}"] = W, b
    for k, v in solver.optimizer_state().items():
        if isinstance(v, (int, float)):
            counters[k] = v
        else:
            tensors[f"opt.{k}"] = device.to_host(v)
    costs, last = state.costs, config.iterations - 1
    if costs and costs[-1][0] == last and last % config.log_every:
        costs = costs[:-1]
    meta = {
        "format": FORMAT,
        "gpucat_version": __version__,
        "config": config.to_dict(),
        "progress": {**state.__dict__, "costs": costs},
        "optimizer_counters": counters,
    }
    tensors = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    atomic_write(path, save(tensors, metadata={"gpucat_checkpoint": json.dumps(meta)}))


def load_checkpoint(path: str | os.PathLike) -> Saved:
    """A checkpoint's content, each part checked against the recipe the checkpoint records:
    anything malformed is a GpucatError saying so."""
    path = Path(path)
    meta, tensors = _read(path)
    config, state, counters = _recorded(path, meta)
    params = _layers(path, tensors, "param.", config)
    if not params:
        raise GpucatError(f"{path}: the checkpoint holds no parameters; {HINT}")
    best = _layers(path, tensors, "best.", config) or None
    opt = {k[4:]: v for k, v in tensors.items() if k.startswith("opt.")}
    shapes = {f"{p}{l}": a.shape for l, pair in enumerate(params, 1) for p, a in zip("Wb", pair)}
    for k, v in opt.items():
        if k.startswith("solver."):  # a solver's own state (Gram's C, ...): shapes of its own
            continue
        if k.split(".")[-1] not in shapes or v.shape != shapes[k.split(".")[-1]]:
            raise GpucatError(f"{path}: optimizer state {k!r} does not fit the parameters; {HINT}")
    return Saved(meta["config"], params, {**opt, **counters}, best, state)


def _read(path: Path) -> tuple[dict, dict]:
    """(the metadata, the tensors) of a gpucat checkpoint file."""
    from safetensors import safe_open

    if not path.is_file():
        raise GpucatError(f"{path}: no such checkpoint file.")
    try:
        with safe_open(str(path), framework="np") as f:
            meta = json.loads((f.metadata() or {})["gpucat_checkpoint"])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:
        raise GpucatError(
            f"{path}: not a gpucat checkpoint ({type(e).__name__}: {e}); {HINT}"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise GpucatError(f"{path}: unknown checkpoint format; {HINT}")
    return meta, tensors


def _recorded(path: Path, meta: dict) -> tuple[TrainConfig, RunState, dict]:
    """The recipe, the run's state and the optimizer's counters a checkpoint records; the
    state as older versions wrote it too."""
    try:
        config = TrainConfig.from_dict(meta["config"])
        recorded = dict(meta["progress"])
        recorded.pop("layout", None)  # NumPy's product layout, chosen by timing before 0.1.0
        state = RunState(**recorded)
        if not isinstance(state.since_log[0], list):  # written before 0.1.0's packaging
            state.since_log[0] = [state.since_log[0]]
        counters = dict(meta.get("optimizer_counters", {}))
        if not (0 <= int(state.next_iteration) and all(len(c) == 2 for c in state.costs)):
            raise ValueError("the progress record is out of range")
    except GpucatError as e:
        raise GpucatError(f"{path}: the recorded recipe is invalid ({e}); {HINT}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise GpucatError(
            f"{path}: a damaged checkpoint ({type(e).__name__}: {e}); {HINT}"
        ) from None
    return config, state, counters


def _layers(path: Path, tensors: dict, prefix: str, config: TrainConfig) -> list:
    """The (W, b) pairs stored under ``prefix``, their shapes checked against the recipe."""
    from gpucat.modelfiles.model import check_shapes

    n = sum(1 for k in tensors if k.startswith(prefix + "W"))
    try:
        out = [(tensors[f"{prefix}W{l}"], tensors[f"{prefix}b{l}"]) for l in range(1, n + 1)]
    except KeyError as e:
        raise GpucatError(f"{path}: tensor {e} is missing; {HINT}") from None
    if out:
        check_shapes(out, str(path), config.layers[0])
        sizes = [config.layers[0]] + [W.shape[0] for W, _ in out]
        if tuple(sizes) != tuple(config.layers):
            raise GpucatError(
                f"{path}: its {prefix[:-1]} tensors have layer sizes {sizes}, its recipe "
                f"{list(config.layers)}; {HINT}"
            )
    return out


def check_resume(config: TrainConfig, saved: dict, path: str) -> None:
    """A resumed run must use the recipe it was started with; what only observes it (the
    length, the log interval, --full-cost) may change."""
    now = config.to_dict()
    diff = [k for k in now if k not in OBSERVERS and now[k] != saved.get(k)]
    if diff:
        shown = ", ".join(f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in diff)
        raise GpucatError(
            f"{path}: this checkpoint was made with a different recipe: {shown}; resume with "
            "the same settings, or start afresh without --resume."
        )


def restore_optimizer(solver, device, dtype: str, state: dict, path) -> None:
    """The solver's optimizer state as saved: per-parameter state in the training dtype, the
    solver's own (Gram's) as it was written."""
    try:
        solver.load_optimizer_state(
            {
                k: device.asarray(v, None if k.startswith("solver.") else dtype)
                if isinstance(v, np.ndarray)
                else v
                for k, v in state.items()
            }
        )
    except (KeyError, TypeError, ValueError) as e:
        raise GpucatError(
            f"{path}: its optimizer state is incomplete ({type(e).__name__}: {e}); pass a "
            "checkpoint written by `gpucat train --checkpoint FILE` with this recipe."
        ) from None
