"""Solvers: how one training iteration is carried out.

All of them run the same algorithm (forward, cost, backward, update of the reference
recipe) and differ only in how they spend the arithmetic:

- ``DirectSolver``: the network math as written in network.py, on any backend.
- ``NumpyDirectSolver``: the same on NumPy, with the first layer's two products over X
  in the memory layout that runs fastest on this machine, chosen by timing at setup.
- ``GeneralSolver``: everything beyond the original recipe (mini-batches, momentum and
  Adam, learning-rate decay, L2, dropout), and any run over several processes, on the
  generic code: gradients as sums, added up over processes by the reducer.
- ``GramSolver`` (``NumpyGramSolver`` on NumPy): exact for full batch, and never touches X inside the loop. Since every
  update of W1 is a combination of the rows of X^T, W1 = W1(0) - C @ X^T, so
  Z1_lin = W1 @ X = W1(0) @ X - C @ G with the m x m Gram matrix G = X^T @ X. The loop
  updates Z1_lin -= (lr/m) dZ1 @ G and C += (lr/m) dZ1; W1 is formed only when asked for.
  See docs/gram-solver.md.

Each solver's ``step`` queues one iteration and, when asked, returns ``(loss_sum, penalty)``
computed before the update: this process's summed loss over its training examples and
the L2 penalty (None without L2), both 0-d device arrays, which the trainer reduces and
divides by the global count. No host sync inside.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gpucat import network
from gpucat.backend import Backend
from gpucat.config import SOLVERS, TrainConfig
from gpucat.errors import GpucatError
from gpucat.network import Array, Grad, Layer
from gpucat.optim import make_optimizer
from gpucat.sources import DeviceShard, host_rng

SHUFFLE, DROPOUT = 1, 2  # the random streams of the epoch shuffles and the dropout masks
GRAM_MEMORY_FRACTION = 0.25  # auto uses gram only when G takes at most this share of free memory


class DirectSolver:
    """The reference algorithm, written once against the backend's namespace."""

    def __init__(self, backend: Backend, params: list[Layer], X: Array, Y: Array, lr: float):
        self.backend, self.xp = backend, backend.xp
        self.params, self.X, self.Y, self.lr = params, X, Y, lr
        self.scale = lr / X.shape[1]
        self.i = 0  # iterations done (set by the trainer on resume)

    def step(self, want_cost: bool):
        AL, caches = network.forward(self.xp, self.params, self.X)
        cost = self._cost(caches[-1][1]) if want_cost else None
        # lr/m in place of 1/m: the backward pass yields the update steps directly
        steps = network.backward(self.xp, self.params, caches, AL, self.Y, scale=self.scale)
        network.apply_steps(self.params, steps)
        self.i += 1
        return cost

    def _cost(self, ZL: Array):
        return network.loss_sum_from_logits(self.xp, ZL, self.Y), None

    def parameters(self) -> list[Layer]:
        """The current parameters as layers of the training dtype."""
        return self.params

    def optimizer_state(self) -> dict:
        return {}

    def load_optimizer_state(self, state: dict) -> None:
        pass


class _FirstLayerApart(DirectSolver):
    """Layers 2..L by the generic network code; subclasses say how layer 1 is computed."""

    def __init__(self, backend, params, X, Y, lr):
        if len(params) < 2:
            raise GpucatError("this solver needs at least one hidden layer; use --solver direct.")
        super().__init__(backend, params, X, Y, lr)
        self.rest = params[1:]

    def first_linear(self) -> Array:  # Z1 = W1 @ X + b1
        raise NotImplementedError

    def first_update(self, dZ1: Array) -> None:  # dZ1 comes scaled by lr/m
        raise NotImplementedError

    def step(self, want_cost: bool):
        xp = self.xp
        Z1 = self.first_linear()
        AL, caches = network.forward(xp, self.rest, network.relu(xp, Z1))
        cost = self._cost(caches[-1][1]) if want_cost else None
        steps, dA1 = network.backward_to_input(xp, self.rest, caches, AL, self.Y, scale=self.scale)
        network.apply_steps(self.rest, steps)
        self.first_update(network.backprop_relu(xp, dA1, Z1))
        self.i += 1
        return cost


@dataclass(frozen=True)
class Layout:
    """Where the NumPy direct path keeps W1 and X for the first layer's two products with X
    (the forward Z1 = W1 X and the update W1 -= dZ1 Xᵀ): W1 as (n_1, n_x) or transposed,
    and for each product whether it reads X as columns (n_x, m) or as rows (m, n_x)."""

    name: str
    transposed: bool
    forward: str  # "cols" or "rows"
    update: str

    @property
    def storage(self) -> set[str]:
        return {self.forward, self.update}


