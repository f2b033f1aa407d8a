"""Solvers: which algorithm carries out an iteration. Two, on every device and any number of
processes, each running the one forward and backward pass of network.py through the
device's primitives:

- ``DirectSolver``: the README's algorithm, multiplying by X in every forward and backward
  pass. On one process with gradient descent each layer's step is applied as the backward
  pass produces it (on CuPy one GEMM into W); otherwise the gradients are summed over the
  processes by the reducer and the optimizer applies them.
- ``GramSolver``: the same iterates without touching X inside the loop. W1 stays
  s·W1(0) − C·Xᵀ (gradient descent and momentum add up multiples of Xᵀ's rows; L2 shrinks
  s and C), so Z1 = W1·X = s·W1(0)·X − C·G with the Gram matrix G = XᵀX of the M training
  examples. The loop updates C (n_1 × M); W1 is formed only when asked for. Adam divides
  each weight by its own running size, which leaves that algebra, so Gram refuses it.
  Derivation: docs/gram-solver.md.

Both take the same constructor, ``(device, params, shard, reducer, config, M)``, and
offer what ``Solver`` declares: the one protocol the training loop (train.py) uses, and all
it reads of a solver. ``memory(config, M, m, data, device, streamed)`` says what a solver
holds at its peak, checked before anything is made.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from gpucat.backends import Array, Device
from gpucat.config import TrainConfig
from gpucat.data.batches import DROPOUT, Batches, host_rng
from gpucat.errors import GpucatError
from gpucat.nn import network
from gpucat.nn.network import Layer
from gpucat.nn.optim import make_optimizer

GRAM_MEMORY_FRACTION = 0.25  # auto uses Gram only when it takes at most this share of memory


class Solver(Protocol):
    """What the training loop asks of a solver, and all it reads of one."""

    name: str  # "direct" or "gram"
    device: Device  # the device's primitives, for the loop's own sums (losses, validation)
    full_batch: bool  # every iteration trains on all M examples

    def step(self, i: int) -> Array:
        """Iteration i: this process's summed training loss over its examples of the batch
        (0-d, on the device), for the parameters before the update."""

    def batch_size(self, i: int) -> int:
        """The size of iteration i's batch over all processes."""

    def parameters(self) -> list[Layer]: ...

    def exact_loss(self) -> Array:
        """This process's summed loss over all its training examples, without dropout."""

    def squared_weights(self) -> float:
        """Σ‖W‖² over the weights, summed over the processes (the L2 penalty's sum)."""

    def optimizer_state(self) -> dict: ...

    def load_optimizer_state(self, state: dict) -> None: ...

    def close(self) -> None:
        """Let go of the data (a streamed shard's reading thread)."""


