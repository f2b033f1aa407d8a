"""Every solver and fast path against the plain direct algorithm."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import RTOL, rel_err

from gpucat import backend as backend_mod
from gpucat import network
from gpucat.errors import GpucatError
from gpucat.fused import FusedSolver
from gpucat.reducers import LOCAL
from gpucat.solvers import (
    LAYOUTS,
    DirectSolver,
    GeneralSolver,
    GramSolver,
    NumpyDirectSolver,
    NumpyGramSolver,
    choose_solver,
    plan_layout,
)
from gpucat.sources import DeviceShard, TrainingSet
from gpucat.train import TrainConfig, as_source, fit, params_to_device, params_to_host

REF = TrainConfig(dtype="float64")


def run_solver(cls, backend, X, Y, dtype, iterations, sizes, lr=0.0075, seed=1):
    """One solver class on its own: (costs before each update, final host parameters)."""
    m = X.shape[1]
    params = params_to_device(backend, network.init_params(sizes, seed), dtype)
    shard = DeviceShard(backend, TrainingSet(as_source(X, Y), np.arange(m)), 0, m, dtype, True)
    if cls is GeneralSolver:
        config = TrainConfig(layers=tuple(sizes), learning_rate=lr, dtype=dtype)
        solver = cls(backend, params, shard, LOCAL, config, m)
    else:
        solver = cls(backend, params, *shard.columns(), lr)
    costs = [backend.scalar(solver.step(want_cost=True)[0]) / m for _ in range(iterations)]
    return costs, params_to_host(backend, solver.parameters())


def plain_numpy_float64(X, Y, iterations, sizes, lr=0.0075):
    """The generic code on NumPy in float64 with the textbook update: the reference."""
    cpu = backend_mod.get_backend("cpu")
    params = params_to_device(cpu, network.init_params(sizes, 1), "float64")
    costs = []
    for _ in range(iterations):
        AL, caches = network.forward(np, params, X)
        costs.append(float(network.cost_from_logits(np, caches[-1][1], Y)))
        network.update(params, network.backward(np, params, caches, AL, Y), lr)
    return costs, params_to_host(cpu, params)


def test_gram_equals_direct_on_reference_recipe_float64(backend, course_data):
    """The issue's bar: the gram trajectory equals the direct one to 1e-12 relative."""
    train, _ = course_data
    X, Y = train.X, train.Y
    sizes = list(REF.layers)
    ref_costs, ref_params = plain_numpy_float64(X, Y, 300, sizes)
    costs, params = run_solver(GramSolver, backend, X, Y, "float64", 300, sizes)
    assert rel_err(costs, ref_costs) <= 1e-12
    for (W, b), (W_ref, b_ref) in zip(params, ref_params):
        assert rel_err(W, W_ref) <= 1e-12 and rel_err(b, b_ref) <= 1e-12


def test_gram_full_run_matches_direct_costs_and_accuracy(backend, course_data):
    train, test = course_data
    direct = fit(
        backend_mod.get_backend("cpu"),
        TrainConfig(dtype="float64", solver="direct"),
        train.X,
        train.Y,
    )
    gram = fit(backend, TrainConfig(dtype="float64", solver="gram"), train.X, train.Y)
    assert gram.solver == "gram" and direct.solver == "direct"
    assert rel_err([c for _, c in gram.costs], [c for _, c in direct.costs]) <= 1e-12
    for a, b in zip(
        params_to_host(backend, gram.params),
        params_to_host(backend_mod.get_backend("cpu"), direct.params),
    ):
        assert rel_err(a[0], b[0]) <= 1e-11


@pytest.mark.parametrize(
    "cls", [NumpyDirectSolver, DirectSolver, GramSolver, GeneralSolver, FusedSolver]
)
def test_solvers_match_reference_in_each_dtype(cls, dtype):
    rng = np.random.default_rng(0)
    sizes = [300, 9, 4, 1]
    X, Y = rng.random((sizes[0], 40)), (rng.random((1, 40)) > 0.4).astype(float)
    ref_costs, ref_params = plain_numpy_float64(X, Y, 25, sizes, lr=0.05)
    costs, params = run_solver(cls, backend_mod.get_backend("cpu"), X, Y, dtype, 25, sizes, lr=0.05)
    assert rel_err(costs, ref_costs) <= RTOL[dtype]
    for (W, b), (W_ref, b_ref) in zip(params, ref_params):
        assert rel_err(W, W_ref) <= RTOL[dtype] and rel_err(b, b_ref) <= RTOL[dtype]


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda c: c.name)
def test_every_numpy_layout_is_the_direct_algorithm(layout, dtype):
    """Whichever layout the planner picks, the iterates are DirectSolver's."""
    rng = np.random.default_rng(4)
    sizes = [300, 9, 4, 1]
    X, Y = rng.random((sizes[0], 40)), (rng.random((1, 40)) > 0.4).astype(float)
    ref_costs, ref_params = plain_numpy_float64(X, Y, 25, sizes, lr=0.05)
    cpu = backend_mod.get_backend("cpu")
    params = params_to_device(cpu, network.init_params(sizes, 1), dtype)
    s = NumpyDirectSolver(cpu, params, X.astype(dtype), Y.astype(dtype), 0.05, layout=layout)
    assert (s.X_cols is not None, s.X_rows is not None) == (
        "cols" in layout.storage,
        "rows" in layout.storage,
    )
    costs = [float(s.step(want_cost=True)[0]) / 40 for _ in range(25)]
    assert rel_err(costs, ref_costs) <= RTOL[dtype]
    for (W, b), (W_ref, b_ref) in zip(params_to_host(cpu, s.parameters()), ref_params):
        assert rel_err(W, W_ref) <= RTOL[dtype] and rel_err(b, b_ref) <= RTOL[dtype]


