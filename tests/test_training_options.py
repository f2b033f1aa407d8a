"""Training beyond the original: the optimizers by hand, resume, validation, early stopping.
(Every option on every solver and device against the reference: test_solvers.py.)"""

from __future__ import annotations

import numpy as np
import pytest
from test_solvers import OPTIONS

from gpucat import backends
from gpucat.config import TrainConfig
from gpucat.data.batches import mirrored_rows, stratified_split
from gpucat.errors import GpucatError
from gpucat.nn.network import Layer, params_to_host
from gpucat.nn.optim import Adam, Momentum
from gpucat.training.loop import fit

import reference_impl as ref

SMALL = (12288, 6, 4, 1)
EVERYTHING = OPTIONS["everything"]  # every option at once (Adam, so the direct solver)


def cpu_ops():
    return backends.get_device("cpu").generic()


def as_dict(host_params):
    return {f"{k}{l}": a for l, p in enumerate(host_params, 1) for k, a in zip("Wb", p)}


def test_momentum_by_hand():
    """v = beta v + (1 - beta) g;  p -= lr v, three steps written out."""
    p = [Layer(np.array([[1.0]]), np.array([[0.5]]))]
    opt = Momentum(cpu_ops(), p, beta1=0.9)
    gs = [0.5, -0.2, 0.1]
    for g in gs:
        opt.update(p, [(np.array([[g]]), np.array([[2 * g]]))], 0.1, 0.0)
    v1 = 0.1 * 0.5
    v2 = 0.9 * v1 + 0.1 * -0.2
    v3 = 0.9 * v2 + 0.1 * 0.1
    assert p[0].W[0, 0] == pytest.approx(1.0 - 0.1 * (v1 + v2 + v3), rel=1e-15)
    assert p[0].b[0, 0] == pytest.approx(0.5 - 0.1 * 2 * (v1 + v2 + v3), rel=1e-15)


def test_adam_by_hand_with_l2():
    """Adam with bias correction and the L2 gradient l2·w added, three steps written out with
    plain floats (the bias gets no L2 term)."""
    p = [Layer(np.array([[1.0]]), np.array([[0.0]]))]
    opt = Adam(cpu_ops(), p, beta1=0.9, beta2=0.999, epsilon=1e-8)
    w, m, v = 1.0, 0.0, 0.0
    for t, g in enumerate([0.5, -0.2, 0.1], start=1):
        opt.update(p, [(np.array([[g]]), np.array([[0.0]]))], 0.01, 0.05)
        g = g + 0.05 * w
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
        w -= 0.01 * m_hat / (v_hat**0.5 + 1e-8)
        assert p[0].W[0, 0] == pytest.approx(w, rel=1e-13)
    assert p[0].b[0, 0] == 0.0


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_resume_is_bit_identical(tmp_path, course_data, dtype):
    """Stopped after 20 iterations (a checkpoint at the end), resumed to 45: exactly the
    parameters, costs and validations of an uninterrupted 45-iteration run (CPU), optimizer
    state (in the run's dtype) and random streams included."""
    cpu = backends.get_device("cpu")
    train, _ = course_data
    cfg = TrainConfig(layers=SMALL, iterations=45, dtype=dtype, log_every=5, **EVERYTHING)
    whole = fit(cpu, cfg, train)
    ck = tmp_path / "ck.safetensors"
    short = TrainConfig(**{**cfg.to_dict(), "iterations": 20})
    fit(cpu, short, train, checkpoint=str(ck), checkpoint_every=7)
    resumed = fit(cpu, cfg, train, resume=str(ck))
    for (W, b), (W0, b0) in zip(
        params_to_host(cpu, resumed.params), params_to_host(cpu, whole.params)
    ):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)
    assert resumed.costs == whole.costs and resumed.val_costs == whole.val_costs
    assert resumed.best_iteration == whole.best_iteration