class DirectSolver:
    """The README's algorithm: forward, backward and update, through the device's primitives."""

    name = "direct"

    def __init__(
        self,
        device: Device,
        params: list[Layer],
        shard,
        reducer,
        config: TrainConfig,
        M: int,
    ):
        self.device, self.params, self.shard, self.reducer = device, params, shard, reducer
        self.config, self.M = config, M
        self.batches = Batches(shard, M, config.batch_size, config.seed)
        self.full_batch = self.batches.full
        hyper = dict(beta1=config.beta1, beta2=config.beta2, epsilon=config.epsilon)
        self.opt = make_optimizer(config.optimizer, device, params, **hyper)
        # one process with gradient descent: apply each layer's step as backward produces it
        self.apply_now = reducer.size == 1 and config.optimizer == "gd"

    def masks(self, i: int, batch) -> list[Array] | None:
        """This process's columns of iteration i's dropout masks, drawn on the host for the
        whole batch from the iteration's own stream: the same on every device and process."""
        c = self.config
        if c.keep_prob >= 1:
            return None
        rng = host_rng(c.seed, DROPOUT, i)
        return [
            self.device.asarray(
                ((rng.random((n, batch.n_examples)) < c.keep_prob) / c.keep_prob)[:, batch.columns],
                c.dtype,
            )
            for n in c.layers[1:-1]
        ]

    def learning_rate(self, epoch: int) -> float:
        c = self.config
        return c.learning_rate / (1.0 + c.lr_decay * epoch)

    def step(self, i: int) -> Array:
        p, c = self.params, self.config
        batch = self.batches(i)
        lr, l2 = self.learning_rate(batch.epoch), c.l2 / self.M  # the L2 gradient: (λ/M)·W
        grads: list = [None] * len(p)
        emit = self._emitter(grads, lr, l2)
        scale = (lr if self.apply_now else 1.0) / batch.n_examples  # (lr times) the batch mean
        loss = self._forward_backward(batch, self.masks(i, batch), scale, emit, grads)
        if not self.apply_now:
            self.opt.update(p, self._reduced(grads), lr, l2)
        return loss

    def _emitter(self, grads: list, lr: float, l2: float):
        """What the backward pass does with a layer's dZ: apply its step at once (one process,
        gradient descent: dZ carries lr/m), or keep its gradient in ``grads`` for the reducer
        and the optimizer (dZ carries this process's 1/m)."""
        device, p = self.device, self.params
        if self.apply_now:
            decay = 1.0 - lr * l2
            return lambda l, dZ, A_prev: network.descend(device, p[l], dZ, A_prev, decay)

        def keep(l, dZ, A_prev):
            grads[l] = network.gradient(device, dZ, A_prev)

        return keep

    def _forward_backward(self, batch, masks, scale, emit, grads, Z1=None) -> Array:
        """The one forward and backward pass over this process's part of the batch (a
        process holding none of it adds zeros to the sums)."""
        device, p = self.device, self.params
        if batch.Y is None:
            for l, layer in enumerate(p):
                grads[l] = (device.xp.zeros_like(layer.W), device.xp.zeros_like(layer.b))
            return device.zeros((), self.config.dtype)
        dZ, loss, fwd = network.forward(device, p, batch.X, batch.Y, scale, masks, Z1)
        network.backward(device, p, fwd, dZ, emit)
        return loss

    def _reduced(self, grads: list) -> list:
        """The gradients summed over every process (here: one buffer, one reduction)."""
        flat = self.reducer.sum_arrays([a for pair in grads for a in pair if a is not None])
        it = iter(flat)
        return [tuple(None if a is None else next(it) for a in pair) for pair in grads]

    def batch_size(self, i: int) -> int:
        return self.batches.size_of(i)

    def close(self) -> None:
        self.shard.close()

    def parameters(self) -> list[Layer]:
        """The current parameters as layers of the training dtype."""
        return self.params

    def exact_loss(self) -> Array:
        """This process's summed loss over all its training examples, without dropout."""
        return network.loss_sum(self.device, self.params, self.shard.chunks())

    def squared_weights(self, layers: list[Layer] | None = None) -> float:
        """Σ‖W‖² over the weights (the L2 penalty's sum), read to the host."""
        xp = self.device.xp
        total = sum(xp.sum(p.W * p.W) for p in (self.params if layers is None else layers))
        return self.device.scalar(total)

    def optimizer_state(self) -> dict:
        return self.opt.state()

    def load_optimizer_state(self, state: dict) -> None:
        self.opt.load_state(state)

    @staticmethod
    def memory(config: TrainConfig, M: int, m: int, data, device: Device, streamed: bool) -> int:
        """Bytes this solver holds at its peak on ``device``, for this process's ``m`` of the
        ``M`` training positions of ``data`` (``n_features`` values an example, stored as
        ``data.stored``, divided by ``data.divisor``): a full batch converted at once, as the
        device allocates it (device.columns_bytes); in mini-batches the stored examples
        resident (unless streamed) and a batch taken from them, stored and in floats (a
        second one read ahead when streamed); weights and optimizer state."""
        size, stored = np.dtype(config.dtype).itemsize, np.dtype(data.stored).itemsize
        n_x, B = data.n_features, min(config.batch_size or M, M)
        if B == M:
            X = device.columns_bytes(n_x * m, data.stored, config.dtype, data.divisor)
        else:
            resident = 0 if streamed else n_x * m * stored
            X = resident + (2 if streamed else 1) * n_x * min(B, m) * (stored + size)
        return X + _weights(config)


