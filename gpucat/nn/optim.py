"""Optimizers: gradient descent, momentum and Adam, each step through the device's primitives
(one fused kernel per parameter on CuPy). Their state is device arrays, named for checkpoints.

``update(params, grads, lr, l2)`` changes the parameters in place; the gradient of
the L2 term, l2·W, is added to each weight's gradient inside the step (biases have none).
"""

from __future__ import annotations

from typing import Any

from gpucat.backends import Device
from gpucat.config import OPTIMIZERS
from gpucat.nn.network import Layer


class GradientDescent:
    """p ← p − lr·g. Linear in g: solvers fold lr into the gradient or into the product."""

    name = "gd"

    def __init__(self, device: Device, params: list[Layer], **hyper):
        self.device = device

    def update(self, params: list[Layer], grads: list[tuple], lr: float, l2: float) -> None:
        for layer, (dW, db) in zip(params, grads):
            if dW is not None:  # None: a weight its solver updates itself (Gram's W1)
                self.device.sgd(layer.W, dW, lr, l2)
            self.device.sgd(layer.b, db, lr)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


def _named(name: str, pairs: list[tuple]) -> dict[str, Any]:
    """Per-layer state as checkpoints name it: {name}.W1, {name}.b1, ..."""
    return {f"{name}.{k}{l}": a for l, pair in enumerate(pairs, 1) for k, a in zip("Wb", pair)}


def _pairs(state: dict[str, Any], name: str, n: int) -> list[tuple]:
    """The inverse of ``_named`` for n layers."""
    return [(state[f"{name}.W{l}"], state[f"{name}.b{l}"]) for l in range(1, n + 1)]


class Momentum(GradientDescent):
    """v ← β·v + (1 − β)·g;  p ← p − lr·v  (an exponentially weighted average of gradients)."""

    name = "momentum"

    def __init__(self, device, params, beta1: float = 0.9, **hyper):
        super().__init__(device, params)
        self.beta = beta1
        zeros = device.xp.zeros_like
        self.v = [(zeros(p.W), zeros(p.b)) for p in params]

    def update(self, params, grads, lr, l2):
        for layer, (dW, db), (vW, vb) in zip(params, grads, self.v):
            if dW is not None:
                self.device.momentum(layer.W, dW, vW, self.beta, lr, l2)
            self.device.momentum(layer.b, db, vb, self.beta, lr)

    def state(self):
        return _named("v", self.v)

    def load_state(self, state):
        self.v = _pairs(state, "v", len(self.v))


class Adam(GradientDescent):
    """m ← β1·m + (1 − β1)·g;  v ← β2·v + (1 − β2)·g²;  p ← p − lr·m̂ / (√v̂ + ε), with the
    bias corrections m̂ = m / (1 − β1ᵗ), v̂ = v / (1 − β2ᵗ)."""

    name = "adam"

    def __init__(self, device, params, beta1=0.9, beta2=0.999, epsilon=1e-8, **hyper):
        super().__init__(device, params)
        self.beta1, self.beta2, self.epsilon, self.t = beta1, beta2, epsilon, 0
        zeros = device.xp.zeros_like
        self.m = [(zeros(p.W), zeros(p.b)) for p in params]
        self.v = [(zeros(p.W), zeros(p.b)) for p in params]

    def update(self, params, grads, lr, l2):
        self.t += 1
        hyper = (self.beta1, self.beta2, self.epsilon, lr, self.t)
        for layer, (dW, db), (mW, mb), (vW, vb) in zip(params, grads, self.m, self.v):
            if dW is not None:
                self.device.adam(layer.W, dW, mW, vW, *hyper, l2)
            self.device.adam(layer.b, db, mb, vb, *hyper)

    def state(self):
        return {"t": self.t, **_named("m", self.m), **_named("v", self.v)}

    def load_state(self, state):
        self.t = int(state["t"])
        self.m, self.v = _pairs(state, "m", len(self.m)), _pairs(state, "v", len(self.v))


def make_optimizer(name: str, device: Device, params: list[Layer], **hyper) -> GradientDescent:
    """The optimizer called ``name`` (one of OPTIMIZERS); ``hyper``: beta1, beta2, epsilon."""
    classes = dict(zip(OPTIMIZERS, (GradientDescent, Momentum, Adam)))
    return classes[name](device, params, **hyper)
