"""The training loop, the one there is: costs read back only at logging points; validation,
early stopping, checkpoints and resume around whichever solver carries out the iterations,
on one process or many.

Three seams lead into it: the *solver* says how an iteration is computed (solvers.py), the
*reducer* how sums cross processes (reducers.py: the identity here, MPI in
distributed.py), the *data source* how examples arrive (sources.py). Every loss that
crosses processes travels as a sum with its count; means are taken after the reduction.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np

from gpucat import network, sources
from gpucat.backend import Backend
from gpucat.checkpoint import Progress, load_checkpoint, save_checkpoint
from gpucat.config import REFERENCE_LAYERS, TrainConfig
from gpucat.data import Dataset
from gpucat.errors import GpucatError, TrainingDiverged
from gpucat.network import Layer
from gpucat.reducers import LOCAL
from gpucat.solvers import choose_solver, make_solver
from gpucat.sources import (
    DeviceShard,
    TrainingSet,
    make_shard,
    mirrored,
    split_training,
    stratified_split,
    to_columns,
)

__all__ = [
    "REFERENCE_LAYERS",
    "TrainConfig",
    "TrainResult",
    "fit",
    "mirrored",
    "run_recipe",
    "stratified_split",
]


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
    first_iteration: int = 0  # where this run started: > 0 after --resume
    reduce_how: str = "one process"
    layout: str | None = None  # the NumPy direct path's product layout, chosen at setup

    @property
    def ms_per_iteration(self) -> float:
        """Training time per iteration of this run (a resumed run's own iterations only)."""
        return 1000 * self.seconds / max(self.iterations_done - self.first_iteration, 1)


def as_source(X, Y=None):
    """A data source from a source (returned as it is) or from host arrays X (n_x, m) of
    inputs already scaled and Y (1, m): examples as rows, divisor 1."""
    if Y is None:
        return X
    X = np.asarray(X)
    return Dataset(X.T, np.asarray(Y, dtype=np.float64).reshape(1, -1), "arrays", divisor=1.0)


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


class _Validation:
    """This process's part of the held-out examples; their cost is reduced as a sum over
    every process with the global count, so a process holding none adds nothing."""

    def __init__(self, backend, source, rows: np.ndarray, reducer, dtype: str):
        self.backend, self.reducer, self.n = backend, reducer, rows.size
        a, b = reducer.block(rows.size, allow_empty=True)
        self.part = None
        if b > a:  # small parts as one float copy, large ones as uint8 converted per chunk
            small = (b - a) * source.n_features * np.dtype(dtype).itemsize <= 64 * 2**20
            self.part = DeviceShard(backend, TrainingSet(source, rows[a:b]), 0, b - a, dtype, small)

    def cost(self, params: list[Layer]) -> float:
        xp, local = self.backend.xp, 0.0
        if self.part is not None:
            for X, Y in self.part.chunks():
                _, caches = network.forward(xp, params, X)
                local = local + network.loss_sum_from_logits(xp, caches[-1][1], Y)
            local = self.backend.scalar(local)  # host sync, once per log point
        (total,) = self.reducer.sum_scalars(local)
        return total / self.n


def fit(
    backend: Backend,
    config: TrainConfig,
    X,
    Y=None,
    *,
    reducer=LOCAL,
    init: list[tuple[np.ndarray, np.ndarray]] | None = None,
    on_log: Callable[[int, float, float | None], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    checkpoint: str | None = None,
    checkpoint_every: int = 0,
    resume: str | None = None,
    stop_after: int | None = None,
) -> TrainResult:
    """Train; the result's params are on the device.

    ``X`` is a data source (a ``Dataset``, see sources.py), or host inputs X (n_x, m)
    with labels Y (1, m). ``reducer`` makes this one process of a data-parallel run
    (distributed.py); every process then holds the same parameters throughout. The data and
    the initial parameters go to the device once; inside the loop the only device-to-host
    reads are the costs at logging points (and the parameters when a checkpoint is
    written). ``on_log(i, cost, validation_cost)`` reports each log point, ``on_step(i)``
    each finished iteration (a progress bar). ``resume``
    continues from a checkpoint; ``stop_after`` ends the run after that many iterations in
    total, as an interruption would (for tests).
    """
    config.check()
    source = as_source(X, Y)
    if source.n_features != config.layers[0]:
        raise GpucatError(
            f"the data has {source.n_features} features per example but --layers starts with "
            f"{config.layers[0]}."
        )
    if checkpoint_every and not checkpoint:
        raise GpucatError("--checkpoint-every needs a --checkpoint FILE to write to.")
    train, val_rows = split_training(source, config.validation, config.flip, config.seed)
    m_total = train.size
    start, stop = reducer.block(m_total)
    full_batch = config.batch_size is None or config.batch_size >= m_total
    shard = make_shard(backend, train, start, stop, config.dtype, full_batch)
    with closing(shard):  # a streamed shard stops its reader thread at the end
        val = (
            _Validation(backend, source, val_rows, reducer, config.dtype) if val_rows.size else None
        )

        progress, best, opt_state = Progress(), None, None
        host_init = init or network.init_params(list(config.layers), config.seed)
        if resume:
            saved, host_init, opt_state, best_host, progress = load_checkpoint(resume)
            check_resume(config, saved, resume)
            best = params_to_device(backend, best_host, config.dtype) if best_host else None
        params = params_to_device(backend, host_init, config.dtype)
        needs_params = bool(config.validation or checkpoint_every or resume)
        solver_name = choose_solver(config, backend, m_total, needs_params, reducer.size)
        solver = make_solver(
            solver_name, backend, params, shard, reducer, config, m_total, progress.layout
        )
        if resume:
            try:
                solver.load_optimizer_state(
                    {
                        k: backend.asarray(v, config.dtype) if isinstance(v, np.ndarray) else v
                        for k, v in opt_state.items()
                    }
                )
            except (KeyError, TypeError, ValueError) as e:
                raise GpucatError(
                    f"{resume}: its optimizer state is incomplete ({type(e).__name__}: {e}); pass "
                    "a checkpoint written by `gpucat train --checkpoint-every N`."
                ) from None
        solver.i = progress.next_iteration

        result = TrainResult(params, solver=solver_name, reduce_how=reducer.how)
        result.layout = progress.layout = getattr(getattr(solver, "layout", None), "name", None)
        result.first_iteration = result.iterations_done = progress.next_iteration
        result.best_iteration = progress.best_iteration
        result.costs = [tuple(c) for c in progress.costs]
        result.val_costs = [tuple(c) for c in progress.val_costs]
        last = config.iterations if stop_after is None else min(stop_after, config.iterations)
        backend.synchronize()
        start_time = time.perf_counter()
        for i in range(progress.next_iteration, last):
            log_point = config.is_log_point(i)
            val_cost = None
            if log_point and val is not None:
                current = solver.parameters()  # before this iteration's update
                val_cost = val.cost(current)
                if progress.best_cost is None or val_cost < progress.best_cost:
                    progress.best_cost, progress.best_iteration, progress.bad_log_points = (
                        val_cost,
                        i,
                        0,
                    )
                    best = [Layer(backend.copy(p.W), backend.copy(p.b)) for p in current]
                else:
                    progress.bad_log_points += 1
            out = solver.step(want_cost=log_point)
            if out is not None:
                loss_sum, penalty = out
                (total,) = reducer.sum_scalars(
                    backend.scalar(loss_sum)
                )  # host sync, log points only
                cost = (total + (backend.scalar(penalty) if penalty is not None else 0.0)) / m_total
                check_cost(
                    cost, result.costs[0][1] if result.costs else cost, i, config.learning_rate
                )
                result.costs.append((i, cost))
                if val_cost is not None:
                    result.val_costs.append((i, val_cost))
                if on_log:
                    on_log(i, cost, val_cost)
            result.iterations_done = i + 1
            if on_step:
                on_step(i)
            if checkpoint_every and (i + 1) % checkpoint_every == 0 and reducer.is_root:
                progress.next_iteration = i + 1
                progress.costs, progress.val_costs = result.costs, result.val_costs
                _write_checkpoint(checkpoint, backend, config, solver, best, progress)
            if config.patience and progress.bad_log_points >= config.patience:
                result.stopped_early = True
                break
        result.params = solver.parameters()
        if val is not None and not result.stopped_early:
            # the final update's parameters compete too (iteration number: one past the last)
            final = val.cost(result.params)
            if progress.best_cost is None or final < progress.best_cost:
                progress.best_cost, progress.best_iteration, best = (
                    final,
                    result.iterations_done,
                    None,
                )
        if best is not None:
            result.params = best  # restore the parameters with the best validation cost
        result.best_iteration = progress.best_iteration
        backend.synchronize()
        result.seconds = time.perf_counter() - start_time
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
        "first_iteration": result.first_iteration,
        "final_cost": result.costs[-1][1],
        "seconds": result.seconds,
        "ms_per_iteration": result.ms_per_iteration,
        "reduce": result.reduce_how,
        "layout": result.layout,
    }


def run_recipe(
    backend: Backend,
    config: TrainConfig,
    train_set,
    test_set=None,
    on_log: Callable[[int, float, float | None], None] | None = None,
    reducer=LOCAL,
    **fit_options,
) -> tuple[TrainResult, dict]:
    """Train on train_set and score it (and test_set, when given) on every process of the
    run; returns the result and a JSON-ready summary, the same on every process."""
    result = fit(backend, config, train_set, on_log=on_log, reducer=reducer, **fit_options)
    summary = summarize(backend, config, result)
    summary["processes"] = reducer.size
    # hidden layers whose units are all inactive on every training image
    summary["dead_layers"] = dead_layers(backend, result.params, train_set, config.dtype, reducer)
    for name, ds in (("train", train_set), ("test", test_set)):
        if ds is None:
            continue
        correct, n, nonfinite = score(backend, result.params, ds, config.dtype, reducer)
        if nonfinite:
            raise TrainingDiverged(
                "training diverged: the trained model predicts NaN; try a smaller --learning-rate."
            )
        summary.update(
            {f"{name}_accuracy": correct / n, f"{name}_correct": correct, f"{name}_examples": n}
        )
    return result, summary


def _my_columns(backend: Backend, source, dtype: str, reducer):
    """This process's contiguous part of a source, as device columns, chunk by chunk."""
    a, b = reducer.block(source.n, allow_empty=True)
    size = sources.CHUNK
    for lo in range(a, b, size):
        rows, y = source.read(np.arange(lo, min(lo + size, b)))
        yield to_columns(backend, rows, dtype, source.divisor), y


def score(backend: Backend, params: list[Layer], source, dtype: str, reducer=LOCAL):
    """(correct, examples, non-finite predictions) over the whole source: each process
    scores its part, the counts are summed over processes."""
    correct = bad = 0
    for X, y in _my_columns(backend, source, dtype, reducer):
        p = backend.to_host(network.predict_proba(backend.xp, params, X)).reshape(-1)
        correct += accuracy(p, y)[1]
        bad += int(np.sum(~np.isfinite(p)))
    correct, bad = reducer.sum_scalars(correct, bad)
    return int(correct), source.n, int(bad)


def dead_layers(backend: Backend, params: list[Layer], source, dtype: str, reducer=LOCAL):
    """1-based numbers of the hidden layers that are inactive for every example of the
    source, on every process (see network.dead_layers)."""
    alive = np.zeros(len(params) - 1)
    for X, _ in _my_columns(backend, source, dtype, reducer):
        flags = network.dead_layers(backend.xp, params, X)
        if flags is not None:
            alive += 1 - backend.to_host(flags).astype(np.float64)
    alive = reducer.sum_scalars(*alive)
    return [l + 1 for l, a in enumerate(alive) if a == 0]


def predict_proba(backend: Backend, params: list[Layer], X, dtype: str) -> np.ndarray:
    """Cat probabilities for every example of a source (or of host columns X), on the host,
    shape (m,); computed chunk by chunk so that a large set never sits on the device whole."""
    source = as_source(X, np.zeros(np.shape(X)[1])) if isinstance(X, np.ndarray) else X
    out = [
        backend.to_host(network.predict_proba(backend.xp, params, Xc)).reshape(-1)
        for Xc, _ in _my_columns(backend, source, dtype, LOCAL)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def accuracy(probabilities: np.ndarray, Y_host: np.ndarray) -> tuple[float, int]:
    """Fraction and count of examples whose thresholded probability (> 0.5) equals the label."""
    correct = int(np.sum((probabilities > 0.5) == (np.asarray(Y_host).reshape(-1) > 0.5)))
    return correct / max(probabilities.size, 1), correct
