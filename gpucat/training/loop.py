"""The training loop, the one there is: validation on its own grid, early stopping,
checkpoints, interruptions and resume around whichever solver carries out the iterations,
on one process or many.

Three seams lead into it: the *solver* says how an iteration is computed (solvers.py), the
*reducer* how sums cross processes (reducers.py: the identity here, MPI in
distributed.py), the *data source* how examples arrive (sources.py). Every loss that
crosses processes travels as a sum with its count; means are taken after the reduction.

Observing a run never changes it: how often costs are read (``log_every``), progress bars,
JSON, checkpoints and resuming leave the parameters, the iteration a run stops at and the
reason alone. Each iteration's training loss stays on the device (``CostLog``) and is
read back in blocks, for the log and for the divergence check alike.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field

import numpy as np

from gpucat.backends import Device
from gpucat.config import OBSERVERS, TrainConfig
from gpucat.data import streaming
from gpucat.data.sources import DeviceShard, TrainingSet, split_training
from gpucat.data.streaming import make_shard
from gpucat.errors import GpucatError, TrainingDiverged
from gpucat.nn import network
from gpucat.nn.network import Layer, params_to_device, params_to_host
from gpucat.training.checkpoint import Progress, load_checkpoint, save_checkpoint
from gpucat.training.reducers import LOCAL
from gpucat.training.solvers import check_memory, choose_solver, make_solver


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
    cost_kind: str = ""  # what a logged cost is (cost_kind)
    train: TrainingSet | None = None  # the examples trained on (held-out ones excluded)
    validation: TrainingSet | None = None  # the held-out examples

    @property
    def ms_per_iteration(self) -> float:
        """Training time per iteration of this run (a resumed run's own iterations only)."""
        return 1000 * self.seconds / max(self.iterations_done - self.first_iteration, 1)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training between two iterations; ``checkpoint`` names the
    resumable checkpoint written first (None without one)."""

    def __init__(self, iteration: int, checkpoint: str | None):
        super().__init__(iteration, checkpoint)
        self.iteration, self.checkpoint = iteration, checkpoint


class _Signals:
    """While training runs in the main thread, SIGINT and SIGTERM set a flag that the loop
    reads between iterations, so that a checkpoint is written from a consistent state; a
    second signal interrupts at once."""

    def __init__(self):
        self.caught: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame):
        if self.caught is not None:
            raise KeyboardInterrupt
        self.caught = signum

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        return False


BLOW_UP, MARGIN = 100, 10  # the divergence rule: a mean loss over 100x the first one's + 10


def diverged(mean: float, first: float) -> bool:
    """The divergence rule: a mean loss that is not finite, or above a hundred times the first
    iteration's plus ten (the ten: so that a small first loss may still rise to a moderate
    one; past the limit an example's probability of its own label is below about e^-80)."""
    return not math.isfinite(mean) or mean > BLOW_UP * first + MARGIN


class CostLog:
    """What a run logs of its training loss, and all of it: every iteration's summed loss,
    written on the device and read back in blocks (at log points, before checkpoints, every
    ``SIZE`` iterations and at the end: no host sync per iteration, yet every loss is seen,
    whatever the log interval), judged by ``diverged`` against the first iteration's and
    reported with the first iteration it happened at; the losses since the last log point,
    whose mean a mini-batch log point reports (summed once, there, so that when they were
    read cannot change the rounding); and the logged (iteration, cost) pairs. ``state()``
    is what a checkpoint keeps of it, and a resumed run starts from that."""

    SIZE = 256

    def __init__(self, device: Device, reducer, dtype: str, first: int, lr: float, saved: Progress):
        self.device, self.reducer, self.lr = device, reducer, lr
        self.buffer = device.zeros((self.SIZE,), dtype)
        self.first, self.sizes = first, []  # the iteration in buffer[0]; batch sizes since
        self.last: dict[int, float] = {}  # the summed losses of the block read last
        self.costs = [list(c) for c in saved.costs]
        self.since_log, self.examples_since_log = list(saved.since_log[0]), saved.since_log[1]
        self.first_loss = saved.first_loss

    def record(self, i: int, loss, size: int) -> None:
        self.buffer[i - self.first] = loss
        self.sizes.append(size)
        if len(self.sizes) == self.SIZE:
            self.read()

    def read(self) -> None:
        """Bring the pending losses to the host (a sync point), summed over processes."""
        if not self.sizes:
            return
        host = self.device.to_host(self.buffer[: len(self.sizes)]).tolist()
        sums = self.reducer.sum_scalars(*host)
        self.last = {self.first + k: v for k, v in enumerate(sums)}
        sizes, self.sizes = self.sizes, []
        self.first += len(sizes)
        for (i, total), size in zip(self.last.items(), sizes):
            mean = total / size
            if self.first_loss is None:
                self.first_loss = mean
            if diverged(mean, self.first_loss):
                raise TrainingDiverged(
                    f"training diverged: the training loss reached {mean:.6g} at iteration {i} "
                    f"(it started at {self.first_loss:.6g}) with learning rate {self.lr:g}; try "
                    "a smaller --learning-rate (e.g. 10x smaller). No model was saved."
                )
        self.since_log.extend(sums)
        self.examples_since_log += sum(sizes)

    def log(
        self, i: int, M: int, full_batch: bool, exact: float | None, penalty: float, grid: bool
    ):
        """Log iteration i's cost: ``exact`` (--full-cost) or the training pass's mean loss
        (iteration i's for a full batch, else the batches' since the last log point), plus
        the L2 ``penalty``; on the log grid the next mean starts afresh. Returns the cost."""
        self.read()
        if exact is not None:
            cost = exact
        elif full_batch:
            cost = self.last[i] / M
        else:
            cost = math.fsum(self.since_log) / self.examples_since_log
        cost += penalty
        if grid:
            self.since_log, self.examples_since_log = [], 0
        self.costs.append([i, cost])
        return cost

    def state(self) -> dict:
        """What a checkpoint keeps (Progress's fields of the same names)."""
        return {
            "costs": [list(c) for c in self.costs],
            "since_log": [list(self.since_log), self.examples_since_log],
            "first_loss": self.first_loss,
        }


def cost_kind(config: TrainConfig, full_batch: bool) -> str:
    """What a logged cost is, in words (the JSON's ``cost_kind``)."""
    penalty = " + (λ/2M)·Σ‖W‖²" if config.l2 else ""
    if config.full_cost and (not full_batch or config.keep_prob < 1):
        return f"mean loss over the whole training set, without dropout{penalty}"
    what = "the whole training set" if full_batch else "the batches since the previous log point"
    dropout = ", with dropout" if config.keep_prob < 1 else ""
    return f"mean loss over {what} in the training pass{dropout}{penalty}"


class _Validation:
    """This process's part of the held-out examples; their cost is reduced as a sum over
    every process with the global count, so a process holding none adds nothing."""

    def __init__(self, device, source, rows: np.ndarray, reducer, dtype: str):
        self.device, self.reducer, self.n = device, reducer, rows.size
        a, b = reducer.block(rows.size, allow_empty=True)
        self.part = None
        if b > a:  # small parts as one float copy, large ones as uint8 converted per chunk
            small = (b - a) * source.n_features * np.dtype(dtype).itemsize <= 64 * 2**20
            self.part = DeviceShard(device, TrainingSet(source, rows[a:b]), 0, b - a, dtype, small)

    def cost(self, params: list[Layer]) -> float:
        local = 0.0
        if self.part is not None:  # a host sync, once per validation
            d = self.device
            local = d.scalar(network.loss_sum(d, params, self.part.chunks()))
        (total,) = self.reducer.sum_scalars(local)
        return total / self.n


def check_data(config: TrainConfig, source) -> None:
    """The data fits the recipe's input layer, or one message saying what does not."""
    if source.n_features != config.layers[0]:
        raise GpucatError(
            f"the data has {source.n_features} features per example but --layers starts with "
            f"{config.layers[0]}."
        )


def solver_for(
    device: Device,
    config: TrainConfig,
    source,
    reducer=LOCAL,
    init: list[tuple[np.ndarray, np.ndarray]] | None = None,
    progress: Progress | None = None,
):
    """(solver, training set, validation rows): the solver ``fit`` runs for this recipe on
    this source (a resumed run's ``progress`` keeps its solver), its memory
    checked, its data and parameters on the device, ready to ``step`` (``close`` it after);
    benchmarks use it to time iterations alone."""
    check_data(config, source)
    train, val_rows = split_training(source, config.validation, config.flip, config.seed)
    M = train.size
    start, stop = reducer.block(M)
    m = stop - start
    full_batch = config.batch_size is None or config.batch_size >= M
    streamed = streaming.is_streamed(device, train, m, full_batch)
    free = device.free_memory()
    chosen = progress and progress.solver
    name = chosen or choose_solver(config, free, M, m, train, device, streamed)
    check_memory(name, config, M, m, train, device, streamed, free)
    examples = name != "gram"  # the Gram solver reads X itself
    shard = make_shard(device, train, start, stop, config.dtype, full_batch, examples)
    host_init = init or network.init_params(list(config.layers), config.seed)
    params = params_to_device(device, host_init, config.dtype)
    try:
        solver = make_solver(name, device, params, shard, reducer, config, M)
    except BaseException:
        shard.close()
        raise
    device.release_staging()  # the uploads are done: host staging memory goes back
    return solver, train, val_rows


def fit(
    device: Device,
    config: TrainConfig,
    source,
    *,
    reducer=LOCAL,
    init: list[tuple[np.ndarray, np.ndarray]] | None = None,
    on_log: Callable[[int, float | None, float | None], None] | None = None,
    on_step: Callable[[int], None] | None = None,
    checkpoint: str | None = None,
    checkpoint_every: int = 0,
    resume: str | None = None,
) -> TrainResult:
    """Train; the result's params are on the device.

    ``source`` is a data source: a ``Dataset`` in memory (``Dataset.from_arrays`` makes one
    of arrays), or a file streamed from disk (data/streaming.py). ``reducer`` makes this one process of a data-parallel run
    (distributed.py); every process then holds the same parameters throughout.
    ``on_log(i, cost, validation_cost)`` reports each log point and each validation (the
    other value None), ``on_step(i)`` each finished iteration (a progress bar).
    ``checkpoint`` is written at the end, every ``checkpoint_every`` iterations, and when
    SIGINT or SIGTERM arrive (then ``Interrupted`` is raised); ``resume`` continues from
    one and ends exactly where an uninterrupted run with these settings would.
    """
    if checkpoint_every and not checkpoint:
        raise GpucatError("--checkpoint-every needs a --checkpoint FILE to write to.")
    progress, best, opt_state = Progress(), None, None
    host_init = init or network.init_params(list(config.layers), config.seed)
    if resume:
        saved, host_init, opt_state, best_host, progress = load_checkpoint(resume)
        check_resume(config, saved, resume)
    solver, train, val_rows = solver_for(device, config, source, reducer, host_init, progress)
    M, full_batch = train.size, solver.full_batch
    with closing(solver), _Signals() as signals, np.errstate(over="ignore", invalid="ignore"):
        val = (
            _Validation(device, source, val_rows, reducer, config.dtype) if val_rows.size else None
        )
        if resume:
            _load_optimizer_state(solver, device, config, opt_state, resume)
            best = params_to_device(device, best_host, config.dtype) if best_host else None
        progress.solver = solver.name
        first_iteration, lr = progress.next_iteration, config.learning_rate
        log = CostLog(device, reducer, config.dtype, progress.next_iteration, lr, progress)

        def save():
            log.read()  # a diverged run writes no checkpoint
            if reducer.is_root:
                _write_checkpoint(checkpoint, device, config, solver, best, progress, log)

        device.synchronize()
        start_time = time.perf_counter()
        i = progress.next_iteration
        while i < config.iterations and not progress.stopped_early:
            if signals.caught is not None:
                if checkpoint:
                    save()
                raise Interrupted(i, checkpoint)
            if val is not None and i % config.validate_every == 0:
                best = _validate(val, device, solver, progress, i, best, on_log)
            log_point = config.is_log_point(i)
            exact = _exact_cost(solver, reducer, config, M) if log_point else None
            squares = solver.squared_weights() if log_point and config.l2 else 0.0
            size = solver.batch_size(i)
            log.record(i, solver.step(i), size)
            if log_point:
                # (λ/2M)·Σ‖W‖² of the parameters the loss was computed with
                penalty = config.l2 / (2 * M) * squares if config.l2 else 0.0
                cost = log.log(i, M, full_batch, exact, penalty, i % config.log_every == 0)
                if on_log:
                    on_log(i, cost, None)
            progress.next_iteration = i + 1
            if on_step:
                on_step(i)
            if config.patience and progress.bad_validations >= config.patience:
                progress.stopped_early = True
            if checkpoint_every and (i + 1) % checkpoint_every == 0:
                save()
            i += 1
        log.read()
        _check_finite(device, solver.parameters(), progress.next_iteration, lr)
        if checkpoint:
            save()
        params = solver.parameters()
        if val is not None and not progress.stopped_early:
            # the final parameters compete too (iteration number: one past the last update);
            # not recorded in the checkpoint: an extended run validates on its own grid
            if val.cost(params) < (progress.best_cost or math.inf):
                progress.best_iteration, best = progress.next_iteration, None
        device.synchronize()
        return TrainResult(
            params=params if best is None else best,  # the best validation cost's, if any
            costs=[tuple(c) for c in log.costs],
            seconds=time.perf_counter() - start_time,
            solver=solver.name,
            val_costs=[tuple(c) for c in progress.val_costs],
            best_iteration=progress.best_iteration,
            stopped_early=progress.stopped_early,
            iterations_done=progress.next_iteration,
            first_iteration=first_iteration,
            reduce_how=reducer.how,
            cost_kind=cost_kind(config, full_batch),
            train=TrainingSet(source, train.rows),
            validation=TrainingSet(source, val_rows) if val_rows.size else None,
        )


def _validate(val, device, solver, progress: Progress, i: int, best, on_log):
    """Validation at iteration i (parameters before its update): track the best and count
    the validations since; returns the best parameters (a device copy) or None."""
    current = solver.parameters()
    cost = val.cost(current)
    progress.val_costs.append([i, cost])
    if progress.best_cost is None or cost < progress.best_cost:
        progress.best_cost, progress.best_iteration, progress.bad_validations = cost, i, 0
        copy = device.copy
        best = [Layer(copy(p.W), copy(p.b)) for p in current]
    else:
        progress.bad_validations += 1
    if on_log:
        on_log(i, None, cost)
    return best


def _exact_cost(solver, reducer, config, M) -> float | None:
    """With --full-cost (where the training pass does not compute it already), the mean
    loss over the whole training set without dropout, before this iteration's update."""
    if not config.full_cost or (solver.full_batch and config.keep_prob >= 1):
        return None
    local = solver.device.scalar(solver.exact_loss())
    return reducer.sum_scalars(local)[0] / M


def _check_finite(device: Device, params: list[Layer], iterations: int, lr: float) -> None:
    """Non-finite parameters after the last update are divergence too: Σ 0·p is NaN when
    any p is (one host read)."""
    total = sum(device.xp.sum(a * 0.0) for p in params for a in (p.W, p.b))
    if not math.isfinite(device.scalar(total)):
        raise TrainingDiverged(
            f"training diverged: the parameters are not finite after iteration {iterations - 1} "
            f"(learning rate {lr:g}); try a smaller --learning-rate. No model was saved."
        )


def _load_optimizer_state(solver, device, config, state: dict, path: str) -> None:
    try:
        solver.load_optimizer_state(
            {
                # per-parameter state in the training dtype; the solver's own (Gram's) as saved
                k: device.asarray(v, None if k.startswith("solver.") else config.dtype)
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


def _write_checkpoint(path, device, config: TrainConfig, solver, best, progress, log) -> None:
    """The checkpoint: the loop's Progress with the cost log's state, written as a copy (the
    end's own log point left out: a longer run would not log there)."""
    host = lambda a: device.to_host(a) if not isinstance(a, (int, float)) else a  # noqa: E731
    kept = log.state()
    costs = kept.pop("costs")
    last = config.iterations - 1
    if costs and costs[-1][0] == last and last % config.log_every:
        costs = costs[:-1]  # the end's own log point: a longer run would not log there
    save_checkpoint(
        path,
        config.to_dict(),
        params_to_host(device, solver.parameters()),
        {k: host(v) for k, v in solver.optimizer_state().items()},
        params_to_host(device, best) if best else None,
        Progress(**{**progress.__dict__, **kept, "costs": costs}),
    )


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