def test_resume_refuses_a_different_recipe(tmp_path, course_data):
    cpu = backends.get_device("cpu")
    train, _ = course_data
    cfg = TrainConfig(layers=SMALL, iterations=10, dtype="float64")
    ck = tmp_path / "ck.safetensors"
    fit(cpu, cfg, train, checkpoint=str(ck))
    other = TrainConfig(layers=SMALL, iterations=10, dtype="float64", learning_rate=0.1)
    with pytest.raises(GpucatError, match="learning_rate=0.0075"):
        fit(cpu, other, train, resume=str(ck))
    other = TrainConfig(layers=SMALL, iterations=10, dtype="float64", validate_every=5)
    with pytest.raises(GpucatError, match="validate_every=100") as e:
        fit(cpu, other, train, resume=str(ck))
    assert str(ck) in str(e.value)  # the message names the checkpoint


def test_checkpoint_every_needs_a_checkpoint(course_data):
    train, _ = course_data
    with pytest.raises(GpucatError) as e:
        fit(backends.get_device("cpu"), TrainConfig(iterations=3), train, checkpoint_every=2)
    assert str(e.value) == "--checkpoint-every needs a --checkpoint FILE to write to."


def test_layers_that_do_not_fit_the_data_are_one_message(course_data):
    train, _ = course_data
    with pytest.raises(GpucatError) as e:
        fit(backends.get_device("cpu"), TrainConfig(layers=(100, 5, 1)), train)
    assert str(e.value) == "the data has 12288 features per example but --layers starts with 100."


@pytest.mark.parametrize("seed", [1, 3])
def test_the_seed_draws_the_first_parameters(course_data, seed):
    """Iteration 0's cost is that of the reference's parameters drawn from this seed."""
    train, _ = course_data
    config = TrainConfig(layers=SMALL, iterations=1, log_every=1, seed=seed)
    got = fit(backends.get_device("cpu"), config, train).costs[0][1]
    AL, _ = ref.forward(train.X, ref.init(list(SMALL), seed))
    assert got == pytest.approx(ref.cost(AL, train.Y), rel=1e-12)
    other = ref.forward(train.X, ref.init(list(SMALL), seed + 1))[0]
    assert got != pytest.approx(ref.cost(other, train.Y), rel=1e-6)