LAYOUTS = (
    Layout("plain", False, "cols", "cols"),
    Layout("rows", False, "rows", "rows"),
    Layout("cols/rows", False, "cols", "rows"),
    Layout("W1T rows/cols", True, "rows", "cols"),
    Layout("W1T rows", True, "rows", "rows"),
    Layout("W1T cols", True, "cols", "cols"),
)


def _forward(transposed: bool, W: Array, X: Array, rows: bool) -> Array:
    """Z1 without b1, (n_1, m), from W1 (or W1ᵀ) and X as columns (or rows)."""
    if transposed:
        return (X @ W).T if rows else (X.T @ W).T
    return W @ X.T if rows else W @ X


def _update(transposed: bool, dZ: Array, X: Array, rows: bool, out: Array) -> Array:
    """dZ1 Xᵀ (or its transpose, to match W1's orientation) into ``out``."""
    if transposed:
        return np.matmul(X.T if rows else X, dZ.T, out=out)
    return np.matmul(dZ, X if rows else X.T, out=out)


LAYOUT_NAMES = {c.name: c for c in LAYOUTS}
_PLANS: dict[tuple, Layout] = {}  # this process's choices: a second fit of the same shapes reuses


def choose_layout(
    X: np.ndarray, W1: np.ndarray, free_bytes: int, name: str | None = None
) -> Layout:
    """The layout for these shapes: ``name`` when given (a resumed run's), else
    GPUCAT_NUMPY_LAYOUT when set, else this process's earlier plan for the same shapes, else
    a new plan (``plan_layout``). Layouts differ only in rounding, but a fixed one makes
    runs bit-for-bit repeatable across processes."""
    import os

    name = name or os.environ.get("GPUCAT_NUMPY_LAYOUT")
    if name:
        if name not in LAYOUT_NAMES:
            raise GpucatError(f"unknown layout {name!r}: choose one of {', '.join(LAYOUT_NAMES)}.")
        return LAYOUT_NAMES[name]
    both = 2 * X.nbytes <= 0.5 * free_bytes
    key = (X.shape, X.dtype.str, W1.shape, both)
    if key not in _PLANS:
        _PLANS[key] = plan_layout(X, W1, free_bytes)[0]
    return _PLANS[key]


def plan_layout(
    X: np.ndarray, W1: np.ndarray, free_bytes: int, repeats: int = 2
) -> tuple[Layout, dict]:
    """Choose the fastest Layout by timing its two products on this data, as FFTW's planner
    and cuDNN's benchmark mode do: the best layout differs between CPUs, BLAS builds, dtypes
    and sizes (docs/benchmarks.md). Layouts that keep X twice are tried only when both
    copies fit in half of the free memory. Returns the choice and every product's time."""
    import time

    both = 2 * X.nbytes <= 0.5 * free_bytes
    candidates = [c for c in LAYOUTS if both or len(c.storage) == 1]
    if not both and any("rows" in c.storage for c in candidates) and 3 * X.nbytes > free_bytes:
        candidates = [LAYOUTS[0]]  # no room even to try a second copy
    if len(candidates) == 1:
        return candidates[0], {}
    copies = {"cols": np.ascontiguousarray(X), "rows": np.ascontiguousarray(X.T)}
    Ws = {False: np.ascontiguousarray(W1), True: np.ascontiguousarray(W1.T)}
    dZ = np.random.default_rng(0).standard_normal((W1.shape[0], X.shape[1])).astype(X.dtype)
    times = {}

    def clock(key, fn):
        if key not in times:
            fn()  # warm-up
            ts = []
            for _ in range(repeats):
                t = time.perf_counter()
                fn()
                ts.append(time.perf_counter() - t)
            times[key] = min(ts)
        return times[key]

    def cost(c: Layout) -> float:
        W, out = Ws[c.transposed], np.empty_like(Ws[c.transposed])
        f = clock(
            ("forward", c.transposed, c.forward),
            lambda: _forward(c.transposed, W, copies[c.forward], c.forward == "rows"),
        )
        u = clock(
            ("update", c.transposed, c.update),
            lambda: _update(c.transposed, dZ, copies[c.update], c.update == "rows", out),
        )
        return f + u

    best = min(candidates, key=cost)
    return best, {f"{k[0]} {'W1T' if k[1] else 'W1'} {k[2]}": 1000 * v for k, v in times.items()}