def test_the_planner_times_every_product_and_respects_memory():
    rng = np.random.default_rng(5)
    X, W1 = rng.random((500, 60)), rng.standard_normal((7, 500))
    best, ms = plan_layout(X, W1, free_bytes=2**34)
    assert best in LAYOUTS and len(ms) == 8 and all(v > 0 for v in ms.values())
    # X twice would not fit in half the memory: only one copy of X is kept
    one, _ = plan_layout(X, W1, free_bytes=3 * X.nbytes)
    assert len(one.storage) == 1
    # not even room to try a second copy: the plain layout, untimed
    assert plan_layout(X, W1, free_bytes=2 * X.nbytes) == (LAYOUTS[0], {})


def test_gram_keeps_float64_state_when_training_float32():
    cpu = backend_mod.get_backend("cpu")
    rng = np.random.default_rng(1)
    X = rng.random((50, 10)).astype(np.float32)
    params = params_to_device(cpu, network.init_params([50, 4, 1], 1), "float32")
    s = GramSolver(cpu, params, X, np.ones((1, 10), np.float32), 0.1)
    assert s.G.dtype == s.Z1_lin.dtype == s.C.dtype == np.float64
    s.step(want_cost=False)
    assert s.parameters()[0].W.dtype == np.float32


def test_auto_picks_gram_only_when_it_pays_and_fits(monkeypatch):
    monkeypatch.setattr(backend_mod.Backend, "free_memory", lambda self: 2 * 2**30)  # 2 GiB
    cpu = backend_mod.get_backend("cpu")

    def pick(m, layers=(12288, 20, 7, 5, 1), needs_params=False, **options):
        return choose_solver(TrainConfig(layers=layers, **options), cpu, m, needs_params)

    assert pick(209) == "gram"
    assert pick(8000) == "gram"  # G: 512 MB
    assert pick(12000) == "direct"  # G: 1.15 GB, more than a quarter of 2 GiB
    assert pick(20000) == "direct"  # m >= n_x
    assert pick(209, layers=(12288, 1)) == "direct"  # no hidden layer
    assert pick(209, needs_params=True) == "direct"  # validation or checkpoints read W1
    assert pick(209, solver="direct") == "direct"
    assert pick(209, optimizer="adam") == "general"
    assert pick(209, batch_size=64) == "general"
    with pytest.raises(GpucatError, match="plain full-batch gradient descent only"):
        pick(209, solver="gram", l2=0.1)
    with pytest.raises(GpucatError, match="cannot be combined"):
        pick(209, solver="gram", needs_params=True)


def test_gram_without_hidden_layer_is_a_clear_error():
    cpu = backend_mod.get_backend("cpu")
    with pytest.raises(GpucatError, match="at least one hidden layer"):
        fit(
            cpu,
            TrainConfig(layers=(12288, 1), solver="gram", iterations=2),
            np.zeros((12288, 3)),
            np.ones((1, 3)),
        )


def test_logistic_regression_network_trains_with_direct(course_data):
    """A network without hidden layers (12288-1) goes through the generic DirectSolver."""
    train, _ = course_data
    result = fit(
        backend_mod.get_backend("cpu"),
        TrainConfig(layers=(12288, 1), iterations=20, log_every=19),
        train.X,
        train.Y,
    )
    assert result.solver == "direct" and result.costs[-1][1] < result.costs[0][1]


