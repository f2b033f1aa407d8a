"""The training loop, the one there is: validation on its own grid, early stopping,
checkpoints, interruptions and resume around whichever solver carries out the iterations,
on one process or many.

Three seams lead into it: the *solver* says how an iteration is computed (solvers.py), the
*reducer* how sums cross processes (reducers.py: the identity here, MPI in
distributed.py), the *data source* how examples arrive (data/batches.py, data/shards.py). Every loss that
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
from dataclasses import dataclass

import numpy as np

from gpucat.backends import Device
from gpucat.config import TrainConfig
from gpucat.data.batches import TrainingSet, split_training
from gpucat.data.shards import DeviceShard, is_streamed, make_shard
from gpucat.errors import GpucatError, TrainingDiverged
from gpucat.nn import network
from gpucat.nn.network import Layer, params_to_device
from gpucat.training import checkpoint as checkpoints
from gpucat.training.checkpoint import RunState
from gpucat.training.reducers import LOCAL
from gpucat.training.solvers import check_memory, choose_solver, make_solver


@dataclass
class TrainResult:
    """A finished run: its parameters (on the device; the best validation's when validation
    chose them), its RunState (the logged costs, validations, where it stopped), the training
    wall time, and what it trained on."""

    params: list[Layer]
    state: RunState
    seconds: float
    first_iteration: int  # where this run started: > 0 after --resume
    reduce_how: str  # how sums crossed processes
    cost_kind: str  # what a logged cost is (cost_kind)
    train: TrainingSet  # the examples trained on (held-out ones excluded)
    validation: TrainingSet | None  # the held-out examples

    solver = property(lambda self: self.state.solver)
    costs = property(lambda self: [tuple(c) for c in self.state.costs])
    val_costs = property(lambda self: [tuple(c) for c in self.state.val_costs])
    best_iteration = property(lambda self: self.state.best_iteration)
    stopped_early = property(lambda self: self.state.stopped_early)
    iterations_done = property(lambda self: self.state.next_iteration)

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
    read cannot change the rounding); and the logged (iteration, cost) pairs. All but the
    device buffer lives in the run's RunState, which a checkpoint keeps."""

    SIZE = 256

    def __init__(self, device: Device, reducer, dtype: str, lr: float, state: RunState):
        self.device, self.reducer, self.lr, self.state = device, reducer, lr, state
        self.buffer = device.zeros((self.SIZE,), dtype)
        self.first, self.sizes = state.next_iteration, []  # the iteration in buffer[0]; sizes
        self.last: dict[int, float] = {}  # the summed losses of the block read last

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
        state = self.state
        for (i, total), size in zip(self.last.items(), sizes):
            mean = total / size
            if state.first_loss is None:
                state.first_loss = mean
            if diverged(mean, state.first_loss):
                raise TrainingDiverged(
                    f"training diverged: the training loss reached {mean:.6g} at iteration {i} "
                    f"(it started at {state.first_loss:.6g}) with learning rate {self.lr:g}; "
                    "try a smaller --learning-rate (e.g. 10x smaller). No model was saved."
                )
        state.since_log[0].extend(sums)
        state.since_log[1] += sum(sizes)

    def log(
        self, i: int, M: int, full_batch: bool, exact: float | None, penalty: float, grid: bool
    ):
        """Log iteration i's cost: ``exact`` (--full-cost) or the training pass's mean loss
        (iteration i's for a full batch, else the batches' since the last log point), plus
        the L2 ``penalty``; on the log grid the next mean starts afresh. Returns the cost."""
        self.read()
        since, examples = self.state.since_log
        if exact is not None:
            cost = exact
        elif full_batch:
            cost = self.last[i] / M
        else:
            cost = math.fsum(since) / examples
        cost += penalty
        if grid:
            self.state.since_log = [[], 0]
        self.state.costs.append([i, cost])
        return cost


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
        self.device, self.reducer, self.n_examples = device, reducer, rows.size
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
        return total / self.n_examples


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
    state: RunState | None = None,
):
    """(solver, training set, validation rows): the solver ``fit`` runs for this recipe on
    this source (a resumed run's ``state`` keeps its solver), its memory checked, its data
    and parameters on the device, ready to ``step`` (``close`` it after). The measurements'
    hook for timing iterations alone (docs/python.md, "Hooks for measurement")."""
    check_data(config, source)
    train, val_rows = split_training(source, config.validation, config.flip, config.seed)
    M = train.n_examples  # M training examples, m of them in this process's block
    start, stop = reducer.block(M)
    m = stop - start
    full_batch = config.batch_size is None or config.batch_size >= M
    streamed = is_streamed(device, train, m, full_batch)
    free = device.free_memory()
    chosen = state and state.solver
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
    of arrays), or a file streamed from disk (data/streaming.py). ``reducer`` makes this one
    process of a data-parallel run (distributed.py); every process then holds the same
    parameters throughout. ``on_log(i, cost, validation_cost)`` reports each log point and
    each validation (the other value None), ``on_step(i)`` each finished iteration (a
    progress bar). ``checkpoint`` is written at the end, every ``checkpoint_every``
    iterations, and when SIGINT or SIGTERM arrive (then ``Interrupted`` is raised); ``resume``
    continues from one and ends exactly where an uninterrupted run with these settings would.
    """
    if checkpoint_every and not checkpoint:
        raise GpucatError("--checkpoint-every needs a --checkpoint FILE to write to.")
    run = _Run(device, config, source, reducer, init, resume)
    with closing(run.solver), _Signals() as signals, np.errstate(over="ignore", invalid="ignore"):
        run.start(checkpoint)
        while run.state.next_iteration < config.iterations and not run.state.stopped_early:
            if signals.caught is not None:
                run.save()
                raise Interrupted(run.state.next_iteration, checkpoint)
            run.iteration(on_log)
            if on_step:
                on_step(run.state.next_iteration - 1)
            if checkpoint_every and run.state.next_iteration % checkpoint_every == 0:
                run.save()
        return run.end()


class _Run:
    """One call of ``fit``: set up from the recipe (or a checkpoint), iterated, ended."""

    def __init__(self, device: Device, config: TrainConfig, source, reducer, init, resume):
        self.device, self.config, self.source, self.reducer = device, config, source, reducer
        self.state, saved, host_init = RunState(), None, init
        if resume:
            saved = checkpoints.load_checkpoint(resume)
            checkpoints.check_resume(config, saved.config, resume)
            host_init, self.state = saved.params, saved.state
        solver, self.train, self.val_rows = solver_for(
            device, config, source, reducer, host_init, self.state
        )
        self.solver, self.best, self.val = solver, None, None
        try:
            if self.val_rows.size:
                self.val = _Validation(device, source, self.val_rows, reducer, config.dtype)
            if saved is not None:
                checkpoints.restore_optimizer(solver, device, config.dtype, saved.optimizer, resume)
                if saved.best:
                    self.best = params_to_device(device, saved.best, config.dtype)
        except BaseException:
            solver.close()  # its data, a streamed shard's thread
            raise
        self.state.solver = solver.name
        self.first_iteration, self.M = self.state.next_iteration, self.train.n_examples
        self.log = CostLog(device, reducer, config.dtype, config.learning_rate, self.state)

    def start(self, checkpoint: str | None) -> None:
        """The clock starts once the device has finished setting up."""
        self.checkpoint = checkpoint
        self.device.synchronize()
        self.started = time.perf_counter()

    def iteration(self, on_log) -> None:
        """Validate when due, take one step, log when due, judge early stopping."""
        state, c, solver = self.state, self.config, self.solver
        i = state.next_iteration
        if self.val is not None and i % c.validate_every == 0:
            self.validate(i, on_log)
        log_point = c.is_log_point(i)
        exact = self.exact_cost() if log_point else None
        squares = solver.squared_weights() if log_point and c.l2 else 0.0
        size = solver.batch_size(i)
        self.log.record(i, solver.step(i), size)
        if log_point:
            # (λ/2M)·Σ‖W‖² of the parameters the loss was computed with
            penalty = c.l2 / (2 * self.M) * squares if c.l2 else 0.0
            grid = i % c.log_every == 0
            cost = self.log.log(i, self.M, solver.full_batch, exact, penalty, grid)
            if on_log:
                on_log(i, cost, None)
        state.next_iteration = i + 1
        if c.patience and state.bad_validations >= c.patience:
            state.stopped_early = True

    def end(self) -> TrainResult:
        """Read the last losses, check the parameters, write the checkpoint; the final
        parameters compete with the best validated ones (iteration number: one past the
        last update; not in the checkpoint: an extended run validates on its own grid)."""
        self.log.read()
        _check_finite(self.device, self.solver.parameters(), self.state, self.config)
        self.save()
        params, state = self.solver.parameters(), self.state
        if self.val is not None and not state.stopped_early:
            if self.val.cost(params) < (state.best_cost or math.inf):
                state.best_iteration, self.best = state.next_iteration, None
        self.device.synchronize()
        return TrainResult(
            params=params if self.best is None else self.best,
            state=state,
            seconds=time.perf_counter() - self.started,
            first_iteration=self.first_iteration,
            reduce_how=self.reducer.how,
            cost_kind=cost_kind(self.config, self.solver.full_batch),
            train=TrainingSet(self.source, self.train.source_rows),
            validation=TrainingSet(self.source, self.val_rows) if self.val_rows.size else None,
        )

    def save(self) -> None:
        """Write the checkpoint, if the run has one (rank 0), once every pending loss has
        been read: a diverged run writes none."""
        if not self.checkpoint:
            return
        self.log.read()
        if self.reducer.is_root:
            checkpoints.save_checkpoint(
                self.checkpoint, self.device, self.config, self.solver, self.best, self.state
            )

    def validate(self, i: int, on_log) -> None:
        """Validation at iteration i (parameters before its update): the best so far kept (a
        device copy), the bad validations in a row counted."""
        current, state = self.solver.parameters(), self.state
        cost = self.val.cost(current)
        state.val_costs.append([i, cost])
        if state.best_cost is None or cost < state.best_cost:
            state.best_cost, state.best_iteration, state.bad_validations = cost, i, 0
            copy = self.device.copy
            self.best = [Layer(copy(p.W), copy(p.b)) for p in current]
        else:
            state.bad_validations += 1
        if on_log:
            on_log(i, None, cost)

    def exact_cost(self) -> float | None:
        """With --full-cost (where the training pass does not compute it already), the mean
        loss over the whole training set without dropout, before this iteration's update."""
        c, solver = self.config, self.solver
        if not c.full_cost or (solver.full_batch and c.keep_prob >= 1):
            return None
        local = self.device.scalar(solver.exact_loss())
        return self.reducer.sum_scalars(local)[0] / self.M


def _check_finite(device: Device, params: list[Layer], state: RunState, config) -> None:
    """Non-finite parameters after the last update are divergence too: Σ 0·p is NaN when
    any p is (one host read)."""
    total = sum(device.xp.sum(a * 0.0) for p in params for a in (p.W, p.b))
    if not math.isfinite(device.scalar(total)):
        raise TrainingDiverged(
            f"training diverged: the parameters are not finite after iteration "
            f"{state.next_iteration - 1} (learning rate {config.learning_rate:g}); try a "
            "smaller --learning-rate. No model was saved."
        )
