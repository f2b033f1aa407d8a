"""The training loop: full-batch gradient descent, costs read back only at logging points."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

from gpucat import network
from gpucat.backend import Backend
from gpucat.data import Dataset
from gpucat.errors import GpucatError, TrainingDiverged
from gpucat.network import Layer
from gpucat.solvers import SOLVERS, choose_solver, make_solver

REFERENCE_LAYERS = (12288, 20, 7, 5, 1)


@dataclass
class TrainConfig:
    """The knobs of one training run; the defaults are the reference recipe."""

    layers: tuple[int, ...] = REFERENCE_LAYERS
    learning_rate: float = 0.0075
    iterations: int = 2500
    seed: int = 1
    dtype: str = "float32"
    log_every: int = 100
    solver: str = "auto"  # auto, direct or gram (see solvers.py)

    def check(self) -> None:
        """Raise GpucatError for settings that cannot train."""
        if len(self.layers) < 2 or any(n < 1 for n in self.layers):
            raise GpucatError(f"--layers needs at least two positive sizes, got {self.layers}.")
        if self.layers[-1] != 1:
            raise GpucatError(
                f"--layers must end in 1 (one cat probability), got {self.layers[-1]}."
            )
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise GpucatError(
                f"--learning-rate must be a positive number, got {self.learning_rate}."
            )
        if self.iterations < 1:
            raise GpucatError(f"--iterations must be at least 1, got {self.iterations}.")
        if self.log_every < 1:
            raise GpucatError(f"--log-every must be at least 1, got {self.log_every}.")
        if self.solver not in SOLVERS:
            raise GpucatError(f"--solver must be one of {', '.join(SOLVERS)}, got {self.solver!r}.")
        if self.dtype not in ("float32", "float64"):
            raise GpucatError(f"--dtype must be float32 or float64, got {self.dtype!r}.")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["layers"] = list(self.layers)
        return d

    def is_log_point(self, i: int) -> bool:
        return i % self.log_every == 0 or i == self.iterations - 1


@dataclass
class TrainResult:
    """Trained parameters (on the device), the logged costs and the training wall time."""

    params: list[Layer]
    costs: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    solver: str = "direct"


def params_to_device(
    backend: Backend, host_params: list[tuple[np.ndarray, np.ndarray]], dtype: str
) -> list[Layer]:
    """Move host (W, b) pairs to the device, cast to the training dtype."""
    return [Layer(backend.asarray(W, dtype), backend.asarray(b, dtype)) for W, b in host_params]


def params_to_host(backend: Backend, params: list[Layer]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bring parameters back to the host (to save or compare them)."""
    return [(backend.to_host(p.W), backend.to_host(p.b)) for p in params]


def check_cost(cost: float, first: float, i: int, learning_rate: float) -> None:
    """Stop with a clear message when the cost is non-finite or has blown far past its start."""
    if not math.isfinite(cost) or cost > 10.0 * first + 1.0:
        raise TrainingDiverged(
            f"training diverged: the cost reached {cost:.6g} at iteration {i} "
            f"(it started at {first:.6g}) with learning rate {learning_rate:g}; "
            "try a smaller --learning-rate (e.g. 10x smaller). No model was saved."
        )


def fit(
    backend: Backend,
    config: TrainConfig,
    X_host: np.ndarray,
    Y_host: np.ndarray,
    *,
    init: list[tuple[np.ndarray, np.ndarray]] | None = None,
    on_log: Callable[[int, float], None] | None = None,
) -> TrainResult:
    """Train on (X, Y) with full-batch gradient descent; X (n_x, m), Y (1, m) on the host.

    The data and the initial parameters go to the device once; inside the loop the only
    device-to-host reads are the costs at logging points.
    """
    config.check()
    if X_host.shape[0] != config.layers[0]:
        raise GpucatError(
            f"the data has {X_host.shape[0]} features per example but --layers starts with "
            f"{config.layers[0]}."
        )
    X = backend.asarray(X_host, config.dtype)
    Y = backend.asarray(Y_host, config.dtype)
    params = params_to_device(
        backend, init or network.init_params(list(config.layers), config.seed), config.dtype
    )
    solver_name = choose_solver(config.solver, backend, config.layers, X_host.shape[1])
    solver = make_solver(solver_name, backend, params, X, Y, config.learning_rate)

    result = TrainResult(params, solver=solver_name)
    backend.synchronize()
    start = time.perf_counter()
    for i in range(config.iterations):
        cost_dev = solver.step(want_cost=config.is_log_point(i))
        if cost_dev is not None:
            cost = backend.scalar(cost_dev)  # host sync, at logging points only
            check_cost(cost, result.costs[0][1] if result.costs else cost, i, config.learning_rate)
            result.costs.append((i, cost))
            if on_log:
                on_log(i, cost)
    result.params = solver.parameters()
    backend.synchronize()
    result.seconds = time.perf_counter() - start
    return result


def run_recipe(
    backend: Backend,
    config: TrainConfig,
    train_set: Dataset,
    test_set: Dataset,
    on_log: Callable[[int, float], None] | None = None,
) -> tuple[TrainResult, dict]:
    """Train on train_set, score both sets; returns the result and a JSON-ready summary."""
    result = fit(backend, config, train_set.X, train_set.Y, on_log=on_log)
    summary = {
        "device": backend.label,
        "backend": backend.name,
        "dtype": config.dtype,
        "solver": result.solver,
        "layers": list(config.layers),
        "learning_rate": config.learning_rate,
        "iterations": config.iterations,
        "seed": config.seed,
        "costs": [[i, c] for i, c in result.costs],
        "final_cost": result.costs[-1][1],
        "seconds": result.seconds,
        "ms_per_iteration": 1000 * result.seconds / config.iterations,
    }
    for name, ds in (("train", train_set), ("test", test_set)):
        p = predict_proba(backend, result.params, ds.X, config.dtype)
        if not np.isfinite(p).all():
            raise TrainingDiverged(
                "training diverged: the trained model predicts NaN; try a smaller --learning-rate."
            )
        acc, correct = accuracy(p, ds.Y)
        summary.update(
            {f"{name}_accuracy": acc, f"{name}_correct": correct, f"{name}_examples": ds.m}
        )
    return result, summary


def predict_proba(
    backend: Backend, params: list[Layer], X_host: np.ndarray, dtype: str
) -> np.ndarray:
    """Cat probabilities for the columns of a host X, back on the host as shape (m,)."""
    X = backend.asarray(X_host, dtype)
    return backend.to_host(network.predict_proba(backend.xp, params, X)).reshape(-1)


def accuracy(probabilities: np.ndarray, Y_host: np.ndarray) -> tuple[float, int]:
    """Fraction and count of examples whose thresholded probability (> 0.5) equals the label."""
    correct = int(np.sum((probabilities > 0.5) == (Y_host.reshape(-1) > 0.5)))
    return correct / probabilities.size, correct
