"""Data-parallel training over MPI (mpi4py): the same results on 1 or N processes.

Every rank reads a contiguous shard of the training examples (sizes differ by at most
one), computes the gradients summed over its shard, and all ranks add them up in one
flat buffer per iteration (one Allreduce), divide by the global m and apply the same
update, so all ranks hold identical parameters. Costs and accuracies are reduced the same
way; rank 0 logs, plots and saves.

Supported: every training option, checkpoints and --resume included. The epoch's shuffle and each
iteration's dropout masks are drawn for the whole (mini-)batch from the seed, exactly as a
single process draws them, and each rank takes the examples and mask columns that belong
to its shard; the validation split and the mirrored copies are made as a single process
makes them (cli._distributed_shards). So the run equals the single-process one.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucat import network
from gpucat.backend import Backend
from gpucat.checkpoint import Progress, load_checkpoint, save_checkpoint
from gpucat.config import TrainConfig
from gpucat.errors import GpucatError
from gpucat.network import Grad, Layer
from gpucat.optim import make_optimizer
from gpucat.solvers import DROPOUT, SHUFFLE, host_rng
from gpucat.train import (
    TrainResult,
    check_cost,
    check_resume,
    params_to_device,
    params_to_host,
)


def init_mpi():
    """MPI.COMM_WORLD, or a GpucatError saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise GpucatError(
            f"--distributed needs mpi4py and an MPI runtime ({e}): pip install 'gpucat[mpi]' "
            "(mpi4py with MPICH from PyPI), or mpi4py built against your cluster's MPI."
        ) from None
    except RuntimeError as e:  # mpi4py imports but cannot load or start the MPI library
        raise GpucatError(f"--distributed: the MPI runtime failed to start ({e}).") from None
    return MPI.COMM_WORLD


def shard_bounds(m: int, size: int, rank: int) -> tuple[int, int]:
    """Contiguous [start, stop) of rank's examples: the first m % size ranks get one more."""
    if size > m:
        raise GpucatError(
            f"--distributed: {size} processes but only {m} training examples; "
            f"run with at most {m} processes (mpiexec -n {m})."
        )
    base, extra = divmod(m, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


class Reducer:
    """Sums a flat device buffer over all ranks: straight from device memory when MPI is
    CUDA-aware, else staged through pinned host memory (CuPy), or in place (NumPy)."""

    def __init__(self, comm, backend: Backend, n: int, dtype: str):
        from mpi4py import MPI

        self.MPI, self.comm, self.backend = MPI, comm, backend
        self.how = "host memory (NumPy)"
        self.staging = None
        if backend.is_gpu:
            cuda_aware = False
            try:
                cuda_aware = bool(MPI.Query_cuda_support())
            except (AttributeError, NotImplementedError):
                pass
            if cuda_aware:
                self.how = "CUDA-aware MPI, device buffers"
            else:
                import cupy

                mem = cupy.cuda.alloc_pinned_memory(n * np.dtype(dtype).itemsize)
                self.staging = np.frombuffer(mem, dtype, n)
                self.how = "staged through pinned host memory"
        elif backend.name != "numpy":
            self.how = "staged through host memory"

    def allreduce(self, buf: Any) -> Any:
        MPI, b = self.MPI, self.backend
        if b.name == "numpy" or (b.is_gpu and self.staging is None):
            if b.is_gpu:
                b.synchronize()  # the buffer must be complete before MPI reads device memory
            self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            return buf
        host = b.to_host(buf) if self.staging is None else _copy_into(self.staging, buf)
        self.comm.Allreduce(MPI.IN_PLACE, host, op=MPI.SUM)
        return b.asarray(host)

    def sum_scalars(self, *values: float) -> list[float]:
        out = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, out, op=self.MPI.SUM)
        return out.tolist()


def _copy_into(host: np.ndarray, buf) -> np.ndarray:
    buf.get(out=host)
    return host


@dataclass
class DistributedResult(TrainResult):
    """A TrainResult plus how the gradients crossed between ranks."""

    solver: str = "distributed"
    reduce_how: str = ""


