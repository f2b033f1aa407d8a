"""Training beyond the original: every option on every backend, optimizers by hand, resume."""

from __future__ import annotations

import numpy as np
import pytest
import reference_impl as ref
from conftest import RTOL, assert_matches_central_differences, rel_err

from gpucat import backend as backend_mod
from gpucat import network
from gpucat.errors import GpucatError
from gpucat.network import Grad, Layer
from gpucat.optim import Adam, Momentum
from gpucat.train import TrainConfig, fit, mirrored, params_to_host, stratified_split

SMALL = (12288, 6, 4, 1)

OPTIONS = {
    "minibatch": dict(batch_size=64),
    "momentum": dict(optimizer="momentum", beta1=0.8),
    "adam": dict(optimizer="adam", learning_rate=0.001),
    "lr_decay": dict(batch_size=100, lr_decay=0.5),
    "l2": dict(l2=0.7),
    "dropout": dict(keep_prob=0.8),
    "flip": dict(flip=True),
    "validation": dict(validation=0.25, patience=3, log_every=5),
    "everything": dict(
        batch_size=50,
        optimizer="adam",
        learning_rate=0.002,
        lr_decay=0.1,
        l2=0.3,
        keep_prob=0.85,
        flip=True,
        validation=0.2,
        log_every=4,
    ),
}


ITERATIONS = 24


def run(backend, course_data, dtype, iterations=ITERATIONS, **options):
    train, _ = course_data
    options.setdefault("log_every", 3)
    cfg = TrainConfig(layers=SMALL, iterations=iterations, dtype=dtype, **options)
    result = fit(backend, cfg, train.X, train.Y)
    return result, params_to_host(backend, result.params)


@pytest.fixture(scope="session")
def independent(course_data):
    """reference(option, iterations) -> the independent float64 run (cached)."""
    train, _ = course_data
    cache = {}

    def get(option, iterations=ITERATIONS):
        if (option, iterations) not in cache:
            opts = {"log_every": 3, **OPTIONS[option]}
            cache[option, iterations] = ref.train_options(
                train.X, train.Y, list(SMALL), iterations, **opts
            )
        return cache[option, iterations]

    return get


def ref_params(r):
    return [(r["params"][f"W{l}"], r["params"][f"b{l}"]) for l in range(1, len(SMALL))]


# Adam divides each gradient by its own running size, so a gradient that cancels to float32
# rounding noise still moves its weight by about a whole learning rate: float32 Adam weights
# sit further from float64 than float32 rounding alone (measured 2e-5 to 3e-4 after 24 steps)
ADAM_FLOAT32_PARAMS = 1e-3


@pytest.mark.parametrize("option", list(OPTIONS))
def test_option_matches_the_independent_reference(option, backend, dtype, course_data, independent):
    """Every option on every backend against the course-style float64 implementation
    (tests/reference_impl.py): costs, validation costs, early stopping and parameters.

    float32 is compared while its trajectory is float32 rounding away from float64: up to
    the first iteration whose pre-activations come within rounding of a ReLU kink (found
    by the reference), where the two dtypes may take different branches."""
    full = independent(option)
    iterations = ITERATIONS
    if dtype == "float32" and full["first_kink"] is not None:
        iterations = full["first_kink"]
        assert iterations >= 4, "the float32 comparison would cover too few iterations"
    expected = independent(option, iterations)
    got, params = run(backend, course_data, dtype, iterations, **OPTIONS[option])
    tol = RTOL[dtype]
    assert [i for i, _ in got.costs] == [i for i, _ in expected["costs"]]
    assert rel_err([c for _, c in got.costs], [c for _, c in expected["costs"]]) <= tol
    assert [i for i, _ in got.val_costs] == [i for i, _ in expected["val_costs"]]
    if expected["val_costs"]:
        assert rel_err([c for _, c in got.val_costs], [c for _, c in expected["val_costs"]]) <= tol
    assert (got.best_iteration, got.stopped_early, got.iterations_done) == (
        expected["best_iteration"],
        expected["stopped_early"],
        expected["iterations_done"],
    )
    if dtype == "float32" and OPTIONS[option].get("optimizer") == "adam":
        tol = ADAM_FLOAT32_PARAMS
    for (W, b), (W0, b0) in zip(params, ref_params(expected)):
        assert rel_err(W, W0) <= tol and rel_err(b, b0) <= tol


