"""Solvers: how one training iteration is carried out.

All of them run the same algorithm (forward, cost, backward, update of the reference
recipe) and differ only in how they spend the arithmetic:

- ``DirectSolver``: the network math as written in network.py, on any backend.
- ``NumpyDirectSolver``: the same on NumPy in float32, with the first layer's two products
  over X in the memory layouts that BLAS runs fastest.
- ``GeneralSolver``: everything beyond the original recipe (mini-batches, momentum and
  Adam, learning-rate decay, L2, dropout), on the generic code.
- ``GramSolver`` (``NumpyGramSolver`` on NumPy): exact for full batch, and never touches X inside the loop. Since every
  update of W1 is a combination of the rows of X^T, W1 = W1(0) - C @ X^T, so
  Z1_lin = W1 @ X = W1(0) @ X - C @ G with the m x m Gram matrix G = X^T @ X. The loop
  updates Z1_lin -= (lr/m) dZ1 @ G and C += (lr/m) dZ1; W1 is formed only when asked for.
  See docs/gram-solver.md.

Each solver's ``step`` queues one iteration and returns the cost (a 0-d device array,
computed before the update) when asked, else None: no host sync inside.
"""

from __future__ import annotations

import numpy as np

from gpucat import network
from gpucat.backend import Backend
from gpucat.config import SOLVERS, TrainConfig
from gpucat.errors import GpucatError
from gpucat.network import Array, Layer
from gpucat.optim import make_optimizer

# Random streams are counter-based: the numbers for (seed, stream, counter) never depend on
# what was drawn before, so a resumed run draws exactly what an uninterrupted one would.
SHUFFLE, DROPOUT, SPLIT = 1, 2, 3
GRAM_MEMORY_FRACTION = 0.25  # auto uses gram only when G takes at most this share of free memory


def host_rng(seed: int, stream: int, counter: int) -> np.random.Generator:
    """The host generator for one (seed, stream, counter): identical on every backend."""
    return np.random.default_rng([seed, stream, counter])


class DirectSolver:
    """The reference algorithm, written once against the backend's namespace."""

    def __init__(self, backend: Backend, params: list[Layer], X: Array, Y: Array, lr: float):
        self.backend, self.xp = backend, backend.xp
        self.params, self.X, self.Y, self.lr = params, X, Y, lr
        self.scale = lr / X.shape[1]
        self.i = 0  # iterations done (set by the trainer on resume)

    def step(self, want_cost: bool) -> Array | None:
        AL, caches = network.forward(self.xp, self.params, self.X)
        cost = network.cost_from_logits(self.xp, caches[-1][1], self.Y) if want_cost else None
        # lr/m in place of 1/m: the backward pass yields the update steps directly
        steps = network.backward(self.xp, self.params, caches, AL, self.Y, scale=self.scale)
        network.apply_steps(self.params, steps)
        self.i += 1
        return cost

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

    def step(self, want_cost: bool) -> Array | None:
        xp = self.xp
        Z1 = self.first_linear()
        AL, caches = network.forward(xp, self.rest, network.relu(xp, Z1))
        cost = network.cost_from_logits(xp, caches[-1][1], self.Y) if want_cost else None
        steps, dA1 = network.backward_to_input(xp, self.rest, caches, AL, self.Y, scale=self.scale)
        network.apply_steps(self.rest, steps)
        self.first_update(network.backprop_relu(xp, dA1, Z1))
        self.i += 1
        return cost


class NumpyDirectSolver(_FirstLayerApart):
    """The direct algorithm on NumPy in float32, with the first layer's products laid out
    for BLAS: X kept both with examples as rows (m, n_x), as PyTorch does, for the forward
    product Z1 = (X_rows @ W1^T)^T, and as columns for the update W1^T -= X @ dZ1^T, with
    W1 held transposed so that the update lands in a reused buffer and runs over contiguous
    memory. In float64 the plain layout (DirectSolver) is as fast at m = 209 and up to 1.5x
    faster for m >= 1000 with OpenBLAS (docs/benchmarks.md), so float64 uses that.
    """

    def __init__(self, backend, params, X, Y, lr):
        super().__init__(backend, params, X, Y, lr)
        self.X_rows = np.ascontiguousarray(X.T)
        self.X_cols = np.ascontiguousarray(X)
        self.W1T = np.ascontiguousarray(params[0].W.T)  # (n_x, n_1): the working copy
        self.buf = np.empty_like(self.W1T)

    def first_linear(self) -> Array:
        Z1 = (self.X_rows @ self.W1T).T
        Z1 += self.params[0].b
        return Z1

    def first_update(self, dZ1: Array) -> None:
        self.W1T -= np.matmul(self.X_cols, dZ1.T, out=self.buf)
        self.params[0].b -= np.sum(dZ1, axis=1, keepdims=True)

    def parameters(self) -> list[Layer]:
        self.params[0].W = np.ascontiguousarray(self.W1T.T)
        return self.params


class GramSolver(_FirstLayerApart):
    """Exact full-batch gradient descent that multiplies by the m x m Gram matrix, not X.

    Z1_lin, C and G stay float64 whatever the training dtype: they accumulate over every
    iteration, and float32 accumulation drifts.
    """

    def __init__(self, backend, params, X, Y, lr):
        super().__init__(backend, params, X, Y, lr)
        xp = self.xp
        f64 = xp.float64
        X64 = xp.astype(X, f64)
        self.dtype = X.dtype
        self.W1_0 = xp.astype(params[0].W, f64)
        self.G = X64.T @ X64  # (m, m), formed once
        self.Z1_lin = self.W1_0 @ X64  # W1 @ X without b1
        self.C = xp.zeros_like(self.Z1_lin)

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
        W1 = self.W1_0 - self.C @ xp.astype(self.X, xp.float64).T
        self.params[0].W = xp.astype(W1, self.dtype)
        return self.params