def test_a_resumed_run_keeps_its_solver_and_the_best_parameters_found_before(
    tmp_path, course_data, monkeypatch
):
    """Resumed where ``auto`` would now choose another solver, the run goes on with the one
    it started with; validation costs that only rise keep iteration 0's parameters (the
    initial ones) as the best, across the checkpoint."""
    import itertools

    from gpucat.nn.network import init_params
    from gpucat.training import loop as train_mod

    rising = itertools.count(1.0)
    monkeypatch.setattr(train_mod._Validation, "cost", lambda self, params: next(rising))
    cpu, train = backends.get_device("cpu"), course_data[0]
    cfg = TrainConfig(layers=(12288, 3, 1), iterations=4, validation=0.2, validate_every=1)
    ck = tmp_path / "ck.safetensors"
    chosen = fit(cpu, cfg.replace(iterations=2), train, checkpoint=str(ck)).solver
    other = {"gram": "direct", "direct": "gram"}[chosen]
    monkeypatch.setattr(train_mod, "choose_solver", lambda *a: other)
    resumed = fit(cpu, cfg, train, resume=str(ck))
    assert (resumed.solver, resumed.iterations_done, resumed.best_iteration) == (chosen, 4, 0)
    for (W, b), (W0, b0) in zip(params_to_host(cpu, resumed.params), init_params([12288, 3, 1], 1)):  # fmt: skip
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b, b0)


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
    `patience` validations without improvement and returns the best parameters."""
    cpu = backends.get_device("cpu")
    train, _ = course_data
    cfg = TrainConfig(
        layers=(12288, 40, 1),
        iterations=3000,
        dtype="float64",
        optimizer="adam",
        learning_rate=0.003,
        validation=0.3,
        patience=3,
        validate_every=20,
    )
    r = fit(cpu, cfg, train)
    assert r.stopped_early and r.iterations_done < 3000
    best = min(r.val_costs, key=lambda t: t[1])
    assert r.best_iteration == best[0]
    later = [c for i, c in r.val_costs if i > best[0]]
    assert len(later) == 3 and all(c >= best[1] for c in later)
    assert r.iterations_done == r.val_costs[-1][0] + 1  # stopped after that validation's step
    # the returned parameters are the best ones: their validation cost is the best logged
    _, va = stratified_split(train.Y, 0.3, seed=1)
    AL, _ = ref.forward(train.X[:, va], as_dict(params_to_host(cpu, r.params)))
    assert ref.cost(AL, train.Y[:, va]) == pytest.approx(best[1], rel=1e-12)


def test_mirrored_rows_flip_left_right():
    img = np.arange(64 * 64 * 3, dtype=np.float64).reshape(64, 64, 3)
    rows = np.stack([img.reshape(-1), 2 * img.reshape(-1)])
    np.testing.assert_array_equal(mirrored_rows(rows).T, ref.mirror(rows.T))
    np.testing.assert_array_equal(mirrored_rows(rows)[0].reshape(64, 64, 3), img[:, ::-1, :])


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(keep_prob=0.0), "--keep-prob"),
        (dict(patience=3), "--patience"),
        (dict(validation=1.0), "--validation"),
        (dict(batch_size=0), "--batch-size"),
        (dict(optimizer="sgd"), "--optimizer must be one of gd, momentum, adam, got 'sgd'"),
        (dict(dtype="float16"), "--dtype must be one of float32, float64, got 'float16'"),
        (dict(solver="lbfgs"), "--solver must be one of auto, direct, gram, got 'lbfgs'"),
        (dict(beta2=1.0), "--beta2"),
        (dict(validate_every=0), "--validate-every"),
    ],
)
def test_bad_options_are_clear_errors(bad, message):
    with pytest.raises(GpucatError, match=message):
        TrainConfig(**bad)


def test_a_checkpoint_written_before_the_fixed_layout_still_resumes(tmp_path, course_data):
    """Checkpoints from before 0.1.0's packaging record NumPy's product layout and the
    running loss as one number: they load, and the resumed run ends where one from a new
    checkpoint does."""
    import json

    from safetensors import safe_open
    from safetensors.numpy import save_file

    from gpucat.backends import get_device

    train, _ = course_data
    cpu = get_device("cpu")
    cfg = TrainConfig(layers=(12288, 4, 1), iterations=12, batch_size=50, log_every=5)
    new = tmp_path / "new.safetensors"
    fit(cpu, TrainConfig(**{**cfg.to_dict(), "iterations": 6}), train, checkpoint=str(new))
    with safe_open(str(new), framework="np") as f:
        meta, tensors = (
            json.loads(f.metadata()["gpucat_checkpoint"]),
            {k: f.get_tensor(k) for k in f.keys()},
        )
    losses, count = meta["progress"]["since_log"]
    meta["progress"]["since_log"] = [sum(losses), count]  # one running sum, as before
    meta["progress"]["layout"] = "W1 Z1T"
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={"gpucat_checkpoint": json.dumps(meta)})
    a = fit(cpu, cfg, train, resume=str(new), checkpoint=str(tmp_path / "a.safetensors"))
    b = fit(cpu, cfg, train, resume=str(old), checkpoint=str(tmp_path / "b.safetensors"))
    assert [i for i, _ in a.costs] == [i for i, _ in b.costs]
    np.testing.assert_allclose([c for _, c in a.costs], [c for _, c in b.costs], rtol=1e-12)
    for (W, c), (W0, c0) in zip(params_to_host(cpu, a.params), params_to_host(cpu, b.params)):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(c, c0)


def test_patience_counts_bad_validations_in_a_row(monkeypatch, course_data):
    """Validation costs 1.0, 1.1, 0.9, 1.0, 1.05, ...: with patience 2 training stops after
    the second bad validation in a row (iteration 4), the best being iteration 2's; counting
    every bad validation would stop at iteration 3."""
    from gpucat.training import loop as train_mod

    costs = iter([1.0, 1.1, 0.9, 1.0, 1.05, 1.2, 1.3, 1.4])
    monkeypatch.setattr(train_mod._Validation, "cost", lambda self, params: next(costs))
    train, _ = course_data
    config = TrainConfig(
        layers=(12288, 3, 1), iterations=8, validation=0.2, validate_every=1, patience=2
    )
    result = fit(backends.get_device("cpu"), config, train)
    assert result.stopped_early and result.iterations_done == 5 and result.best_iteration == 2
    assert [c for _, c in result.val_costs] == [1.0, 1.1, 0.9, 1.0, 1.05]


def test_a_validation_cost_equal_to_the_best_is_no_improvement(monkeypatch, course_data):
    """A plateau counts as bad validations: costs 1.0, 1.0, 1.0 with patience 2 stop after
    iteration 2 and keep iteration 0's parameters; at the end, final parameters that only
    equal the best do not replace it."""
    from gpucat.training import loop as train_mod

    monkeypatch.setattr(train_mod._Validation, "cost", lambda self, params: 1.0)
    train, _ = course_data
    config = TrainConfig(
        layers=(12288, 3, 1), iterations=8, validation=0.2, validate_every=1, patience=2
    )
    result = fit(backends.get_device("cpu"), config, train)
    assert result.stopped_early and result.iterations_done == 3 and result.best_iteration == 0
    # without patience, the final parameters, as good as the first, do not replace them
    result = fit(backends.get_device("cpu"), config.replace(patience=None), train)
    assert not result.stopped_early and result.iterations_done == 8
    assert result.best_iteration == 0


def test_each_cost_and_validation_is_reported_as_it_is_logged(course_data):
    """on_log gets (i, cost, None) at each log point and (i, None, cost) at each validation,
    in the order they happen, with the values the result records."""
    train, _ = course_data
    calls = []
    config = TrainConfig(
        layers=(12288, 3, 1), iterations=5, validation=0.2, validate_every=2, log_every=2
    )
    result = fit(backends.get_device("cpu"), config, train, on_log=lambda *a: calls.append(a))
    assert [c for c in calls if c[1] is None] == [(i, None, c) for i, c in result.val_costs]
    assert [c for c in calls if c[2] is None] == [(i, c, None) for i, c in result.costs]
    assert [c[0] for c in calls] == [0, 0, 2, 2, 4, 4]  # validation first: before the update


@pytest.mark.parametrize(
    "knobs, full_batch, says",
    [
        ({}, True, "mean loss over the whole training set in the training pass"),
        ({}, False, "mean loss over the batches since the previous log point in the training pass"),
        ({"keep_prob": 0.8}, True, "mean loss over the whole training set in the training pass, with dropout"),
        ({"l2": 0.1}, False, "mean loss over the batches since the previous log point in the training pass + (λ/2M)·Σ‖W‖²"),
        ({"full_cost": True}, True, "mean loss over the whole training set in the training pass"),
        ({"full_cost": True}, False, "mean loss over the whole training set, without dropout"),
        ({"full_cost": True, "keep_prob": 0.8, "l2": 0.1}, True, "mean loss over the whole training set, without dropout + (λ/2M)·Σ‖W‖²"),
    ],
)  # fmt: skip
def test_the_json_says_what_a_logged_cost_is(knobs, full_batch, says):
    """cost_kind: what was averaged, in which pass, with dropout or the L2 term or not."""
    from gpucat.training.loop import cost_kind

    assert cost_kind(TrainConfig(**knobs), full_batch) == says


@pytest.mark.parametrize(
    "opts",
    [dict(batch_size=64, keep_prob=0.9, l2=0.1), dict(batch_size=64), dict(keep_prob=0.9)],
)
def test_full_cost_logs_the_whole_training_set_without_dropout(course_data, opts):
    """--full-cost with mini-batches or dropout (and L2): each logged cost is the independent
    reference's loss over the whole training set, without dropout, plus the L2 term."""
    train, _ = course_data
    opts = {**opts, "full_cost": True}
    expected = ref.train_options(train.X, train.Y, list(SMALL), iterations=4, log_every=1, **opts)
    config = TrainConfig(layers=SMALL, iterations=4, log_every=1, solver="direct", **opts)
    got = fit(backends.get_device("cpu"), config, train)
    assert [i for i, _ in got.costs] == [i for i, _ in expected["costs"]] == [0, 1, 2, 3]
    np.testing.assert_allclose(
        [c for _, c in got.costs], [c for _, c in expected["costs"]], rtol=1e-10
    )