def test_each_option_changes_the_run(course_data, independent):
    """No option is a no-op: at the iterations both log, each run's costs differ from plain
    full-batch gradient descent's."""
    train, _ = course_data
    plain = dict(ref.train_options(train.X, train.Y, list(SMALL), ITERATIONS, log_every=1)["costs"])
    for option in OPTIONS:
        got = dict(independent(option)["costs"])
        shared = sorted(set(got) & set(plain))
        assert len(shared) >= 3
        assert rel_err([got[i] for i in shared], [plain[i] for i in shared]) > 1e-6, option


def test_momentum_by_hand():
    """v = beta v + (1 - beta) g;  p -= lr v, three steps written out."""
    p = [Layer(np.array([[1.0]]), np.array([[0.5]]))]
    opt = Momentum(np, p, beta=0.9)
    gs = [0.5, -0.2, 0.1]
    for g in gs:
        opt.update(p, [Grad(np.array([[g]]), np.array([[2 * g]]))], lr=0.1)
    v1 = 0.1 * 0.5
    v2 = 0.9 * v1 + 0.1 * -0.2
    v3 = 0.9 * v2 + 0.1 * 0.1
    assert p[0].W[0, 0] == pytest.approx(1.0 - 0.1 * (v1 + v2 + v3), rel=1e-15)
    assert p[0].b[0, 0] == pytest.approx(0.5 - 0.1 * 2 * (v1 + v2 + v3), rel=1e-15)


def test_adam_by_hand():
    """Adam with bias correction, three steps written out with plain floats."""
    p = [Layer(np.array([[1.0]]), np.array([[0.0]]))]
    opt = Adam(np, p, beta1=0.9, beta2=0.999, epsilon=1e-8)
    w, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate([0.5, -0.2, 0.1], start=1):
        opt.update(p, [Grad(np.array([[g]]), np.array([[0.0]]))], lr=0.01)
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
        w -= 0.01 * m_hat / (v_hat**0.5 + 1e-8)
        assert p[0].W[0, 0] == pytest.approx(w, rel=1e-13)


def test_l2_and_dropout_gradients_match_central_differences():
    rng = np.random.default_rng(3)
    sizes = [5, 4, 3, 1]
    X, Y = rng.random((5, 7)), (rng.random((1, 7)) > 0.5).astype(float)
    params = [Layer(W, b + 0.1) for W, b in network.init_params(sizes, 2)]
    D = [(rng.random((n, 7)) < 0.7) / 0.7 for n in sizes[1:-1]]
    l2 = 0.6

    def J():
        _, caches = network.forward(np, params, X, D)
        return float(
            network.cost_from_logits(np, caches[-1][1], Y) + network.l2_cost(np, params, l2, 7)
        )

    AL, caches = network.forward(np, params, X, D)
    grads = network.backward(np, params, caches, AL, Y, dropout=D, l2=l2)
    assert_matches_central_differences(params, grads, J)


def test_resume_is_bit_identical(tmp_path, course_data):
    """Stopped after 20 iterations (checkpoint at 14), resumed to 45: exactly the parameters
    of an uninterrupted 45-iteration run (float64, CPU), optimizer and random streams included."""
    cpu = backend_mod.get_backend("cpu")
    train, _ = course_data
    cfg = TrainConfig(
        layers=SMALL,
        iterations=45,
        dtype="float64",
        log_every=5,
        **{k: v for k, v in OPTIONS["everything"].items() if k != "log_every"},
    )
    whole = fit(cpu, cfg, train.X, train.Y)
    ck = tmp_path / "ck.safetensors"
    fit(cpu, cfg, train.X, train.Y, checkpoint=str(ck), checkpoint_every=7, stop_after=20)
    resumed = fit(cpu, cfg, train.X, train.Y, resume=str(ck))
    for (W, b), (W0, b0) in zip(
        params_to_host(cpu, resumed.params), params_to_host(cpu, whole.params)
    ):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    assert resumed.costs == whole.costs and resumed.val_costs == whole.val_costs
    assert resumed.best_iteration == whole.best_iteration


