"""The L-layer network, written once against an array namespace ``xp``.

Forward:  Z = W @ A_prev + b,  A = relu(Z) in hidden layers, sigmoid(Z) at the output.
Cost:     mean binary cross-entropy, computed from the output logits so it stays finite.
Backward: dZ = dA * g'(Z), dW = dZ @ A_prev.T / m, db = sum(dZ) / m, dA_prev = W.T @ dZ.
Update:   W -= lr * dW,  b -= lr * db.

Every function takes device arrays and returns device arrays: nothing here reads a value
back to the host, so one training iteration queues work without a single sync.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

Array = Any  # an array of the backend's namespace (NumPy, CuPy, array-api-strict)


@dataclass
class Layer:
    """One fully connected layer: weights W (n_out, n_in) and bias b (n_out, 1)."""

    W: Array
    b: Array


@dataclass
class Grad:
    """The gradients of the cost with respect to one layer's W and b."""

    dW: Array
    db: Array


def init_params(layer_sizes: list[int], seed: int = 1) -> list[tuple[np.ndarray, np.ndarray]]:
    """Initial (W, b) pairs on the host, float64, identical on every device.

    NumPy legacy ``RandomState(seed).randn(n_l, n_prev) / sqrt(n_prev)`` drawn layer by layer
    from one generator, zero biases: the reference recipe's initialization.
    """
    rng = np.random.RandomState(seed)
    return [
        (rng.randn(n_out, n_in) / np.sqrt(n_in), np.zeros((n_out, 1)))
        for n_in, n_out in zip(layer_sizes[:-1], layer_sizes[1:])
    ]


def relu(xp: Any, Z: Array) -> Array:
    return xp.maximum(Z, 0.0)


def backprop_relu(xp: Any, dA: Array, Z: Array) -> Array:
    """dZ = dA * relu'(Z), with relu'(0) = 0 as in the reference."""
    return xp.where(Z > 0.0, dA, 0.0)


def sigmoid(xp: Any, Z: Array) -> Array:
    """1 / (1 + exp(-Z)) without overflow: exp is only ever taken of -|Z|."""
    e = xp.exp(-xp.abs(Z))
    r = 1.0 / (1.0 + e)
    return xp.where(Z >= 0.0, r, e * r)


def loss_sum_from_logits(xp: Any, ZL: Array, Y: Array) -> Array:
    """The summed binary cross-entropy of sigmoid(ZL) against Y, as a 0-d array.

    -[y log s(z) + (1 - y) log(1 - s(z))] = max(z, 0) - z*y + log(1 + exp(-|z|)),
    which is finite for any finite logit, however saturated the sigmoid is. A sum, not a
    mean, so that pieces of a data set (chunks, processes) add up before the one division.
    """
    losses = xp.maximum(ZL, 0.0) - ZL * Y + xp.log1p(xp.exp(-xp.abs(ZL)))
    return xp.sum(losses)


def cost_from_logits(xp: Any, ZL: Array, Y: Array) -> Array:
    """The cost J: the mean binary cross-entropy over the m columns of ZL."""
    return loss_sum_from_logits(xp, ZL, Y) / ZL.shape[1]


def l2_penalty(xp: Any, params: list[Layer], l2: float) -> Array:
    """(l2 / 2) * the sum of every squared weight (biases excluded): m times the L2 term."""
    return (l2 / 2) * sum(xp.sum(layer.W * layer.W) for layer in params)


def l2_cost(xp: Any, params: list[Layer], l2: float, m: int) -> Array:
    """The L2 term of the cost, (l2 / 2m) * sum of every squared weight (biases excluded)."""
    return l2_penalty(xp, params, l2) / m