def _weights(config: TrainConfig) -> int:
    """Bytes of the weights and the optimizer's state, in the training dtype."""
    weights = sum(a * b for a, b in zip(config.layers[:-1], config.layers[1:]))
    copies = {"gd": 2, "momentum": 3, "adam": 4}[config.optimizer]
    return copies * weights * np.dtype(config.dtype).itemsize


class GramSolver(DirectSolver):
    """Full- or mini-batch gradient descent or momentum (with L2, decay, dropout) that
    multiplies by the M × M Gram matrix instead of X. Z0 = W1(0)·X, C and the momentum's V
    stay float64 whatever the training dtype: they accumulate over every iteration. G is
    formed in float64 and kept in the training dtype: C·G is recomputed every iteration, so
    in float32 it rounds as the direct solver's W1·X does, at twice the speed of float64."""

    name = "gram"
    BLOCK = 1024  # input features upcast to float64 at a time

    def __init__(self, device, params, shard, reducer, config, M):
        config.require_gram()
        super().__init__(device, params, shard, reducer, config, M)
        self._rows, self._W1_formed = None, False  # W1 formed since the last step?
        xp, n1 = device.xp, params[0].W.shape[0]
        self.W1_0 = xp.astype(params[0].W, xp.float64)
        own = slice(shard.start, shard.stop)
        self.G = device.zeros((M, shard.stop - shard.start))  # G[:, own] = Xᵀ · X_own
        self.Z0 = device.zeros((n1, shard.stop - shard.start))  # W1(0) · X_own
        for a, b, Xb in self._float64_blocks():
            self.G += device.matmul_tn(Xb, Xb[:, own])
            self.Z0 += device.matmul(self.W1_0[:, a:b], Xb[:, own])
        if config.dtype != "float64":
            self.G = xp.astype(self.G, getattr(xp, config.dtype))
        self.s, self.v_s = 1.0, 0.0  # W1 = s·W1(0) − C·Xᵀ; momentum v_W1 = v_s·W1(0) − V·Xᵀ
        self._W1_0_squared = None
        self.C = device.zeros((n1, M))
        self.V = device.zeros((n1, M)) if config.optimizer == "momentum" else None

    def _C_times(self, G: Array) -> Array:
        """C · G (G: columns of self.G) in G's dtype, the training dtype."""
        xp = self.device.xp
        C = self.C if G.dtype == self.C.dtype else xp.astype(self.C, G.dtype)
        return self.device.matmul(C, G)

    def _float64_blocks(self):
        """X over all M training positions in float64, a block of input features at a time:
        float32 training never holds a float64 copy of the data set."""
        if self._rows is None:  # as stored (uint8): at most M × n_x < n_x² bytes
            self._rows = self.shard.train.read(np.arange(self.M))[0]
        rows, n = self._rows, self._rows.shape[1]
        for a in range(0, n, self.BLOCK):
            b = min(a + self.BLOCK, n)
            block = np.ascontiguousarray(rows[:, a:b])
            yield a, b, self.device.to_columns(block, "float64", self.shard.divisor)

    def step(self, i: int) -> Array:
        device, p, c = self.device, self.params, self.config
        xp = device.xp
        self._W1_formed = False
        batch = self.batches(i)
        lr, l2 = self.learning_rate(batch.epoch), c.l2 / self.M
        grads: list = [None] * len(p)
        dZ1, layer = [], self._emitter(grads, lr, l2)

        def emit(l, dZ, A_prev):  # the first layer's dZ1 goes into C, not into W1
            if l == 0:
                dZ1.append(dZ)
            else:
                layer(l, dZ, A_prev)

        Z1, whole = None, self.batches.full  # all of this process's block, in block order
        if batch.Y is not None:
            idx = None if whole else device.asarray(batch.positions - self.shard.start)
            G = self.G if whole else xp.take(self.G, idx, axis=1)
            Z0 = self.Z0 if whole else xp.take(self.Z0, idx, axis=1)
            Z1 = self._C_times(G)
            Z1 = (Z0 - Z1) if self.s == 1.0 else (self.s * Z0 - Z1)
            if c.dtype != "float64":
                Z1 = xp.astype(Z1, getattr(xp, c.dtype))
        scale = (lr if self.apply_now else 1.0) / batch.n_examples
        loss = self._forward_backward(batch, self.masks(i, batch), scale, emit, grads, Z1)
        # this process's dZ1 in its columns of an (n_1, M) array: the sum over processes
        if dZ1 and whole and self.G.shape[1] == self.M:  # one process, full batch: dZ1 itself
            full = dZ1[0] if c.dtype == "float64" else xp.astype(dZ1[0], xp.float64)
        elif dZ1:
            full = device.scatter_columns(dZ1[0], batch.positions, self.M)
        else:
            full = device.zeros((p[0].W.shape[0], self.M))
        if self.apply_now:  # dZ1 carries lr/m: C ← (1 − lr·λ/M)·C + dZ1, s likewise
            decay = 1.0 - lr * l2
            if decay != 1.0:
                self.C *= decay
                self.s *= decay
            self.C += full
            device.descend_bias(p[0].b, dZ1[0])
            return loss
        db1 = device.sum_rows(dZ1[0]) if dZ1 else xp.zeros_like(p[0].b)
        grads[0] = (None, db1)
        *grads, (full,) = self._reduced([*grads, (full,)])
        self.opt.update(p, grads, lr, l2)  # b1 and layers 2..L; W1 below, in (s, C) terms
        G_C = -full if not l2 else l2 * self.C - full  # the W1 gradient: g_s·W1(0) − G_C·Xᵀ
        g_s = l2 * self.s
        if self.V is None:
            self.s -= lr * g_s
            self.C -= lr * G_C
        else:
            beta = c.beta1
            self.v_s = beta * self.v_s + (1.0 - beta) * g_s
            self.V *= beta
            self.V += (1.0 - beta) * G_C
            self.s -= lr * self.v_s
            self.C -= lr * self.V
        return loss

    def exact_loss(self) -> Array:
        xp = self.device.xp
        Z1 = self._C_times(self.G)
        Z1 = xp.astype(self.s * self.Z0 - Z1, getattr(xp, self.config.dtype))
        return network.forward(self.device, self.params, None, self.shard.Y, None, None, Z1)[1]

    def optimizer_state(self) -> dict:
        """The optimizer's state and the Gram representation of W1 (float64), so that a
        resumed run goes on exactly: W1 = s·W1(0) − C·Xᵀ, momentum v_s and V."""
        state = {**self.opt.state(), "solver.s": self.s, "solver.v_s": self.v_s}
        state.update({"solver.W1_0": self.W1_0, "solver.C": self.C})
        if self.V is not None:
            state["solver.V"] = self.V
        return state

    def load_optimizer_state(self, state: dict) -> None:
        state = dict(state)
        self.s, self.v_s = float(state.pop("solver.s")), float(state.pop("solver.v_s"))
        self.W1_0, self.C = state.pop("solver.W1_0"), state.pop("solver.C")
        if self.V is not None:
            self.V = state.pop("solver.V")
        own = slice(self.shard.start, self.shard.stop)
        self.Z0 = self.device.zeros(self.Z0.shape)
        for a, b, Xb in self._float64_blocks():  # W1(0)·X_own again, from the saved W1(0)
            self.Z0 += self.device.matmul(self.W1_0[:, a:b], Xb[:, own])
        self._W1_0_squared, self._W1_formed = None, False
        super().load_optimizer_state(state)

    def squared_weights(self, layers=None) -> float:
        """Σ‖W‖² with ‖W1‖² = s²‖W1(0)‖² − 2s·Σ C⊙Z0 + Σ (C·G)⊙C, summed over the
        processes' columns: W1 itself is never formed."""
        xp, own = self.device.xp, slice(self.shard.start, self.shard.stop)
        C = self.C[:, own]
        cross = xp.sum(C * self.Z0)
        inner = xp.sum(self._C_times(self.G) * C)
        cross, inner = self.reducer.sum_scalars(
            self.device.scalar(cross), self.device.scalar(inner)
        )
        if self._W1_0_squared is None:
            self._W1_0_squared = self.device.scalar(xp.sum(self.W1_0 * self.W1_0))
        rest = super().squared_weights(self.params[1:])
        return self.s**2 * self._W1_0_squared - 2 * self.s * cross + inner + rest

    def parameters(self) -> list[Layer]:
        """W1 = s·W1(0) − C·Xᵀ (one pass over X, once between steps), in the training dtype."""
        if self._W1_formed:
            return self.params
        xp = self.device.xp
        concat = getattr(xp, "concat", None) or xp.concatenate  # the array API name, or CuPy's
        parts = [
            self.s * self.W1_0[:, a:b] - self.device.matmul_nt(self.C, Xb)
            for a, b, Xb in self._float64_blocks()
        ]
        self.params[0].W = xp.astype(concat(parts, axis=1), getattr(xp, self.config.dtype))
        self._W1_formed = True
        return self.params

    @staticmethod
    def memory(config, M, m, data, device, streamed) -> int:
        """Its peak is at set-up: G (M × m, float64) beside each feature block's product
        (another M × m) and the float64 block with the stored one it is converted from; in
        float32 training the float32 G made from the float64 one (below that peak). Beside
        it Z0 and W1(0) in float64, C and V; and where device memory is host memory, the
        examples as stored, which it reads whole into the host."""
        n1 = config.layers[1] if len(config.layers) > 2 else 1
        n_x, stored = data.n_features, np.dtype(data.stored)
        block = min(GramSolver.BLOCK, n_x) * M
        block = device.columns_bytes(block, stored, "float64", data.divisor)
        setup = 2 * 8 * M * m + block
        cast = 8 * M * m + (0 if config.dtype == "float64" else 4 * M * m)
        V = 8 * n1 * M if config.optimizer == "momentum" else 0
        state = 8 * n1 * m + 8 * n1 * n_x + 8 * n1 * M + V
        rows = n_x * M * stored.itemsize if device.host_memory else 0
        return max(setup, cast) + state + rows + _weights(config)