def test_resume_plain_recipe_is_bit_identical(tmp_path, course_data):
    cpu = backend_mod.get_backend("cpu")
    train, _ = course_data
    cfg = TrainConfig(iterations=30, dtype="float64", log_every=10)
    whole = fit(cpu, cfg, train.X, train.Y, checkpoint=str(tmp_path / "a"), checkpoint_every=1000)
    ck = tmp_path / "ck.safetensors"
    fit(cpu, cfg, train.X, train.Y, checkpoint=str(ck), checkpoint_every=10, stop_after=13)
    resumed = fit(cpu, cfg, train.X, train.Y, resume=str(ck))
    assert whole.solver == resumed.solver == "direct"
    for (W, _), (W0, _) in zip(
        params_to_host(cpu, resumed.params), params_to_host(cpu, whole.params)
    ):
        np.testing.assert_array_equal(W, W0)


def test_resume_refuses_a_different_recipe(tmp_path, course_data):
    cpu = backend_mod.get_backend("cpu")
    train, _ = course_data
    cfg = TrainConfig(layers=SMALL, iterations=10, dtype="float64")
    ck = tmp_path / "ck.safetensors"
    fit(cpu, cfg, train.X, train.Y, checkpoint=str(ck), checkpoint_every=5)
    other = TrainConfig(layers=SMALL, iterations=10, dtype="float64", learning_rate=0.1)
    with pytest.raises(GpucatError, match="learning_rate=0.0075"):
        fit(cpu, other, train.X, train.Y, resume=str(ck))


def test_validation_split_is_stratified_and_seeded(course_data):
    train, _ = course_data
    tr, va = stratified_split(train.Y, 0.2, seed=1)
    assert sorted([*tr, *va]) == list(range(209)) and len(va) == round(0.2 * 137) + round(0.2 * 72)
    assert train.Y[0, va].sum() == round(0.2 * 72)  # the class balance is kept
    tr2, va2 = stratified_split(train.Y, 0.2, seed=1)
    np.testing.assert_array_equal(va, va2)
    assert not np.array_equal(va, stratified_split(train.Y, 0.2, seed=2)[1])


def test_early_stopping_restores_the_best_parameters(course_data):
    """With a learning rate that overfits fast, validation cost rises; training stops after
    `patience` log points without improvement and returns the best parameters."""
    cpu = backend_mod.get_backend("cpu")
    train, _ = course_data
    cfg = TrainConfig(
        layers=(12288, 40, 1),
        iterations=3000,
        dtype="float64",
        optimizer="adam",
        learning_rate=0.003,
        validation=0.3,
        patience=3,
        log_every=20,
    )
    r = fit(cpu, cfg, train.X, train.Y)
    assert r.stopped_early and r.iterations_done < 3000
    best = min(r.val_costs, key=lambda t: t[1])
    assert r.best_iteration == best[0]
    assert [c for i, c in r.val_costs if i > best[0]] and all(
        c >= best[1] for i, c in r.val_costs if i > best[0]
    )
    # the returned parameters are the best ones: their validation cost is the best logged
    tr, va = stratified_split(train.Y, 0.3, seed=1)
    AL, caches = network.forward(np, r.params, train.X[:, va])
    assert float(network.cost_from_logits(np, caches[-1][1], train.Y[:, va])) == pytest.approx(
        best[1], rel=1e-12
    )


def test_mirrored_flips_left_right():
    img = np.arange(64 * 64 * 3, dtype=np.float64).reshape(64, 64, 3)
    X = img.reshape(-1, 1)
    np.testing.assert_array_equal(mirrored(X).reshape(64, 64, 3), img[:, ::-1, :])
    np.testing.assert_array_equal(mirrored(mirrored(X)), X)


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(keep_prob=0.0), "--keep-prob"),
        (dict(patience=3), "--patience"),
        (dict(validation=1.0), "--validation"),
        (dict(batch_size=0), "--batch-size"),
        (dict(optimizer="sgd"), "--optimizer"),
        (dict(beta2=1.0), "--beta2"),
    ],
)
def test_bad_options_are_clear_errors(bad, message):
    with pytest.raises(GpucatError, match=message):
        TrainConfig(**bad).check()