def test_the_memory_check_counts_a_streamed_block_by_its_batches(monkeypatch):
    """Mini-batches from a uint8 h5 on the CPU are read as training goes: with free memory
    enough for the batches but not for the whole block, the run trains; full-batch training
    from the same file holds the block (and may use gram), and is refused before it
    allocates."""
    from gpucat.data.batches import split_training
    from gpucat.data.course import load_course_data
    from gpucat.data.streaming import H5Source
    from gpucat.training.solvers import SOLVER_CLASSES

    from conftest import data_file

    cpu = backends.get_device("cpu")
    with H5Source(data_file("catvnoncat/train_catvnoncat.h5")) as source:
        # a full batch is read whole, so ``auto`` picks gram as it would in memory; mini-batches
        # stream, which gram (reading the examples whole) would undo: direct
        auto = TrainConfig(layers=(12288, 3, 1), iterations=1)
        assert fit(cpu, auto, source).solver == "gram"
        assert fit(cpu, auto.replace(batch_size=16), source).solver == "direct"
        assert fit(cpu, auto.replace(batch_size=16), load_course_data()[0]).solver == "gram"
        config = TrainConfig(layers=(12288, 3, 1), iterations=2, batch_size=16, solver="direct")
        train, _ = split_training(source, 0.0, False, 1)
        need = {s: SOLVER_CLASSES["direct"].memory(config, 209, 209, train, cpu, s) for s in (True, False)}  # fmt: skip
        assert need[True] < need[False]
        monkeypatch.setattr(cpu, "free_memory", lambda: need[True])
        assert fit(cpu, config, source).iterations_done == 2
        with pytest.raises(GpucatError, match="--solver direct needs"):
            fit(cpu, config.replace(batch_size=None), source)


@pytest.mark.parametrize("batch_size, full", [(208, False), (209, True), (None, True)])
def test_a_batch_of_every_example_is_full_batch_training(course_data, batch_size, full):
    train, _ = course_data
    got = fit(backends.get_device("cpu"), TrainConfig(layers=(12288, 3, 1), iterations=1, batch_size=batch_size), train)  # fmt: skip
    assert ("whole training set" in got.cost_kind) is full


def test_flip_trains_on_each_image_and_its_mirror(course_data):
    """--flip: the costs of the independent reference trained on the images and their
    mirrors (not those of the images alone)."""
    train, _ = course_data
    config = TrainConfig(layers=(12288, 3, 1), iterations=3, log_every=1, flip=True)
    got = [c for _, c in fit(backends.get_device("cpu"), config, train).costs]
    ref_costs = lambda flip: [c for _, c in ref.train_options(train.X, train.Y, [12288, 3, 1], iterations=3, log_every=1, flip=flip)["costs"]]  # noqa: E731  # fmt: skip
    np.testing.assert_allclose(got, ref_costs(True), rtol=1e-10)
    assert not np.allclose(got, ref_costs(False), rtol=1e-6)
