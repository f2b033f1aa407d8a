"""Every solver with every training option on every device, against the independent
course-style implementation (tests/reference_impl.py); the solver choice and its memory."""

from __future__ import annotations

import re
import types

import numpy as np
import pytest

from gpucat import backends
from gpucat.config import TrainConfig
from gpucat.errors import GpucatError
from gpucat.nn.network import params_to_host
from gpucat.training import loop as train_mod
from gpucat.training.loop import fit
from gpucat.training.solvers import GramSolver, Solver, check_memory, choose_solver

import reference_impl as ref
from conftest import RTOL, rel_err

SMALL = (12288, 6, 4, 1)
ITERATIONS = 24

OPTIONS = {
    "plain": dict(),
    "minibatch": dict(batch_size=64),
    "momentum": dict(optimizer="momentum", beta1=0.8),
    "adam": dict(optimizer="adam", learning_rate=0.001),
    "lr_decay": dict(batch_size=100, lr_decay=0.5),
    "l2": dict(l2=0.7),
    "l2_minibatch": dict(l2=0.7, batch_size=50),
    "dropout": dict(keep_prob=0.8),
    "flip": dict(flip=True),
    "validation": dict(validation=0.25, patience=2, validate_every=5),
    "full_cost": dict(batch_size=64, full_cost=True, keep_prob=0.9),
    "everything": dict(
        batch_size=50,
        optimizer="adam",
        learning_rate=0.002,
        lr_decay=0.1,
        l2=0.3,
        keep_prob=0.85,
        flip=True,
        validation=0.2,
        validate_every=4,
    ),
    "momentum_everything": dict(
        batch_size=50, optimizer="momentum", lr_decay=0.1, l2=0.3, keep_prob=0.85, flip=True
    ),
}
# The Gram solver's algebra holds for gradient descent and momentum, with L2, decay, dropout,
# flips and mini-batches; Adam leaves it, and validation reads W1, which it never forms.
GRAM_OPTIONS = [
    o for o, kw in OPTIONS.items() if kw.get("optimizer") != "adam" and not kw.get("validation")
]


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
FLOAT64 = 1e-10  # two float64 computations that add in different orders, over 24 updates


@pytest.mark.parametrize(
    "solver, option",
    [("direct", o) for o in OPTIONS] + [("gram", o) for o in GRAM_OPTIONS],
)
def test_solver_and_option_match_the_independent_reference(
    solver, option, device, dtype, course_data, independent
):
    """Costs, validation costs, early stopping and parameters against the course-style
    float64 implementation. float32 is compared while its trajectory is float32 rounding
    away from float64: up to the first iteration whose pre-activations come within rounding
    of a ReLU kink (found by the reference), where the two dtypes may take different
    branches."""
    full = independent(option)
    iterations = ITERATIONS
    if dtype == "float32" and full["first_kink"] is not None:
        iterations = full["first_kink"]
        assert iterations >= 4, "the float32 comparison would cover too few iterations"
    expected = independent(option, iterations)
    train, _ = course_data
    config = TrainConfig(
        layers=SMALL,
        iterations=iterations,
        dtype=dtype,
        solver=solver,
        **{"log_every": 3, **OPTIONS[option]},
    )
    got = fit(device, config, train)
    assert got.solver == solver
    tol = FLOAT64 if dtype == "float64" else RTOL[dtype]
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
    for (W, b), (W0, b0) in zip(params_to_host(device, got.params), ref_params(expected)):
        assert rel_err(W, W0) <= tol and rel_err(b, b0) <= tol


def test_each_option_changes_the_run(independent):
    """No option is a no-op: each run's logged costs differ from plain gradient descent's."""
    plain = dict(independent("plain")["costs"])
    for option in OPTIONS:
        if option != "plain":
            got = dict(independent(option)["costs"])
            shared = sorted(set(got) & set(plain))
            assert len(shared) >= 3
            assert rel_err([got[i] for i in shared], [plain[i] for i in shared]) > 1e-6, option


def test_gram_equals_direct_over_the_whole_reference_recipe(device, course_data):
    """2500 iterations of the reference recipe in float64: the Gram iterates are the direct
    algorithm's, cost by cost and weight by weight."""
    train, _ = course_data
    direct = fit(device, TrainConfig(dtype="float64", solver="direct"), train)
    gram = fit(device, TrainConfig(dtype="float64", solver="gram"), train)
    assert rel_err([c for _, c in gram.costs], [c for _, c in direct.costs]) <= 1e-10
    for (W, b), (W0, b0) in zip(
        params_to_host(device, gram.params), params_to_host(device, direct.params)
    ):
        assert rel_err(W, W0) <= 1e-10 and rel_err(b, b0) <= 1e-10


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_gram_keeps_its_accumulating_state_in_float64(course_data, dtype):
    """C, Z0 and momentum's V accumulate over the run: float64 in either training dtype. G
    is a constant, recomputed into C·G every iteration: it is the rounded float64 XᵀX, kept in
    the training dtype, as the direct solver keeps X."""
    train, _ = course_data
    cpu = backends.get_device("cpu")
    config = TrainConfig(
        layers=SMALL, iterations=3, solver="gram", dtype=dtype, optimizer="momentum"
    )
    r = fit(cpu, config, train)
    assert r.params[0].W.dtype == np.dtype(dtype)
    from gpucat.training.loop import solver_for

    s = solver_for(cpu, config, train)[0]
    assert s.Z0.dtype == s.C.dtype == s.V.dtype == np.float64
    assert s.G.dtype == np.dtype(dtype)
    # XᵀX summed in 1024-feature blocks against one product: float64 rounding apart, then
    # rounded once to the training dtype (float32: half an ulp, 2⁻²⁴ relative)
    rounding = 1e-13 if dtype == "float64" else 2.0**-24 + 1e-13
    assert rel_err(s.G, train.X.T @ train.X) <= rounding