class NumpyDirectSolver(_FirstLayerApart):
    """The direct algorithm on NumPy with the first layer's two products with X in the
    memory layout that runs fastest here, chosen at setup by timing each (``plan_layout``);
    ``layout`` forces one (tests). The arithmetic is the direct algorithm's; only where the
    operands lie changes (each layout is tested equal to DirectSolver)."""

    def __init__(self, backend, params, X, Y, lr, layout: Layout | str | None = None):
        super().__init__(backend, params, X, Y, lr)
        if not isinstance(layout, Layout):
            layout = choose_layout(X, params[0].W, backend.free_memory(), layout)
        self.layout = layout
        self.X_cols = np.ascontiguousarray(X) if "cols" in layout.storage else None
        self.X_rows = np.ascontiguousarray(X.T) if "rows" in layout.storage else None
        W = params[0].W
        self.W1 = np.ascontiguousarray(W.T if layout.transposed else W)  # the working copy
        self.buf = np.empty_like(self.W1)

    def _X(self, which: str) -> np.ndarray:
        return self.X_rows if which == "rows" else self.X_cols

    def first_linear(self) -> Array:
        c = self.layout
        Z1 = _forward(c.transposed, self.W1, self._X(c.forward), c.forward == "rows")
        Z1 += self.params[0].b
        return Z1

    def first_update(self, dZ1: Array) -> None:
        c = self.layout
        self.W1 -= _update(c.transposed, dZ1, self._X(c.update), c.update == "rows", self.buf)
        self.params[0].b -= np.sum(dZ1, axis=1, keepdims=True)

    def parameters(self) -> list[Layer]:
        W = self.W1.T if self.layout.transposed else self.W1
        self.params[0].W = np.ascontiguousarray(W)
        return self.params


class GramSolver(_FirstLayerApart):
    """Exact full-batch gradient descent that multiplies by the m x m Gram matrix, not X.

    Z1_lin, C and G stay float64 whatever the training dtype: they accumulate over every
    iteration, and float32 accumulation drifts.
    """

    BLOCK = 1024  # rows of X (input features) upcast to float64 at a time

    def __init__(self, backend, params, X, Y, lr):
        super().__init__(backend, params, X, Y, lr)
        xp = self.xp
        m = X.shape[1]
        self.dtype = X.dtype
        self.W1_0 = xp.astype(params[0].W, xp.float64)
        on = {"device": backend.device} if backend.name == "strict" else {}
        self.G = xp.zeros((m, m), dtype=xp.float64, **on)  # formed once
        self.Z1_lin = xp.zeros((self.W1_0.shape[0], m), dtype=xp.float64, **on)
        for a, b, Xb in self._float64_blocks():
            self.G += Xb.T @ Xb
            self.Z1_lin += self.W1_0[:, a:b] @ Xb  # W1 @ X without b1
        self.C = xp.zeros_like(self.Z1_lin)

    def _float64_blocks(self):
        """X in float64, a block of input features at a time: float32 training never holds
        a float64 copy of the data set."""
        n = self.X.shape[0]
        for a in range(0, n, self.BLOCK):
            b = min(a + self.BLOCK, n)
            yield a, b, self.xp.astype(self.X[a:b, :], self.xp.float64, copy=False)

    def first_linear(self) -> Array:
        return self.xp.astype(self.Z1_lin, self.dtype, copy=False) + self.params[0].b

    def first_update(self, dZ1: Array) -> None:
        xp = self.xp
        step = xp.astype(dZ1, xp.float64, copy=False)  # already lr/m * dZ1
        self.Z1_lin -= step @ self.G
        self.C += step
        self.params[0].b -= xp.sum(dZ1, axis=1, keepdims=True)

    def parameters(self) -> list[Layer]:
        """Materialize W1 = W1(0) - C @ X^T (one pass over X), in the training dtype."""
        xp = self.xp
        concat = getattr(xp, "concat", None) or xp.concatenate  # the array API name, or CuPy's
        parts = [self.W1_0[:, a:b] - self.C @ Xb.T for a, b, Xb in self._float64_blocks()]
        self.params[0].W = xp.astype(concat(parts, axis=1), self.dtype)
        return self.params


