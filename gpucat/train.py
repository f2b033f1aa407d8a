"""The training loop: costs read back only at logging points; validation, early stopping,
checkpoints and resume around whichever solver carries out the iterations."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from gpucat import network
from gpucat.backend import Backend
from gpucat.checkpoint import Progress, load_checkpoint, save_checkpoint
from gpucat.config import REFERENCE_LAYERS, TrainConfig
from gpucat.data import Dataset
from gpucat.errors import GpucatError, TrainingDiverged
from gpucat.network import Layer
from gpucat.solvers import SPLIT, choose_solver, host_rng, make_solver

__all__ = ["REFERENCE_LAYERS", "TrainConfig", "TrainResult", "fit", "run_recipe"]


@dataclass
class TrainResult:
    """Trained parameters (on the device), the logged costs and the training wall time."""

    params: list[Layer]
    costs: list[tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0
    solver: str = "direct"
    val_costs: list[tuple[int, float]] = field(default_factory=list)
    best_iteration: int | None = None
    stopped_early: bool = False
    iterations_done: int = 0


def stratified_split(Y: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, validation): each class gives round(fraction * count) examples to
    validation, chosen by a seeded shuffle; both lists keep the original order."""
    y = Y.reshape(-1) > 0.5
    rng = host_rng(seed, SPLIT, 0)
    val = []
    for cls in (False, True):
        idx = np.flatnonzero(y == cls)
        val.extend(rng.permutation(idx)[: int(round(fraction * idx.size))].tolist())
    val_idx = np.sort(np.asarray(val, dtype=np.int64))
    train_idx = np.setdiff1d(np.arange(y.size), val_idx)
    return train_idx, val_idx


