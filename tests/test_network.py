"""The network math and the device primitives under it, on every device: against exactly
known values, an independent NumPy float64 computation (reference_impl), central
differences, and every device's own primitives against the generic ones (Thinc's test_ops
pattern)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpucat.backends.cpu import NumpyDevice
from gpucat.nn import network
from gpucat.nn.network import Layer, params_to_device, params_to_host

import reference_impl as ref
from conftest import RTOL, assert_matches_central_differences, rel_err

SIZES = [30, 8, 5, 3, 1]  # small, but with every kind of layer of the reference network


def small_problem(m=17, sizes=SIZES, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.random((sizes[0], m))
    Y = (rng.random((1, m)) > 0.5).astype(np.float64)
    return X, Y


def to_dict(host_params):
    return {
        f"{k}{l}": a.copy() for l, pair in enumerate(host_params, 1) for k, a in zip("Wb", pair)
    }


def gradients(device, params, X, Y, masks=None):
    """(dW, db) per layer of the mean cross-entropy, by the one forward and backward pass,
    and the summed loss."""
    grads = [None] * len(params)

    def emit(l, dZ, A_prev):
        grads[l] = (device.matmul_nt(dZ, A_prev), device.sum_rows(dZ))

    dZ, loss, fwd = network.forward(device, params, X, Y, 1.0 / X.shape[1], masks)
    network.backward(device, params, fwd, dZ, emit)
    return grads, loss


def test_activations_have_their_known_values(device, dtype):
    """relu and sigmoid at points whose values are known exactly: sigmoid(ln 3) = 3/4,
    sigmoid(-ln 3) = 1/4, sigmoid(0) = 1/2, and far out 1 - e^-30 and e^-30 (to first order)."""
    z = [-30.0, -math.log(3), -2.5, 0.0, math.log(3), 0.7, 30.0]
    relu = [0.0, 0.0, 0.0, 0.0, math.log(3), 0.7, 30.0]
    sig = [math.exp(-30.0), 0.25, 1 / (1 + math.exp(2.5)), 0.5, 0.75, 1 / (1 + math.exp(-0.7))]
    sig.append(1 - math.exp(-30.0))
    Z = device.asarray(np.array([z]), dtype)
    zero = device.asarray(np.zeros((1, 1)), dtype)
    assert rel_err(device.to_host(device.bias_relu(Z, zero)), [relu]) <= RTOL[dtype]
    got = device.to_host(device.sigmoid(Z))[0]
    for g, e in zip(got, sig):  # element by element: e^-30 is tiny beside the rest
        assert abs(g - e) <= RTOL[dtype] * e


@pytest.mark.parametrize("masked", [False, True])
def test_relu_keeps_nan_as_numpys_maximum_does(device, dtype, masked):
    """A NaN pre-activation stays NaN through ReLU (with and without a dropout mask), and
    so does the loss: on a GPU `z > 0 ? z : 0` would make it 0 and hide a diverged layer."""
    Z = device.asarray(np.array([[math.nan, -1.0, 2.0]]), dtype)
    zero = device.asarray(np.zeros((1, 1)), dtype)
    mask = device.asarray(np.ones((1, 3)), dtype) if masked else None
    A = device.to_host(device.bias_relu(Z, zero, mask))[0]
    assert math.isnan(A[0]) and A[1:].tolist() == [0.0, 2.0]
    Y = device.asarray(np.array([[1.0, 0.0, 1.0]]), dtype)
    Z = device.asarray(np.array([[math.nan, -1.0, 2.0]]), dtype)
    assert math.isnan(device.scalar(device.output(Z, zero, Y, 1.0)[1]))


@pytest.mark.parametrize("dropout", [False, True])
def test_forward_backward_match_the_reference(device, dtype, dropout):
    """The loss and every gradient, with and without dropout masks, against the course-style
    float64 implementation (textbook dA formula at the output)."""
    X, Y = small_problem()
    host = network.init_params(SIZES, seed=1)
    rng = np.random.default_rng(7)
    D = [(rng.random((n, X.shape[1])) < 0.7) / 0.7 for n in SIZES[1:-1]] if dropout else None
    p_ref = to_dict(host)
    AL_ref, caches_ref = ref.forward_dropout(X, p_ref, D)
    g_ref = ref.backward_options(AL_ref, Y, p_ref, caches_ref, D, 0.0)

    params = params_to_device(device, host, dtype)
    masks = [device.asarray(d, dtype) for d in D] if dropout else None
    Xd, Yd = device.asarray(X, dtype), device.asarray(Y, dtype)
    grads, loss = gradients(device, params, Xd, Yd, masks)
    tol = RTOL[dtype]
    assert rel_err(device.scalar(loss) / X.shape[1], ref.cost(AL_ref, Y)) <= tol
    for l, (dW, db) in enumerate(grads, start=1):
        assert rel_err(device.to_host(dW), g_ref[f"dW{l}"]) <= tol, f"dW{l}"
        assert rel_err(device.to_host(db), g_ref[f"db{l}"]) <= tol, f"db{l}"


def test_gradients_match_central_differences():
    """Every parameter of a small float64 network, dropout on, against (J(p+h) - J(p-h)) / 2h."""
    sizes = [6, 5, 3, 1]
    X, Y = small_problem(m=9, sizes=sizes, seed=5)
    rng = np.random.default_rng(2)
    masks = [(rng.random((n, 9)) < 0.7) / 0.7 for n in sizes[1:-1]]
    # nonzero biases, so that their gradients are exercised away from the start point
    params = [Layer(W.copy(), np.full_like(b, 0.1)) for W, b in network.init_params(sizes, 2)]
    from gpucat.backends import get_device

    generic = get_device("cpu").generic()

    def J():
        return float(network.forward(generic, params, X.copy(), Y, None, masks)[1]) / 9

    grads, _ = gradients(generic, params, X, Y, masks)
    assert_matches_central_differences(params, grads, J)


@pytest.mark.parametrize("z", [50.0, -50.0, 800.0, -800.0, 1e6, -1e6])
def test_loss_and_gradients_finite_for_saturated_logits(device, dtype, z):
    Z = device.asarray(np.array([[z, z]]), dtype)
    Y = device.asarray(np.array([[1.0, 0.0]]), dtype)
    zero = device.asarray(np.zeros((1, 1)), dtype)
    dZ, loss = device.output(Z, zero, Y, 0.5)
    # the exact value: one example is right (loss ~ exp(-|z|)), the other wrong by |z|
    assert device.scalar(loss) == pytest.approx(abs(z), rel=RTOL[dtype])
    assert np.isfinite(device.to_host(dZ)).all()
    # a whole network pushed to the same saturated logits: gradients stay finite
    host = [
        (np.full((3, 4), 1.0), np.zeros((3, 1))),
        (np.full((1, 3), np.sign(z)), np.full((1, 1), z)),
    ]
    params = params_to_device(device, host, dtype)
    grads, loss = gradients(device, params, device.asarray(np.ones((4, 2)), dtype), Y)
    for dW, db in grads:
        assert np.isfinite(device.to_host(dW)).all() and np.isfinite(device.to_host(db)).all()
    assert np.isfinite(device.scalar(loss))


def random_case(device, dtype, seed=0, m=23):
    """Fresh random operands of every primitive (never zeros), on the device."""
    rng = np.random.default_rng(seed)
    host = {
        "Z": rng.standard_normal((6, m)) * 3,
        "b": rng.standard_normal((6, 1)),
        "Y": (rng.random((1, m)) > 0.5).astype(float),
        "mask": (rng.random((6, m)) < 0.8) / 0.8,
        "dA": rng.standard_normal((6, m)),
        "W": rng.standard_normal((6, 40)),
        "A": rng.random((40, m)),
        "g": rng.standard_normal((6, 40)),
        "v": rng.standard_normal((6, 40)) * 0.1,
        "m": rng.standard_normal((6, 40)) * 0.1,
        "v2": rng.random((6, 40)) * 0.01,
    }
    return {k: device.asarray(a, dtype) for k, a in host.items()}


def run_primitives(device, c):
    """Every primitive on copies of one case; returns each result as host arrays."""
    b, copy = device, device.copy
    out = {}
    Z = copy(c["Z"])
    out["bias_relu"] = (device.bias_relu(Z, c["b"]), Z)
    Z = copy(c["Z"])
    out["bias_relu mask"] = (device.bias_relu(Z, c["b"], c["mask"]), Z)
    Z = copy(c["Z"][:1, :])
    out["output"] = (*device.output(Z, c["b"][:1, :], c["Y"], 0.3), Z)
    out["loss"] = (device.output(copy(c["Z"][:1, :]), c["b"][:1, :], c["Y"], None)[1],)
    out["backprop_relu"] = (device.backprop_relu(copy(c["dA"]), c["Z"]),)
    out["backprop_relu mask"] = (device.backprop_relu(copy(c["dA"]), c["Z"], c["mask"]),)
    out["matmul"] = (device.matmul(c["W"], c["A"]), device.matmul_tn(c["W"], c["Z"]))
    out["matmul_nt"] = (device.matmul_nt(c["Z"], c["A"]), device.sum_rows(c["Z"]))
    W, bias = copy(c["W"]), copy(c["b"])
    device.descend(W, c["Z"], c["A"], 0.97)
    device.descend_bias(bias, c["Z"])
    out["descend"] = (W, bias)
    W = copy(c["W"])
    device.sgd(W, c["g"], 0.1, 0.2)
    out["sgd"] = (W,)
    W, v = copy(c["W"]), copy(c["v"])
    device.momentum(W, c["g"], v, 0.9, 0.1, 0.2)
    out["momentum"] = (W, v)
    W, m, v = copy(c["W"]), copy(c["m"]), copy(c["v2"])
    device.adam(W, c["g"], m, v, 0.9, 0.999, 1e-8, 0.01, 3, 0.2)
    out["adam"] = (W, m, v)
    out["scatter_columns"] = (device.scatter_columns(c["Z"][:, :5], np.array([7, 0, 3, 9, 1]), 12),)
    return {k: [b.to_host(a) for a in v] for k, v in out.items()}


def test_every_devices_primitives_equal_the_generic_ones(device, dtype):
    """NumpyDevice (in place, its own products) is bit for bit the generic primitives; CupyDevice (fused
    kernels, GEMM into W, one kernel per optimizer step) equals it within the dtype's
    rounding."""
    case = random_case(device, dtype)
    got = run_primitives(device, case)
    expected = run_primitives(device.generic(), case)
    for name in expected:
        for a, e in zip(got[name], expected[name]):
            if device.name == "numpy":
                np.testing.assert_array_equal(a, e, err_msg=name)
            else:
                assert rel_err(a, e) <= RTOL[dtype], name


def test_numpy_multiplies_by_the_data_where_it_lies(dtype):
    """The data as the trainer holds it, rows seen as columns: NumpyDevice computes W1·X as
    (Xᵀ·W1ᵀ)ᵀ, reading X where it lies (no copy), and the update from the same rows; both
    equal the plain float64 products."""
    from gpucat.backends import get_device

    rng = np.random.default_rng(4)
    rows = rng.random((40, 300)).astype(dtype)
    X = rows.T
    W1, dZ = rng.standard_normal((9, 300)).astype(dtype), rng.standard_normal((9, 40)).astype(dtype)
    cpu = get_device("cpu")
    Z = cpu.matmul(W1, X)
    assert Z.flags.f_contiguous and not Z.flags.c_contiguous  # (Xᵀ·W1ᵀ)ᵀ
    assert rel_err(Z, W1.astype(float) @ X.astype(float)) <= RTOL[dtype]
    assert np.shares_memory(X, rows)
    W = W1.copy()
    cpu.descend(W, dZ, X)
    assert rel_err(W, W1.astype(float) - dZ.astype(float) @ rows.astype(float)) <= RTOL[dtype]


def test_numpy_buffered_update_equals_the_generic_one(dtype):
    """NumpyDevice' update through its buffer (for every weight size here) equals the generic
    Ops' W·decay − dZ·Aᵀ within the dtype's rounding."""
    from gpucat.backends import get_device

    cpu = get_device("cpu")
    buffered = NumpyDevice()
    buffered.GEMM_FROM = 0
    case = random_case(cpu, dtype, seed=3)
    got, expected = case["W"].copy(), case["W"].copy()
    buffered.descend(got, case["Z"], case["A"], 0.97)
    cpu.generic().descend(expected, case["Z"], case["A"], 0.97)
    assert rel_err(got, expected) <= RTOL[dtype]
    assert not np.array_equal(got, case["W"])


def test_init_is_the_legacy_randomstate_recipe():
    host = network.init_params([12288, 20, 7, 5, 1], seed=1)
    rng = np.random.RandomState(1)
    for (W, b), (n_out, n_in) in zip(host, [(20, 12288), (7, 20), (5, 7), (1, 5)]):
        np.testing.assert_array_equal(W, rng.randn(n_out, n_in) / np.sqrt(n_in))
        np.testing.assert_array_equal(b, np.zeros((n_out, 1)))


def test_strict_device_refuses_host_arrays():
    """The stand-in device is strict: the mistakes a GPU punishes fail in CI too."""
    from gpucat.backends import get_device

    strict = get_device("strict")
    a = strict.asarray(np.ones((2, 2)))
    with pytest.raises(TypeError):
        a + np.ones((2, 2))  # a host array mixed into device code
    with pytest.raises(RuntimeError):
        np.asarray(a)  # an implicit device-to-host conversion


def test_dead_layers_flags_a_layer_inactive_for_every_example(device):
    X, _ = small_problem()
    host = network.init_params(SIZES, seed=1)
    Xd = device.asarray(X, "float64")
    params = params_to_device(device, host, "float64")
    assert device.to_host(network.dead_layers(device, params, Xd)).tolist() == [False] * 3
    W2, b2 = host[1]
    host[1] = (W2, np.full_like(b2, -100.0))  # layer 2 can never fire on inputs in [0, 1]
    params = params_to_device(device, host, "float64")
    flags = device.to_host(network.dead_layers(device, params, Xd)).tolist()
    assert flags == [False, True, True]  # and so layer 3 only ever sees zeros plus its bias
    assert params_to_host(device, params)[1][1].min() == -100.0
