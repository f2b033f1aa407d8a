"""Optimizers, hand-written on the array namespace: gradient descent, momentum, Adam.

Each keeps its state as device arrays, one per parameter, and exposes it by name for
checkpoints. ``update(params, grads, lr)`` changes the parameters in place.
"""

from __future__ import annotations

from typing import Any

from gpucat import network
from gpucat.network import Grad, Layer


class GradientDescent:
    """W -= lr * dW, b -= lr * db."""

    name = "gd"

    def __init__(self, xp: Any, params: list[Layer]):
        self.xp = xp

    def update(self, params: list[Layer], grads: list[Grad], lr: float) -> None:
        network.update(params, grads, lr)

    def state(self) -> dict[str, Any]:
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        pass


class Momentum(GradientDescent):
    """v = beta * v + (1 - beta) * g;  p -= lr * v  (an exponentially weighted average)."""

    name = "momentum"

    def __init__(self, xp: Any, params: list[Layer], beta: float = 0.9):
        super().__init__(xp, params)
        self.beta = beta
        self.v = [(xp.zeros_like(p.W), xp.zeros_like(p.b)) for p in params]

    def update(self, params, grads, lr):
        b = self.beta
        for layer, g, (vW, vb) in zip(params, grads, self.v):
            vW *= b
            vW += (1 - b) * g.dW
            vb *= b
            vb += (1 - b) * g.db
            layer.W -= lr * vW
            layer.b -= lr * vb

    def state(self):
        out = {}
        for l, (vW, vb) in enumerate(self.v, start=1):
            out[f"v.W{l}"], out[f"v.b{l}"] = vW, vb
        return out

    def load_state(self, state):
        self.v = [(state[f"v.W{l}"], state[f"v.b{l}"]) for l in range(1, len(self.v) + 1)]


class Adam(GradientDescent):
    """m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;  p -= lr * m_hat / (sqrt(v_hat) + eps),
    with the bias corrections m_hat = m / (1 - b1^t), v_hat = v / (1 - b2^t)."""

    name = "adam"

    def __init__(self, xp, params, beta1: float = 0.9, beta2: float = 0.999, epsilon: float = 1e-8):
        super().__init__(xp, params)
        self.beta1, self.beta2, self.epsilon = beta1, beta2, epsilon
        self.t = 0
        self.m = [(xp.zeros_like(p.W), xp.zeros_like(p.b)) for p in params]
        self.v = [(xp.zeros_like(p.W), xp.zeros_like(p.b)) for p in params]

    def update(self, params, grads, lr):
        xp, b1, b2 = self.xp, self.beta1, self.beta2
        self.t += 1
        c1, c2 = 1 - b1**self.t, 1 - b2**self.t
        for layer, g, (mW, mb), (vW, vb) in zip(params, grads, self.m, self.v):
            for p_name, grad, m, v in (("W", g.dW, mW, vW), ("b", g.db, mb, vb)):
                m *= b1
                m += (1 - b1) * grad
                v *= b2
                v += (1 - b2) * (grad * grad)
                step = (lr / c1) * m / (xp.sqrt(v / c2) + self.epsilon)
                if p_name == "W":
                    layer.W -= step
                else:
                    layer.b -= step

    def state(self):
        out = {"t": self.t}
        for l, ((mW, mb), (vW, vb)) in enumerate(zip(self.m, self.v), start=1):
            out[f"m.W{l}"], out[f"m.b{l}"], out[f"v.W{l}"], out[f"v.b{l}"] = mW, mb, vW, vb
        return out

    def load_state(self, state):
        n = len(self.m)
        self.t = int(state["t"])
        self.m = [(state[f"m.W{l}"], state[f"m.b{l}"]) for l in range(1, n + 1)]
        self.v = [(state[f"v.W{l}"], state[f"v.b{l}"]) for l in range(1, n + 1)]


def make_optimizer(name: str, xp: Any, params: list[Layer], beta1=0.9, beta2=0.999, epsilon=1e-8):
    if name == "gd":
        return GradientDescent(xp, params)
    if name == "momentum":
        return Momentum(xp, params, beta1)
    if name == "adam":
        return Adam(xp, params, beta1, beta2, epsilon)
    raise ValueError(name)