class NumpyGramSolver(GramSolver):
    """GramSolver's iteration on NumPy in fewer, cheaper calls: biases added in place,
    ReLU' as a multiply by the mask, sums as array methods, the update applied layer by
    layer. The same operations in the same order, so the results are bit-identical to
    GramSolver (tested); about 25 % less time per iteration (docs/benchmarks.md).
    """

    def step(self, want_cost: bool):
        p, last = self.params, len(self.params) - 1
        Z = self.Z1_lin.astype(self.dtype, copy=False) + p[0].b
        Zs, As = [Z], []
        A = np.maximum(Z, 0.0)
        for l in range(1, last + 1):
            As.append(A)
            Z = p[l].W @ A
            Z += p[l].b
            Zs.append(Z)
            A = network.sigmoid(np, Z) if l == last else np.maximum(Z, 0.0)
        cost = self._cost(Z) if want_cost else None
        dZ = A - self.Y
        dZ *= self.scale
        for l in range(last, 0, -1):
            dA = p[l].W.T @ dZ  # with W before its update, as in backward()
            p[l].W -= dZ @ As[l - 1].T
            p[l].b -= dZ.sum(axis=1, keepdims=True)
            dA *= Zs[l - 1] > 0.0
            dZ = dA
        step = dZ.astype(np.float64, copy=False)
        self.Z1_lin -= step @ self.G
        self.C += step
        p[0].b -= dZ.sum(axis=1, keepdims=True)
        self.i += 1
        return cost