class NumpyGramSolver(GramSolver):
    """GramSolver's iteration on NumPy in fewer, cheaper calls: biases added in place,
    ReLU' as a multiply by the mask, sums as array methods, the update applied layer by
    layer. The same operations in the same order, so the results are bit-identical to
    GramSolver (tested); about 25 % less time per iteration (docs/benchmarks.md).
    """

    def step(self, want_cost: bool) -> Array | None:
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
        cost = network.cost_from_logits(np, Z, self.Y) if want_cost else None
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


class GeneralSolver(DirectSolver):
    """Mini-batches, optimizers, learning-rate decay, L2 and dropout on the generic code.

    Shuffles and dropout masks are drawn on the host from counter-based streams, so every
    backend sees the same numbers; the index arrays and masks are copied to the device
    (small host-to-device copies, never a read back). The logged cost is the full training
    set's cost (with the L2 term, without dropout) before the iteration's update.
    """

    def __init__(self, backend, params, X, Y, config: TrainConfig):
        super().__init__(backend, params, X, Y, config.learning_rate)
        self.config = config
        self.m = X.shape[1]
        self.batch = min(config.batch_size or self.m, self.m)
        self.n_batches = -(-self.m // self.batch)
        self.opt = make_optimizer(
            config.optimizer, self.xp, params, config.beta1, config.beta2, config.epsilon
        )
        self.dtype = X.dtype
        self._perm_epoch, self._perm = None, None

    def full_cost(self) -> Array:
        xp, c = self.xp, self.config
        _, caches = network.forward(xp, self.params, self.X)
        cost = network.cost_from_logits(xp, caches[-1][1], self.Y)
        return cost + network.l2_cost(xp, self.params, c.l2, self.m) if c.l2 else cost

    def minibatch(self, i: int) -> tuple[Array, Array, int]:
        epoch, k = divmod(i, self.n_batches)
        if self.batch == self.m:
            return self.X, self.Y, epoch
        if self._perm_epoch != epoch:
            self._perm = host_rng(self.config.seed, SHUFFLE, epoch).permutation(self.m)
            self._perm_epoch = epoch
        idx = self.backend.asarray(self._perm[k * self.batch : (k + 1) * self.batch])
        xp = self.xp
        return xp.take(self.X, idx, axis=1), xp.take(self.Y, idx, axis=1), epoch

    def dropout_masks(self, i: int, m: int) -> list[Array] | None:
        keep = self.config.keep_prob
        if keep >= 1:
            return None
        rng = host_rng(self.config.seed, DROPOUT, i)
        return [
            self.backend.asarray((rng.random((n, m)) < keep) / keep, self.config.dtype)
            for n in self.config.layers[1:-1]
        ]

    def step(self, want_cost: bool) -> Array | None:
        xp, c = self.xp, self.config
        cost = self.full_cost() if want_cost else None
        Xb, Yb, epoch = self.minibatch(self.i)
        D = self.dropout_masks(self.i, Xb.shape[1])
        AL, caches = network.forward(xp, self.params, Xb, D)
        grads = network.backward(xp, self.params, caches, AL, Yb, dropout=D, l2=c.l2)
        self.opt.update(self.params, grads, c.learning_rate / (1.0 + c.lr_decay * epoch))
        self.i += 1
        return cost

    def optimizer_state(self) -> dict:
        return self.opt.state()

    def load_optimizer_state(self, state: dict) -> None:
        self.opt.load_state(state)


def gram_bytes(m: int) -> int:
    return 8 * m * m


def choose_solver(config: TrainConfig, backend: Backend, m: int, needs_params: bool = False) -> str:
    """Resolve ``auto``: gram for the plain recipe with m < n_x when G fits in free memory.

    ``needs_params``: the trainer reads the parameters during training (validation,
    checkpoints), which the Gram solver only forms at the end.
    """
    name, layers = config.solver, config.layers
    if name not in SOLVERS:
        raise GpucatError(f"unknown solver {name!r}: choose one of {', '.join(SOLVERS)}.")
    if not config.is_plain:
        if name == "gram":
            raise GpucatError(
                "--solver gram runs plain full-batch gradient descent only; drop --solver "
                "for mini-batches, other optimizers, --lr-decay, --l2 or --keep-prob."
            )
        return "general"
    if name == "gram" and needs_params:
        raise GpucatError(
            "--solver gram cannot be combined with --validation or checkpoints; use direct."
        )
    if name != "auto":
        return name
    if needs_params or len(layers) < 3 or m >= layers[0]:
        return "direct"
    return "gram" if gram_bytes(m) <= GRAM_MEMORY_FRACTION * backend.free_memory() else "direct"


def make_solver(
    name: str, backend: Backend, params: list[Layer], X: Array, Y: Array, config: TrainConfig
):
    """The solver object for a resolved name on this backend."""
    lr = config.learning_rate
    if name == "general":
        return GeneralSolver(backend, params, X, Y, config)
    if name == "gram":
        cls = NumpyGramSolver if backend.name == "numpy" else GramSolver
        return cls(backend, params, X, Y, lr)
    if backend.name == "numpy" and len(params) >= 2 and X.dtype == np.float32:
        return NumpyDirectSolver(backend, params, X, Y, lr)
    return DirectSolver(backend, params, X, Y, lr)