PIXELS = types.SimpleNamespace(n_features=12288, stored=np.dtype(np.uint8), divisor=255.0)


def test_auto_picks_gram_only_when_it_applies_pays_and_fits():
    GiB = 2**30
    cpu = backends.get_device("cpu")

    def pick(M, layers=(12288, 20, 7, 5, 1), free=3 * GiB, streamed=False, **options):
        config = TrainConfig(layers=layers, **options)
        return choose_solver(config, free, M, M, PIXELS, cpu, streamed)

    assert pick(209) == "gram"
    # G 288 MB beside a product as large, the float64 feature block, the examples as stored:
    # 0.66 GiB in all, under a quarter of 3 GiB, over a quarter of 2 GiB
    assert pick(6000) == "gram"
    assert pick(6000, free=2 * GiB) == "direct"
    # float32 makes its float32 G after the products are gone: below that peak
    assert pick(6000, dtype="float32") == "gram"
    assert pick(20000) == "direct"  # M >= n_x: G would be bigger than X
    assert pick(209, layers=(12288, 1)) == "direct"  # no hidden layer
    assert pick(209, validation=0.2) == "direct"  # validation reads W1
    assert pick(209, streamed=True) == "direct"  # data on disk stays there
    assert pick(209, solver="direct") == "direct"
    assert pick(209, optimizer="adam") == "direct"
    assert pick(209, batch_size=64, optimizer="momentum", l2=0.1) == "gram"
    with pytest.raises(GpucatError, match="not Adam; use --solver direct"):
        pick(209, solver="gram", optimizer="adam")
    with pytest.raises(GpucatError, match="validation reads W1"):
        pick(209, solver="gram", validation=0.2)
    with pytest.raises(GpucatError, match="at least one hidden layer"):
        pick(209, solver="gram", layers=(12288, 1))


@pytest.mark.parametrize(
    "solver, options, free_gib, advice",
    [
        ("gram", {}, 4, "use --solver direct"),
        ("direct", {}, 4, "train in mini-batches (--batch-size 256)"),
        ("direct", {"batch_size": 64}, 1, "use a smaller --batch-size"),
    ],
)
def test_a_solver_that_does_not_fit_is_refused_before_allocating(solver, options, free_gib, advice):
    """120,000 examples: G alone would take 107 GiB (and its set-up twice that), X in float32
    5.5 GiB, the uint8 examples 1.4 GiB; each is refused with what to change, not a MemoryError from inside."""
    config, cpu = TrainConfig(solver=solver, **options), backends.get_device("cpu")
    match = rf"--solver {solver} needs .* GiB .*{re.escape(advice)}"
    M = 120_000
    with pytest.raises(GpucatError, match=match):
        check_memory(solver, config, M, M, PIXELS, cpu, False, free_gib * 2**30)
    assert GramSolver.memory(config, M, M, PIXELS, cpu, False) > 200 * 2**30


def test_explicit_gram_on_too_many_examples_is_one_message(monkeypatch, course_data):
    """Through fit: the memory is checked before anything is allocated."""
    train, _ = course_data
    monkeypatch.setattr(backends.Device, "free_memory", lambda self: 2**20)  # 1 MiB free
    with pytest.raises(GpucatError, match="--solver gram needs .* use --solver direct"):
        fit(backends.get_device("cpu"), TrainConfig(solver="gram"), train)


def test_logistic_regression_network_trains_with_direct(course_data):
    """A network without hidden layers (12288-1) goes through the direct solver."""
    train, _ = course_data
    result = fit(
        backends.get_device("cpu"),
        TrainConfig(layers=(12288, 1), iterations=20, log_every=19),
        train,
    )
    assert result.solver == "direct" and result.costs[-1][1] < result.costs[0][1]