def forward(
    xp: Any, params: list[Layer], X: Array, dropout: list[Array] | None = None
) -> tuple[Array, list[tuple[Array, Array]]]:
    """The output probabilities AL and, per layer, the cache (A_prev, Z) for backward.

    ``dropout``: one mask per hidden layer, 0 where a unit is dropped and 1/keep_prob where
    it is kept (inverted dropout), multiplied into that layer's activations.
    """
    caches = []
    A = X
    last = len(params) - 1
    for l, layer in enumerate(params):
        Z = layer.W @ A + layer.b
        caches.append((A, Z))
        if l == last:
            A = sigmoid(xp, Z)
        else:
            A = relu(xp, Z) if dropout is None else relu(xp, Z) * dropout[l]
    return A, caches


def backward(
    xp: Any,
    params: list[Layer],
    caches: list[tuple[Array, Array]],
    AL: Array,
    Y: Array,
    scale: float | None = None,
    dropout: list[Array] | None = None,
    l2: float = 0.0,
) -> list[Grad]:
    """Gradients of the mean cross-entropy for every layer, first layer first.

    At the output, dA = -(Y/AL - (1-Y)/(1-AL)) times sigmoid'(Z) = AL(1-AL) simplifies to
    dZ = AL - Y: the same value, without dividing by an AL that has saturated to 0 or 1.
    dA_prev is not formed for the input layer, whose dA nobody needs.

    Every gradient is linear in dZ_L, so the 1/m of the mean is applied once, to dZ_L.
    ``scale`` replaces that 1/m: solvers pass lr/m and get the update steps lr*dW, lr*db.
    ``dropout`` takes the masks the forward pass used; ``l2`` adds (l2/m) * W to each dW.
    """
    return _backward(xp, params, caches, AL, Y, scale, False, dropout, l2)[0]


def backward_to_input(
    xp: Any,
    params: list[Layer],
    caches: list[tuple[Array, Array]],
    AL: Array,
    Y: Array,
    scale: float | None = None,
) -> tuple[list[Grad], Array]:
    """Like ``backward``, plus dA of the network's input (times the same scale): what a
    layer in front of this network needs."""
    return _backward(xp, params, caches, AL, Y, scale, True, None, 0.0)


def _backward(xp, params, caches, AL, Y, scale, to_input: bool, dropout, l2: float):
    grads: list[Grad] = [None] * len(params)  # type: ignore[list-item]
    s = 1.0 / AL.shape[1] if scale is None else scale
    dZ = (AL - Y) * s
    dA_prev = None
    for l in range(len(params) - 1, -1, -1):
        A_prev, _ = caches[l]
        dW = dZ @ A_prev.T
        if l2:
            dW = dW + (l2 * s) * params[l].W
        grads[l] = Grad(dW=dW, db=xp.sum(dZ, axis=1, keepdims=True))
        if l > 0 or to_input:
            dA_prev = params[l].W.T @ dZ
        if l > 0:
            if dropout is not None:
                dA_prev = dA_prev * dropout[l - 1]  # only kept units pass gradient back
            dZ = backprop_relu(xp, dA_prev, caches[l - 1][1])
    return grads, dA_prev


def update(params: list[Layer], grads: list[Grad], learning_rate: float) -> None:
    """Gradient descent in place: W -= lr * dW, b -= lr * db."""
    for layer, g in zip(params, grads):
        layer.W -= learning_rate * g.dW
        layer.b -= learning_rate * g.db


def apply_steps(params: list[Layer], steps: list[Grad]) -> None:
    """W -= step.dW, b -= step.db, for steps that already include the learning rate."""
    for layer, s in zip(params, steps):
        layer.W -= s.dW
        layer.b -= s.db


def dead_layers(xp: Any, params: list[Layer], X: Array) -> Array:
    """A 0/1 flag per hidden layer: 1 when every unit is inactive (ReLU output 0) for every
    example of X. A layer like that cuts the input off: the network then predicts the same
    probability for every image, whatever it shows."""
    flags = []
    A = X
    for layer in params[:-1]:
        A = relu(xp, layer.W @ A + layer.b)
        flags.append(xp.max(A) <= 0.0)
    return xp.stack(flags) if flags else None


def predict_proba(xp: Any, params: list[Layer], X: Array) -> Array:
    """The probability of "cat" for each column of X, shape (1, m)."""
    AL, _ = forward(xp, params, X)
    return AL
