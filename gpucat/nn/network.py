"""The L-layer network, written once against a device's primitives (gpucat/backends), in the
order of the README's equations:

Forward:  Z = W · A_prev + b,  A = relu(Z) in hidden layers, ŷ = σ(Z) at the output.
Cost:     the summed binary cross-entropy from the output logits (finite when σ saturates).
Backward: dZ_L = ŷ − y;  dW = dZ · A_prevᵀ / m,  db = Σ dZ / m,  dA_prev = Wᵀ · dZ,
          dZ = dA ⊙ relu′(Z) in hidden layers.

This is the only forward and the only backward pass in gpucat: every solver, every
optimizer, every device and every process runs them. Nothing here reads a value back to
the host, so an iteration queues its work without a sync.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from gpucat.backends import Array, Device


@dataclass
class Layer:
    """One fully connected layer: weights W (n_out, n_in) and bias b (n_out, 1)."""

    W: Array
    b: Array


def params_to_device(
    device: Device, host_params: list[tuple[np.ndarray, np.ndarray]], dtype: str
) -> list[Layer]:
    """Move host (W, b) pairs to the device, cast to the training dtype."""
    return [Layer(device.asarray(W, dtype), device.asarray(b, dtype)) for W, b in host_params]


def params_to_host(device: Device, params: list[Layer]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Bring parameters back to the host (to save or compare them), C-ordered."""
    host = device.to_host
    return [(np.ascontiguousarray(host(p.W)), np.ascontiguousarray(host(p.b))) for p in params]


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


@dataclass
class Pass:
    """What the backward pass needs of a forward pass: each layer's input A_prev and
    pre-activation Z, and the dropout masks."""

    inputs: list[Array]
    Zs: list[Array]
    masks: list[Array] | None


def forward(
    device: Device,
    params: list[Layer],
    X: Array,
    Y: Array,
    scale: float | None,
    masks: list[Array] | None = None,
    Z1: Array | None = None,
) -> tuple[Array | None, Array, Pass]:
    """(dZ_L times ``scale``, the summed loss, the Pass): the network on X against labels Y.

    ``scale`` multiplies dZ_L: 1/m for the mean's gradient, lr/m when the step is applied as
    gradient descent; every gradient is linear in dZ_L, so it is applied once, here (None:
    the loss alone). ``masks``: per hidden layer, 0 where a unit is dropped and 1/keep_prob
    where kept (inverted dropout). ``Z1``: the first layer's W1·X when the solver forms it
    another way (the Gram solver)."""
    inputs, Zs = [], []
    A, last = X, len(params) - 1
    for l, layer in enumerate(params):
        Z = Z1 if (l == 0 and Z1 is not None) else device.matmul(layer.W, A)
        inputs.append(A)
        Zs.append(Z)
        if l < last:
            A = device.bias_relu(Z, layer.b, None if masks is None else masks[l])
    dZ, loss = device.output(Zs[-1], params[-1].b, Y, scale)
    return dZ, loss, Pass(inputs, Zs, masks)


def backward(
    device: Device,
    params: list[Layer],
    fwd: Pass,
    dZ: Array,
    emit: Callable[[int, Array, Array], None],
) -> None:
    """Propagate dZ_L back through the layers, last first: ``emit(l, dZ, A_prev)`` receives
    each layer's dZ (already scaled) with its input, and turns it into that layer's
    ``gradient`` or applies its step (``descend``), as the solver chooses. dA_prev = Wᵀ · dZ
    is formed with W before ``emit`` changes it, and never for the input layer, whose dA
    nobody needs."""
    for l in range(len(params) - 1, -1, -1):
        dA_prev = device.matmul_tn(params[l].W, dZ) if l > 0 else None
        emit(l, dZ, fwd.inputs[l])
        if l > 0:
            mask = None if fwd.masks is None else fwd.masks[l - 1]
            dZ = device.backprop_relu(dA_prev, fwd.Zs[l - 1], mask)


def gradient(device: Device, dZ: Array, A_prev: Array) -> tuple[Array, Array]:
    """One layer's (dW, db) from its dZ, which carries the 1/m: dW = dZ · A_prevᵀ, db = Σ dZ."""
    return device.matmul_nt(dZ, A_prev), device.sum_rows(dZ)


def descend(device: Device, layer: Layer, dZ: Array, A_prev: Array, decay: float = 1.0) -> None:
    """One layer's gradient-descent step as the backward pass yields it, dZ carrying lr/m:
    W ← decay·W − dZ · A_prevᵀ (decay = 1 − lr·λ/M with L2), b ← b − Σ dZ."""
    device.descend(layer.W, dZ, A_prev, decay)
    device.descend_bias(layer.b, dZ)


def loss_sum(device: Device, params: list[Layer], chunks) -> Array:
    """The summed loss of the parameters over (X, Y) chunks, without dropout (0-d)."""
    total = 0.0
    for X, Y in chunks:
        total = total + forward(device, params, X, Y, None)[1]
    return total


def predict_proba(device: Device, params: list[Layer], X: Array) -> Array:
    """The probability of "cat" for each column of X, shape (1, m)."""
    A, last = X, len(params) - 1
    for l, layer in enumerate(params):
        Z = device.matmul(layer.W, A)
        if l < last:
            A = device.bias_relu(Z, layer.b)
    Z += params[-1].b
    return device.sigmoid(Z)


def dead_layers(device: Device, params: list[Layer], X: Array) -> Array | None:
    """A 0/1 flag per hidden layer: 1 when every unit is inactive (ReLU output 0) for every
    example of X. A layer like that cuts the input off: the network then predicts the same
    probability for every image, whatever it shows."""
    xp, flags, A = device.xp, [], X
    for layer in params[:-1]:
        A = device.bias_relu(device.matmul(layer.W, A), layer.b)
        flags.append(xp.max(A) <= 0.0)
    return xp.stack(flags) if flags else None