class GeneralSolver:
    """Every training option, on one process or many, on the generic code: mini-batches,
    momentum and Adam, learning-rate decay, L2 and dropout.

    Iteration i takes a (mini-)batch of training positions: a seeded shuffle of all of them
    per epoch, drawn on the host, so every backend and every process sees the same order.
    This process keeps the batch's examples of its own block, computes the gradient *sums*
    over them, the reducer adds those up over all processes, and only then are they divided
    by the batch's size (and the L2 gradient added). Dropout masks are drawn for the whole
    batch from the iteration's stream, and each process takes its columns. So one process
    and N processes compute the same update. The logged cost is the whole training set's
    (with the L2 term, without dropout) before the update.
    """

    def __init__(
        self,
        backend: Backend,
        params: list[Layer],
        shard: DeviceShard,
        reducer,
        config: TrainConfig,
        m_total: int,
    ):
        self.backend, self.xp = backend, backend.xp
        self.params, self.shard, self.reducer, self.config = params, shard, reducer, config
        self.M = m_total  # training examples over all processes
        self.batch_size = min(config.batch_size or m_total, m_total)
        self.n_batches = -(-m_total // self.batch_size)
        self.opt = make_optimizer(
            config.optimizer, self.xp, params, config.beta1, config.beta2, config.epsilon
        )
        self.i = 0  # iterations done (set by the trainer on resume)
        self._perm_epoch, self._perm = None, None

    def _members(self, i: int):
        """(global positions of iteration i's batch, indices of those held here, epoch)."""
        s = self.shard
        epoch, k = divmod(i, self.n_batches)
        if self._perm_epoch != epoch:
            self._perm = host_rng(self.config.seed, SHUFFLE, epoch).permutation(self.M)
            self._perm_epoch = epoch
        members = self._perm[k * self.batch_size : (k + 1) * self.batch_size]
        return members, np.flatnonzero((members >= s.start) & (members < s.stop)), epoch

    def batch(self, i: int):
        """(X, Y, this process's columns of the batch, the batch's global size, epoch); X and
        Y are None when none of the batch's examples live here."""
        s = self.shard
        if self.batch_size == self.M:
            X, Y = s.columns()
            return X, Y, slice(s.start, s.stop), self.M, i
        members, mine, epoch = self._members(i)
        X, Y = s.batch(members[mine] - s.start) if mine.size else (None, None)
        if s.streams:  # read the next batch from disk while this one trains
            upcoming, mine_next, _ = self._members(i + 1)
            if mine_next.size:
                s.prefetch(upcoming[mine_next] - s.start)
        return X, Y, mine, members.size, epoch

    def dropout_masks(self, i: int, columns, m_batch: int) -> list[Array] | None:
        """This process's columns of iteration i's masks, drawn for the whole batch."""
        c = self.config
        if c.keep_prob >= 1:
            return None
        rng = host_rng(c.seed, DROPOUT, i)
        return [
            self.backend.asarray(
                ((rng.random((n, m_batch)) < c.keep_prob) / c.keep_prob)[:, columns], c.dtype
            )
            for n in c.layers[1:-1]
        ]

    def loss_sum(self) -> Array:
        """The summed loss over this process's training examples (current parameters)."""
        xp, total = self.xp, 0.0
        for X, Y in self.shard.chunks():
            _, caches = network.forward(xp, self.params, X)
            total = total + network.loss_sum_from_logits(xp, caches[-1][1], Y)
        return total

    def step(self, want_cost: bool):
        xp, c, params = self.xp, self.config, self.params
        X, Y, columns, m_batch, epoch = self.batch(self.i)
        D = self.dropout_masks(self.i, columns, m_batch)
        loss = penalty = None
        if want_cost:
            penalty = network.l2_penalty(xp, params, c.l2) if c.l2 else None
            if m_batch < self.M or D is not None:
                loss = self.loss_sum()
        # Every gradient is linear in dZ_L: scaled by 1/m_batch (the batch's global size),
        # this process's gradients are its share of the batch mean and the reducer's sum of
        # the shares is the mean. Plain gradient descent folds the learning rate in too and
        # applies the results as steps: no extra passes over the weights.
        lr = c.learning_rate / (1.0 + c.lr_decay * epoch)
        plain = c.optimizer == "gd"
        scale = (lr if plain else 1.0) / m_batch
        if X is None:  # no example of this batch lives here: this process adds zeros
            parts = [xp.zeros_like(a) for p in params for a in (p.W, p.b)]
        else:
            AL, caches = network.forward(xp, params, X, D)
            if want_cost and loss is None:  # the full batch, no dropout: this very forward
                loss = network.loss_sum_from_logits(xp, caches[-1][1], Y)
            grads = network.backward(xp, params, caches, AL, Y, scale=scale, dropout=D)
            parts = [a for g in grads for a in (g.dW, g.db)]
        parts = self.reducer.sum_arrays(parts)
        grads = []
        for p, dW, db in zip(params, parts[0::2], parts[1::2]):
            if c.l2:  # (l2 / m) W, added once, after the reduction
                dW = dW + (c.l2 * scale) * p.W
            grads.append(Grad(dW=dW, db=db))
        if plain:
            network.apply_steps(params, grads)
        else:
            self.opt.update(params, grads, lr)
        self.i += 1
        return (loss, penalty) if want_cost else None

    def parameters(self) -> list[Layer]:
        return self.params

    def optimizer_state(self) -> dict:
        return self.opt.state()

    def load_optimizer_state(self, state: dict) -> None:
        self.opt.load_state(state)


def gram_bytes(m: int) -> int:
    return 8 * m * m


def choose_solver(
    config: TrainConfig, backend: Backend, m: int, needs_params: bool = False, processes: int = 1
) -> str:
    """The one place that decides which solver runs: ``auto`` becomes gram for the plain
    recipe with m < n_x when G fits in free memory, else direct; anything beyond the plain
    recipe, or more than one process, runs the general solver.

    ``needs_params``: the trainer reads the parameters during training (validation,
    checkpoints), which the Gram solver only forms at the end.
    """
    name, layers = config.solver, config.layers
    if name not in SOLVERS:
        raise GpucatError(f"unknown solver {name!r}: choose one of {', '.join(SOLVERS)}.")
    if not config.is_plain:
        if name in ("gram", "fused"):
            raise GpucatError(
                f"--solver {name} runs plain full-batch gradient descent only; drop --solver "
                "for mini-batches, other optimizers, --lr-decay, --l2 or --keep-prob."
            )
        return "general"
    if name == "gram" and needs_params:
        raise GpucatError(
            "--solver gram cannot be combined with --validation or checkpoints; use direct."
        )
    if processes > 1:
        if name in ("gram", "fused"):
            raise GpucatError(f"--solver {name} runs on one process; drop it for --distributed.")
        return "general"  # the direct algorithm, its gradients summed over processes
    if name != "auto":
        return name
    if needs_params or len(layers) < 3 or m >= layers[0]:
        return "direct"
    return "gram" if gram_bytes(m) <= GRAM_MEMORY_FRACTION * backend.free_memory() else "direct"


def make_solver(
    name: str,
    backend: Backend,
    params: list[Layer],
    shard: DeviceShard,
    reducer,
    config: TrainConfig,
    m_total: int,
    layout: str | None = None,
):
    """The solver object for a resolved name on this backend (``layout``: the NumPy direct
    path's, when a resumed run must keep the one it started with)."""
    if name == "general":
        return GeneralSolver(backend, params, shard, reducer, config, m_total)
    X, Y = shard.columns()
    lr = config.learning_rate
    if name == "gram":
        cls = NumpyGramSolver if backend.name == "numpy" else GramSolver
        return cls(backend, params, X, Y, lr)
    if name == "fused":
        from gpucat.fused import FusedSolver

        return FusedSolver(backend, params, X, Y, lr)
    if backend.name == "numpy" and len(params) >= 2:
        return NumpyDirectSolver(backend, params, X, Y, lr, layout)
    return DirectSolver(backend, params, X, Y, lr)