@pytest.mark.parametrize("options", [{}, dict(optimizer="momentum", l2=0.4, batch_size=60)])
def test_gram_resumes_bit_for_bit(tmp_path, course_data, options):
    """Checkpoints observe a run: a Gram run checkpointed at 15 and resumed to 40 is the
    uninterrupted Gram run, its state (s, C, momentum's V) saved as it is."""
    train, _ = course_data
    cpu = backends.get_device("cpu")
    cfg = TrainConfig(layers=SMALL, iterations=40, log_every=7, solver="auto", **options)
    whole = fit(cpu, cfg, train)
    ck = str(tmp_path / "ck.safetensors")
    fit(cpu, TrainConfig(**{**cfg.to_dict(), "iterations": 15}), train, checkpoint=ck)
    resumed = fit(cpu, cfg, train, resume=ck)
    assert whole.solver == resumed.solver == "gram"
    assert resumed.costs == whole.costs
    for (W, b), (W0, b0) in zip(
        params_to_host(cpu, resumed.params), params_to_host(cpu, whole.params)
    ):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


class DeclaredOnly:
    """A solver seen only through what ``Solver`` declares: any other attribute the training
    loop reads raises AttributeError."""

    ALLOWED = set(Solver.__annotations__) | {n for n in vars(Solver) if not n.startswith("_")}

    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):
        if name not in self.ALLOWED:
            raise AttributeError(f"the training loop read solver.{name}, which Solver lacks")
        return getattr(self._inner, name)


@pytest.mark.parametrize(
    "solver, option",
    [("direct", "everything"), ("direct", "full_cost"), ("gram", "momentum_everything")],
)
def test_the_loop_reads_only_what_the_solver_protocol_declares(
    monkeypatch, tmp_path, course_data, solver, option
):
    """fit (validation, --full-cost, L2, checkpoints and resuming) through a solver that
    offers nothing but the Solver protocol: the same run, bit for bit."""
    train, _ = course_data
    cpu = backends.get_device("cpu")
    cfg = TrainConfig(layers=SMALL, iterations=12, log_every=5, solver=solver, **OPTIONS[option])
    whole = fit(cpu, cfg, train)
    made = train_mod.make_solver
    monkeypatch.setattr(train_mod, "make_solver", lambda *a: DeclaredOnly(made(*a)))
    ck = str(tmp_path / "ck.safetensors")
    fit(cpu, TrainConfig(**{**cfg.to_dict(), "iterations": 7}), train, checkpoint=ck)
    resumed = fit(cpu, cfg, train, resume=ck)
    assert resumed.costs == whole.costs and resumed.val_costs == whole.val_costs
    for (W, b), (W0, b0) in zip(
        params_to_host(cpu, resumed.params), params_to_host(cpu, whole.params)
    ):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_the_memory_check_counts_the_uint8_copy_beside_the_floats(
    monkeypatch, device, course_data, dtype
):
    """Full-batch X is converted on the device from its uint8 copy, both held at once: free
    memory for the floats alone (but not the bytes beside them) is refused before anything
    is allocated, with the one message; a little more is enough."""
    train, _ = course_data
    config = TrainConfig(dtype=dtype, solver="direct", iterations=1)
    n_x, M, size = 12288, train.n_examples, np.dtype(dtype).itemsize
    weights = sum(a * b for a, b in zip(config.layers[:-1], config.layers[1:])) * 2 * size
    floats_only = n_x * M * size + weights + n_x * M // 2
    with pytest.raises(GpucatError, match=r"--solver direct needs .* GiB .* is free"):
        check_memory("direct", config, M, M, train, device, False, floats_only)
    check_memory("direct", config, M, M, train, device, False, n_x * M * (1 + size) + weights)
    # the same through fit, on this device: refused before anything is on the device
    monkeypatch.setattr(type(device), "free_memory", lambda self: floats_only)
    with pytest.raises(GpucatError, match="train in mini-batches"):
        fit(device, config, train)


def test_a_gram_checkpoint_mid_run_saves_w1_then_and_the_run_goes_on_unchanged(
    tmp_path, course_data
):
    """The Gram solver forms W1 = s·W1(0) − C·Xᵀ only when asked: a checkpoint written after
    iteration 4 of 10 holds the W1 a 4-iteration run ends with, and the run that wrote it
    ends with the W1 of a run that wrote none (not the one formed for the checkpoint)."""
    import shutil

    from gpucat.training.checkpoint import load_checkpoint

    train, _ = course_data
    cpu = backends.get_device("cpu")
    recipe = dict(layers=(12288, 6, 4, 1), solver="gram", optimizer="momentum", l2=0.2)
    plain = fit(cpu, TrainConfig(iterations=10, **recipe), train)
    ck, kept = tmp_path / "ck.safetensors", tmp_path / "after-4.safetensors"

    def keep(i):  # the checkpoint of iterations 0..3 is written before on_step(4)
        if i == 4:
            shutil.copy(ck, kept)

    checked = fit(
        cpu, TrainConfig(iterations=10, **recipe), train, checkpoint=str(ck), checkpoint_every=4,
        on_step=keep,
    )  # fmt: skip
    for (W, b), (W0, b0) in zip(
        params_to_host(cpu, checked.params), params_to_host(cpu, plain.params)
    ):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    four = fit(cpu, TrainConfig(iterations=4, **recipe), train)
    saved = load_checkpoint(str(kept)).params
    np.testing.assert_array_equal(saved[0][0], params_to_host(cpu, four.params)[0][0])
