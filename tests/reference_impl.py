"""An independent, plain-NumPy float64 implementation of the reference recipe.

Written the way the original course program is (dict of parameters, the textbook dA
formula at the output, the global legacy NumPy generator), and sharing no code with gpucat,
so that agreement with it means something.
"""

import numpy as np


def init(layer_dims, seed):
    np.random.seed(seed)
    p = {}
    for l in range(1, len(layer_dims)):
        p["W" + str(l)] = np.random.randn(layer_dims[l], layer_dims[l - 1]) / np.sqrt(
            layer_dims[l - 1]
        )
        p["b" + str(l)] = np.zeros((layer_dims[l], 1))
    return p


def forward(X, p):
    L = len(p) // 2
    caches = []
    A = X
    for l in range(1, L + 1):
        A_prev = A
        Z = np.dot(p["W" + str(l)], A_prev) + p["b" + str(l)]
        A = 1 / (1 + np.exp(-Z)) if l == L else np.maximum(0, Z)
        caches.append((A_prev, Z))
    return A, caches


def cost(AL, Y):
    m = Y.shape[1]
    return float(np.squeeze(-np.sum(Y * np.log(AL) + (1 - Y) * np.log(1 - AL)) / m))


def backward(AL, Y, p, caches):
    L = len(caches)
    m = AL.shape[1]
    g = {}
    dA = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))
    for l in reversed(range(1, L + 1)):
        A_prev, Z = caches[l - 1]
        if l == L:
            s = 1 / (1 + np.exp(-Z))
            dZ = dA * s * (1 - s)
        else:
            dZ = np.array(dA, copy=True)
            dZ[Z <= 0] = 0
        g["dW" + str(l)] = np.dot(dZ, A_prev.T) / m
        g["db" + str(l)] = np.sum(dZ, axis=1, keepdims=True) / m
        dA = np.dot(p["W" + str(l)].T, dZ)
    return g


def train(X, Y, layer_dims, learning_rate, iterations, seed=1, log_every=100):
    """Returns (params, [(iteration, cost), ...]) logged like gpucat's default."""
    p = init(layer_dims, seed)
    costs = []
    L = len(p) // 2
    for i in range(iterations):
        AL, caches = forward(X, p)
        if i % log_every == 0 or i == iterations - 1:
            costs.append((i, cost(AL, Y)))
        g = backward(AL, Y, p, caches)
        for l in range(1, L + 1):
            p["W" + str(l)] -= learning_rate * g["dW" + str(l)]
            p["b" + str(l)] -= learning_rate * g["db" + str(l)]
    return p, costs


def predict(X, p):
    AL, _ = forward(X, p)
    return (AL > 0.5).astype(float)