def test_numpy_gram_fast_path_is_bit_identical_to_gram(dtype, course_data):
    train, _ = course_data
    cpu = backend_mod.get_backend("cpu")
    sizes = [12288, 20, 7, 5, 1]
    costs, params = run_solver(GramSolver, cpu, train.X, train.Y, dtype, 60, sizes)
    fast_costs, fast_params = run_solver(NumpyGramSolver, cpu, train.X, train.Y, dtype, 60, sizes)
    assert fast_costs == costs
    for (W, b), (W0, b0) in zip(fast_params, params):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


def test_layout_choice_is_repeatable_and_kept_on_resume(tmp_path, course_data, monkeypatch):
    """A process plans once per shape; GPUCAT_NUMPY_LAYOUT fixes the layout; a checkpoint
    records it and a resumed run keeps it (so resuming stays bit-for-bit)."""
    import gpucat.solvers as solvers
    from gpucat.checkpoint import load_checkpoint

    calls = []
    real = solvers.plan_layout
    monkeypatch.setattr(solvers, "plan_layout", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(solvers, "_PLANS", {})
    X, W1 = np.random.default_rng(0).random((200, 30)), np.ones((5, 200))
    first = solvers.choose_layout(X, W1, 2**34)
    assert solvers.choose_layout(X, W1, 2**34) is first and len(calls) == 1
    monkeypatch.setenv("GPUCAT_NUMPY_LAYOUT", "W1T rows")
    assert solvers.choose_layout(X, W1, 2**34).name == "W1T rows"
    monkeypatch.setenv("GPUCAT_NUMPY_LAYOUT", "diagonal")
    with pytest.raises(GpucatError, match="unknown layout 'diagonal'"):
        solvers.choose_layout(X, W1, 2**34)
    monkeypatch.delenv("GPUCAT_NUMPY_LAYOUT")

    train, _ = course_data
    cpu = backend_mod.get_backend("cpu")
    cfg = TrainConfig(layers=(12288, 5, 1), iterations=8, dtype="float64", solver="direct")
    ck = tmp_path / "ck.safetensors"
    fit(cpu, cfg, train.X, train.Y, checkpoint=str(ck), checkpoint_every=4, stop_after=4)
    progress = load_checkpoint(ck)[4]
    assert progress.layout in solvers.LAYOUT_NAMES
    monkeypatch.setattr(solvers, "_PLANS", {})  # as a new process would
    other = next(n for n in solvers.LAYOUT_NAMES if n != progress.layout)
    monkeypatch.setattr(solvers, "plan_layout", lambda *a, **k: (solvers.LAYOUT_NAMES[other], {}))
    assert fit(cpu, cfg, train.X, train.Y, resume=str(ck)).layout == progress.layout


def test_fused_solver_on_every_backend_is_the_direct_algorithm(backend, dtype, course_data):
    """--solver fused: on NumPy and the strict device the generic Ops (bit for bit the
    generic DirectSolver), on CuPy the CUDA kernels; all within the dtype's tolerance of
    the plain float64 algorithm over 60 iterations of the reference recipe."""
    train, _ = course_data
    sizes = [12288, 20, 7, 5, 1]
    ref_costs, ref_params = plain_numpy_float64(train.X, train.Y, 60, sizes)
    costs, params = run_solver(FusedSolver, backend, train.X, train.Y, dtype, 60, sizes)
    assert rel_err(costs, ref_costs) <= RTOL[dtype]
    for (W, b), (W0, b0) in zip(params, ref_params):
        assert rel_err(W, W0) <= RTOL[dtype] and rel_err(b, b0) <= RTOL[dtype]
    if backend.name != "cupy":
        direct_costs, direct_params = run_solver(
            DirectSolver, backend, train.X, train.Y, dtype, 60, sizes
        )
        assert costs == direct_costs
        for (W, b), (W0, b0) in zip(params, direct_params):
            np.testing.assert_array_equal(W, W0)
            np.testing.assert_array_equal(b, b0)


def test_fused_runs_through_fit_and_refuses_what_it_cannot_do(course_data):
    train, _ = course_data
    cpu = backend_mod.get_backend("cpu")
    r = fit(
        cpu,
        TrainConfig(solver="fused", iterations=30, dtype="float64", log_every=10),
        train.X,
        train.Y,
    )
    d = fit(
        cpu,
        TrainConfig(solver="direct", iterations=30, dtype="float64", log_every=10),
        train.X,
        train.Y,
    )
    assert (
        r.solver == "fused" and rel_err([c for _, c in r.costs], [c for _, c in d.costs]) <= 1e-12
    )
    with pytest.raises(GpucatError, match="--solver fused runs plain full-batch"):
        choose_solver(TrainConfig(solver="fused", optimizer="adam"), cpu, 209)
    with pytest.raises(GpucatError, match="--solver fused runs on one process"):
        choose_solver(TrainConfig(solver="fused"), cpu, 209, processes=2)
