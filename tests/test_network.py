"""The network math on every backend against an independent NumPy float64 computation."""

from __future__ import annotations

import numpy as np
import pytest
import reference_impl as ref
from conftest import RTOL, assert_matches_central_differences, rel_err

from gpucat import network
from gpucat.train import params_to_device, params_to_host

SIZES = [30, 8, 5, 3, 1]  # small, but with every kind of layer of the reference network


def small_problem(m=17, sizes=SIZES, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.random((sizes[0], m))
    Y = (rng.random((1, m)) > 0.5).astype(np.float64)
    return X, Y


def to_dict(host_params):
    p = {}
    for l, (W, b) in enumerate(host_params, start=1):
        p[f"W{l}"], p[f"b{l}"] = W.copy(), b.copy()
    return p


def test_activations_have_their_known_values(backend, dtype):
    """relu and sigmoid at points whose values are known exactly: sigmoid(ln 3) = 3/4,
    sigmoid(-ln 3) = 1/4, sigmoid(0) = 1/2, and far out 1 - e^-30 and e^-30 (to first order)."""
    import math

    z = [-30.0, -math.log(3), -2.5, 0.0, math.log(3), 0.7, 30.0]
    relu = [0.0, 0.0, 0.0, 0.0, math.log(3), 0.7, 30.0]
    sig = [
        math.exp(-30.0),
        0.25,
        1 / (1 + math.exp(2.5)),
        0.5,
        0.75,
        1 / (1 + math.exp(-0.7)),
        1 - math.exp(-30.0),
    ]
    Zd = backend.asarray(np.array([z]), dtype)
    xp = backend.xp
    assert rel_err(backend.to_host(network.relu(xp, Zd)), [relu]) <= RTOL[dtype]
    got = backend.to_host(network.sigmoid(xp, Zd))[0]
    for g, e in zip(got, sig):  # element by element: e^-30 is tiny beside the rest
        assert abs(g - e) <= RTOL[dtype] * e


def test_forward_cost_backward_update_match_reference(backend, dtype):
    X, Y = small_problem()
    host = network.init_params(SIZES, seed=1)
    p_ref = to_dict(host)
    AL_ref, caches_ref = ref.forward(X, p_ref)
    g_ref = ref.backward(AL_ref, Y, p_ref, caches_ref)

    xp = backend.xp
    params = params_to_device(backend, host, dtype)
    Xd, Yd = backend.asarray(X, dtype), backend.asarray(Y, dtype)
    AL, caches = network.forward(xp, params, Xd)
    tol = RTOL[dtype]
    assert rel_err(backend.to_host(AL), AL_ref) <= tol
    for (_, Z), (_, Z_ref) in zip(caches, caches_ref):
        assert rel_err(backend.to_host(Z), Z_ref) <= tol
    cost = backend.scalar(network.cost_from_logits(xp, caches[-1][1], Yd))
    assert rel_err(cost, ref.cost(AL_ref, Y)) <= tol

    grads = network.backward(xp, params, caches, AL, Yd)
    for l, g in enumerate(grads, start=1):
        assert rel_err(backend.to_host(g.dW), g_ref[f"dW{l}"]) <= tol, f"dW{l}"
        assert rel_err(backend.to_host(g.db), g_ref[f"db{l}"]) <= tol, f"db{l}"

    lr = 0.1
    network.update(params, grads, lr)
    for l, (W, b) in enumerate(params_to_host(backend, params), start=1):
        assert rel_err(W, p_ref[f"W{l}"] - lr * g_ref[f"dW{l}"]) <= tol
        assert rel_err(b, p_ref[f"b{l}"] - lr * g_ref[f"db{l}"]) <= tol


def test_gradients_match_central_differences():
    """Every parameter of a small float64 network against (J(p+h) - J(p-h)) / 2h."""
    sizes = [6, 5, 3, 1]
    X, Y = small_problem(m=9, sizes=sizes, seed=5)
    host = network.init_params(sizes, seed=2)
    # nonzero biases, so that their gradients are exercised away from the start point
    host = [(W, np.full_like(b, 0.1)) for W, b in host]
    params = [network.Layer(W.copy(), b.copy()) for W, b in host]

    def J():
        _, caches = network.forward(np, params, X)
        return float(network.cost_from_logits(np, caches[-1][1], Y))

    AL, caches = network.forward(np, params, X)
    assert_matches_central_differences(params, network.backward(np, params, caches, AL, Y), J)


@pytest.mark.parametrize("z", [50.0, -50.0, 800.0, -800.0, 1e6, -1e6])
def test_cost_and_gradients_finite_for_saturated_logits(backend, dtype, z):
    xp = backend.xp
    ZL = backend.asarray(np.array([[z, z]]), dtype)
    Y = backend.asarray(np.array([[1.0, 0.0]]), dtype)
    cost = backend.scalar(network.cost_from_logits(xp, ZL, Y))
    # the exact value: one example is right (loss ~ exp(-|z|)), the other wrong by |z|
    assert np.isfinite(cost)
    assert cost == pytest.approx(abs(z) / 2, rel=RTOL[dtype])

    # a whole network pushed to the same saturated logits: gradients stay finite
    sizes = [4, 3, 1]
    host = [
        (np.full((3, 4), 1.0), np.zeros((3, 1))),
        (np.full((1, 3), np.sign(z)), np.full((1, 1), z)),
    ]
    params = params_to_device(backend, host, dtype)
    X = backend.asarray(np.ones((sizes[0], 2)), dtype)
    AL, caches = network.forward(xp, params, X)
    for g in network.backward(xp, params, caches, AL, Y):
        assert np.isfinite(backend.to_host(g.dW)).all() and np.isfinite(backend.to_host(g.db)).all()
    assert np.isfinite(backend.scalar(network.cost_from_logits(xp, caches[-1][1], Y)))


def test_init_is_the_legacy_randomstate_recipe():
    host = network.init_params([12288, 20, 7, 5, 1], seed=1)
    rng = np.random.RandomState(1)
    for (W, b), (n_out, n_in) in zip(host, [(20, 12288), (7, 20), (5, 7), (1, 5)]):
        np.testing.assert_array_equal(W, rng.randn(n_out, n_in) / np.sqrt(n_in))
        np.testing.assert_array_equal(b, np.zeros((n_out, 1)))


def test_strict_device_refuses_host_arrays():
    """The stand-in device is strict: the mistakes a GPU punishes fail in CI too."""
    from gpucat.backend import get_backend

    strict = get_backend("strict")
    a = strict.asarray(np.ones((2, 2)))
    with pytest.raises(TypeError):
        a + np.ones((2, 2))  # a host array mixed into device code
    with pytest.raises(RuntimeError):
        np.asarray(a)  # an implicit device-to-host conversion


def test_dead_layers_flags_a_layer_inactive_for_every_example(backend):
    sizes = [30, 8, 5, 3, 1]
    X, _ = small_problem(sizes=sizes)
    host = network.init_params(sizes, seed=1)
    params = params_to_device(backend, host, "float64")
    Xd = backend.asarray(X, "float64")
    assert backend.to_host(network.dead_layers(backend.xp, params, Xd)).tolist() == [False] * 3
    W2, b2 = host[1]
    host[1] = (W2, np.full_like(b2, -100.0))  # layer 2 can never fire on inputs in [0, 1]
    params = params_to_device(backend, host, "float64")
    flags = backend.to_host(network.dead_layers(backend.xp, params, Xd)).tolist()
    assert flags == [False, True, True]  # and so layer 3 only ever sees zeros plus its bias