def mirrored(X: np.ndarray) -> np.ndarray:
    """The images of X (columns of 64x64x3 in height-width-channel order) flipped left-right."""
    m = X.shape[1]
    return X.reshape(64, 64, 3, m)[:, ::-1, :, :].reshape(64 * 64 * 3, m)


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
    on_log: Callable[[int, float, float | None], None] | None = None,
    checkpoint: str | None = None,
    checkpoint_every: int = 0,
    resume: str | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train on (X, Y), X (n_x, m) and Y (1, m) on the host; the result's params are on the device.

    The data and the initial parameters go to the device once; inside the loop the only
    device-to-host reads are the costs at logging points (and the parameters when a
    checkpoint is written). ``on_log(i, cost, validation_cost)`` reports each log point.
    ``resume`` continues from a checkpoint; ``stop_after`` ends the run after that many
    iterations in total, as an interruption would (for tests).
    """
    config.check()
    if X_host.shape[0] != config.layers[0]:
        raise GpucatError(
            f"the data has {X_host.shape[0]} features per example but --layers starts with "
            f"{config.layers[0]}."
        )
    if checkpoint_every and not checkpoint:
        raise GpucatError("--checkpoint-every needs a --checkpoint FILE to write to.")
    X_val = Y_val = None
    if config.validation:
        train_idx, val_idx = stratified_split(Y_host, config.validation, config.seed)
        if val_idx.size == 0 or train_idx.size == 0:
            raise GpucatError(
                f"--validation {config.validation} leaves an empty training or validation set."
            )
        X_val, Y_val = X_host[:, val_idx], Y_host[:, val_idx]
        X_host, Y_host = X_host[:, train_idx], Y_host[:, train_idx]
    if config.flip:  # after the split: validation stays unaugmented
        X_host = np.concatenate([X_host, mirrored(X_host)], axis=1)
        Y_host = np.concatenate([Y_host, Y_host], axis=1)

    xp = backend.xp
    X = backend.asarray(X_host, config.dtype)
    Y = backend.asarray(Y_host, config.dtype)
    Xv = backend.asarray(X_val, config.dtype) if X_val is not None else None
    Yv = backend.asarray(Y_val, config.dtype) if Y_val is not None else None

    progress, best, opt_state = Progress(), None, None
    host_init = init or network.init_params(list(config.layers), config.seed)
    if resume:
        saved, host_init, opt_state, best_host, progress = load_checkpoint(resume)
        check_resume(config, saved, resume)
        best = params_to_device(backend, best_host, config.dtype) if best_host else None
    params = params_to_device(backend, host_init, config.dtype)
    needs_params = bool(config.validation or checkpoint_every or resume)
    solver_name = choose_solver(config, backend, X_host.shape[1], needs_params)
    solver = make_solver(solver_name, backend, params, X, Y, config)
    if opt_state:
        solver.load_optimizer_state(
            {
                k: backend.asarray(v) if isinstance(v, np.ndarray) else v
                for k, v in opt_state.items()
            }
        )
    solver.i = progress.next_iteration

    result = TrainResult(params, solver=solver_name)
    result.costs = [tuple(c) for c in progress.costs]
    result.val_costs = [tuple(c) for c in progress.val_costs]
    last = config.iterations if stop_after is None else min(stop_after, config.iterations)
    backend.synchronize()
    start = time.perf_counter()
    for i in range(progress.next_iteration, last):
        log_point = config.is_log_point(i)
        val_cost = None
        if log_point and Xv is not None:
            current = solver.parameters()  # before this iteration's update
            _, caches = network.forward(xp, current, Xv)
            val_cost = backend.scalar(network.cost_from_logits(xp, caches[-1][1], Yv))  # host sync
            if progress.best_cost is None or val_cost < progress.best_cost:
                progress.best_cost, progress.best_iteration, progress.bad_log_points = (
                    val_cost,
                    i,
                    0,
                )
                best = [Layer(backend.copy(p.W), backend.copy(p.b)) for p in current]
            else:
                progress.bad_log_points += 1
        cost_dev = solver.step(want_cost=log_point)
        if cost_dev is not None:
            cost = backend.scalar(cost_dev)  # host sync, at logging points only
            check_cost(cost, result.costs[0][1] if result.costs else cost, i, config.learning_rate)
            result.costs.append((i, cost))
            if val_cost is not None:
                result.val_costs.append((i, val_cost))
            if on_log:
                on_log(i, cost, val_cost)
        if checkpoint_every and (i + 1) % checkpoint_every == 0:
            progress.next_iteration = i + 1
            progress.costs, progress.val_costs = result.costs, result.val_costs
            _write_checkpoint(checkpoint, backend, config, solver, best, progress)
        if config.patience and progress.bad_log_points >= config.patience:
            result.stopped_early = True
            break
    result.iterations_done = solver.i
    result.params = solver.parameters()
    if Xv is not None and not result.stopped_early:
        # the final update's parameters compete too (iteration number: one past the last)
        _, caches = network.forward(xp, result.params, Xv)
        final = backend.scalar(network.cost_from_logits(xp, caches[-1][1], Yv))
        if progress.best_cost is None or final < progress.best_cost:
            progress.best_cost, progress.best_iteration, best = final, solver.i, None
    if best is not None:
        result.params = best  # restore the parameters with the best validation cost
    result.best_iteration = progress.best_iteration
    backend.synchronize()
    result.seconds = time.perf_counter() - start
    return result


def _write_checkpoint(path, backend, config, solver, best, progress) -> None:
    host = lambda a: backend.to_host(a) if not isinstance(a, (int, float)) else a  # noqa: E731
    save_checkpoint(
        path,
        config.to_dict(),
        params_to_host(backend, solver.parameters()),
        {k: host(v) for k, v in solver.optimizer_state().items()},
        params_to_host(backend, best) if best else None,
        progress,
    )


def check_resume(config: TrainConfig, saved: dict, path: str) -> None:
    """A resumed run must use the recipe it was started with (the length may change)."""
    now = config.to_dict()
    diff = [k for k in now if k not in ("iterations", "log_every") and now[k] != saved.get(k)]
    if diff:
        shown = ", ".join(f"{k}={saved.get(k)!r} (now {now[k]!r})" for k in diff)
        raise GpucatError(
            f"{path}: this checkpoint was made with a different recipe: {shown}; resume with "
            "the same settings, or start afresh without --resume."
        )


def summarize(backend: Backend, config: TrainConfig, result: TrainResult) -> dict:
    """The JSON-ready record of a run: recipe, device, logged costs, timing."""
    return {
        "device": backend.label,
        "backend": backend.name,
        "dtype": config.dtype,
        "solver": result.solver,
        "layers": list(config.layers),
        "learning_rate": config.learning_rate,
        "iterations": config.iterations,
        "seed": config.seed,
        "costs": [[i, c] for i, c in result.costs],
        "validation_costs": [[i, c] for i, c in result.val_costs],
        "best_iteration": result.best_iteration,
        "stopped_early": result.stopped_early,
        "iterations_done": result.iterations_done,
        "final_cost": result.costs[-1][1],
        "seconds": result.seconds,
        "ms_per_iteration": 1000 * result.seconds / max(result.iterations_done, 1),
    }


def run_recipe(
    backend: Backend,
    config: TrainConfig,
    train_set: Dataset,
    test_set: Dataset,
    on_log: Callable[[int, float, float | None], None] | None = None,
    **fit_options,
) -> tuple[TrainResult, dict]:
    """Train on train_set, score both sets; returns the result and a JSON-ready summary."""
    result = fit(backend, config, train_set.X, train_set.Y, on_log=on_log, **fit_options)
    summary = summarize(backend, config, result)
    flags = network.dead_layers(
        backend.xp, result.params, backend.asarray(train_set.X, config.dtype)
    )
    dead = [] if flags is None else [l + 1 for l, f in enumerate(backend.to_host(flags)) if f]
    summary["dead_layers"] = dead  # hidden layers whose units are all inactive on every image
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