SOLVER_CLASSES = {"direct": DirectSolver, "gram": GramSolver}


def choose_solver(
    config: TrainConfig, free_bytes: int, M: int, m: int, data, device: Device, streamed=False
) -> str:
    """The one place that decides which solver runs: ``auto`` becomes gram when it applies
    and pays (fewer examples than inputs, G in a quarter of free memory, the data not
    streamed from disk), else direct. Only the recipe and the data decide: checkpoints and
    resuming observe a run, and a resumed run keeps its checkpoint's solver."""
    name, why = config.solver, config.gram_refusal()
    if name != "auto":
        return name
    need = GramSolver.memory(config, M, m, data, device, streamed)
    fits = need <= GRAM_MEMORY_FRACTION * free_bytes
    # a streamed source stays on disk: Gram would read it whole
    return "gram" if why is None and M < data.n_features and fits and not streamed else "direct"


def check_memory(
    name: str, config: TrainConfig, M: int, m: int, data, device: Device, streamed, free: int
) -> None:
    """Refuse, before allocating anything, a run whose solver would not fit: one message
    saying what to change."""
    need = SOLVER_CLASSES[name].memory(config, M, m, data, device, streamed)
    if need <= free:
        return
    gib = lambda n: f"{n / 2**30:.1f} GiB"  # noqa: E731
    if name == "gram":
        advice = "use --solver direct (it needs no M × M matrix)"
    elif config.batch_size is None or config.batch_size >= M:
        advice = "train in mini-batches (--batch-size 256) or use --dtype float32"
    else:
        advice = "use a smaller --batch-size or --dtype float32"
    raise GpucatError(
        f"--solver {name} needs {gib(need)} for {m} examples of {data.n_features} features "
        f"({config.dtype}), and {gib(free)} is free: {advice}."
    )


def make_solver(name, device, params, shard, reducer, config, M):
    """The solver object for a resolved name."""
    return SOLVER_CLASSES[name](device, params, shard, reducer, config, M)