def fit_distributed(
    comm,
    backend: Backend,
    config: TrainConfig,
    X_host: np.ndarray,
    Y_host: np.ndarray,
    m_global: int,
    start: int,
    on_log=None,
    X_val: np.ndarray | None = None,
    Y_val: np.ndarray | None = None,
    n_val: int = 0,
    checkpoint: str | None = None,
    checkpoint_every: int = 0,
    resume: str | None = None,
) -> DistributedResult:
    """Train on this rank's shard (X_host, Y_host: columns start .. start + m_local).

    With validation, (X_val, Y_val) is this rank's part of the n_val held-out examples: the
    validation cost is reduced like the training cost, so every rank takes the same
    early-stopping decisions and keeps the same best parameters. Every rank holds the same
    state, so rank 0 alone writes checkpoints; on ``resume`` every rank reads one."""
    config.check()
    xp = backend.xp
    X = backend.asarray(X_host, config.dtype)
    Y = backend.asarray(Y_host, config.dtype)
    progress, best, host_init, opt_state = Progress(), None, None, None
    if resume:
        saved, host_init, opt_state, best_host, progress = load_checkpoint(resume)
        check_resume(config, saved, resume)
        best = params_to_device(backend, best_host, config.dtype) if best_host else None
    params = params_to_device(
        backend, host_init or network.init_params(list(config.layers), config.seed), config.dtype
    )
    opt = make_optimizer(config.optimizer, xp, params, config.beta1, config.beta2, config.epsilon)
    if opt_state:
        opt.load_state(
            {
                k: backend.asarray(v) if isinstance(v, np.ndarray) else v
                for k, v in opt_state.items()
            }
        )
    sizes = [(p.W.shape, p.b.shape) for p in params]
    n = sum(int(np.prod(w)) + int(np.prod(b)) for w, b in sizes)
    reducer = Reducer(comm, backend, n, config.dtype)
    m_local = X_host.shape[1]
    keep = config.keep_prob
    concat = getattr(xp, "concat", None) or xp.concatenate  # array API name, NumPy 1 name

    batch = min(config.batch_size or m_global, m_global)
    n_batches = -(-m_global // batch)
    mine = slice(None)  # full batch: all of this rank's columns, in order
    perm_epoch = perm = None

    Xv = backend.asarray(X_val, config.dtype) if n_val else None
    Yv = backend.asarray(Y_val, config.dtype) if n_val else None

    def val_cost() -> float:
        _, caches = network.forward(xp, params, Xv)
        local = backend.scalar(network.cost_from_logits(xp, caches[-1][1], Yv)) * Xv.shape[1]
        return reducer.sum_scalars(local)[0] / n_val

    result = DistributedResult(params, reduce_how=reducer.how)
    result.costs = [tuple(c) for c in progress.costs]
    result.val_costs = [tuple(c) for c in progress.val_costs]
    result.best_iteration, result.iterations_done = progress.best_iteration, progress.next_iteration
    best_cost, bad = progress.best_cost, progress.bad_log_points
    first = result.costs[0][1] if result.costs else None
    backend.synchronize()
    t0 = time.perf_counter()
    for i in range(progress.next_iteration, config.iterations):
        epoch, k = divmod(i, n_batches)
        Xb, Yb, m_b = X, Y, m_global
        if batch < m_global:  # the global mini-batch, and which of its examples live here
            if perm_epoch != epoch:
                perm, perm_epoch = (
                    host_rng(config.seed, SHUFFLE, epoch).permutation(m_global),
                    epoch,
                )
            members = perm[k * batch : (k + 1) * batch]
            mine = np.flatnonzero((members >= start) & (members < start + m_local))
            idx = backend.asarray(members[mine] - start)
            Xb, Yb, m_b = xp.take(X, idx, axis=1), xp.take(Y, idx, axis=1), members.size
        D = None
        if keep < 1:  # the masks of the whole (mini-)batch, this rank's columns of them
            rng = host_rng(config.seed, DROPOUT, i)
            cols = mine if batch < m_global else slice(start, start + m_local)
            D = [
                backend.asarray(((rng.random((n, m_b)) < keep) / keep)[:, cols], config.dtype)
                for n in config.layers[1:-1]
            ]
        v = None
        if Xv is not None and config.is_log_point(i):  # before this iteration's update
            v = val_cost()
            if best_cost is None or v < best_cost:
                best_cost, result.best_iteration, bad = v, i, 0
                best = [Layer(backend.copy(p.W), backend.copy(p.b)) for p in params]
            else:
                bad += 1
        AL, caches = network.forward(xp, params, Xb, D)
        if config.is_log_point(i):
            # the whole training set's cost, without dropout, before this update
            plain = D is None and batch == m_global
            _, clean = (AL, caches) if plain else network.forward(xp, params, X)
            local = backend.scalar(network.cost_from_logits(xp, clean[-1][1], Y)) * m_local
            (total,) = reducer.sum_scalars(local)
            cost = total / m_global
            if config.l2:
                cost += backend.scalar(network.l2_cost(xp, params, config.l2, m_global))
            first = cost if first is None else first
            check_cost(cost, first, i, config.learning_rate)
            result.costs.append((i, cost))
            if v is not None:
                result.val_costs.append((i, v))
            if on_log:
                on_log(i, cost, v)
        # gradients summed over this rank's part of the batch (scale 1), L2 added once after
        grads = network.backward(xp, params, caches, AL, Yb, scale=1.0, dropout=D)
        flat = concat([xp.reshape(a, (-1,)) for g in grads for a in (g.dW, g.db)])
        flat = reducer.allreduce(flat)
        grads = _unflatten(xp, flat, sizes, params, config.l2, m_b)
        opt.update(params, grads, config.learning_rate / (1.0 + config.lr_decay * epoch))
        result.iterations_done = i + 1
        if checkpoint_every and (i + 1) % checkpoint_every == 0 and comm.Get_rank() == 0:
            _save(checkpoint, backend, config, params, opt, best, result, best_cost, bad)
        if config.patience and bad >= config.patience:
            result.stopped_early = True
            break
    if Xv is not None and not result.stopped_early:
        v = val_cost()  # the final update's parameters compete too, as in a single process
        if best_cost is None or v < best_cost:
            best_cost, result.best_iteration, best = v, result.iterations_done, None
    if best is not None:
        result.params = best
    backend.synchronize()
    result.seconds = time.perf_counter() - t0
    return result


def _save(path, backend, config, params, opt, best, result, best_cost, bad) -> None:
    progress = Progress(
        result.iterations_done,
        result.costs,
        result.val_costs,
        best_cost,
        result.best_iteration,
        bad,
    )
    state = {
        k: v if isinstance(v, (int, float)) else backend.to_host(v) for k, v in opt.state().items()
    }
    best_host = params_to_host(backend, best) if best else None
    save_checkpoint(
        path, config.to_dict(), params_to_host(backend, params), state, best_host, progress
    )


def _unflatten(xp, flat, sizes, params, l2: float, m: int) -> list[Grad]:
    out, k = [], 0
    for (ws, bs), p in zip(sizes, params):
        nw, nb = int(np.prod(ws)), int(np.prod(bs))
        dW = xp.reshape(flat[k : k + nw], ws)
        db = xp.reshape(flat[k + nw : k + nw + nb], bs)
        k += nw + nb
        dW = (dW + l2 * p.W) / m if l2 else dW / m
        out.append(Grad(dW=dW, db=db / m))
    return out


def limit_blas_threads(comm) -> str:
    """Share the node's cores among its ranks: N ranks each running a BLAS with all cores
    oversubscribe the machine (measured here: 53 ms instead of 4.8 ms per iteration)."""
    from mpi4py import MPI

    local_size = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()
    threads = max(1, (os.cpu_count() or 1) // local_size)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return "BLAS threads unchanged (install threadpoolctl, or set OPENBLAS_NUM_THREADS)"
    threadpool_limits(limits=threads, user_api="blas")
    return f"{threads} BLAS thread(s) per rank, {local_size} rank(s) on this node"


def local_gpu_index(comm) -> int:
    """This rank's GPU on its node: the rank among the node's processes."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    return int(os.environ.get("GPUCAT_LOCAL_RANK", local))
