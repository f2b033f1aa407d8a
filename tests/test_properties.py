"""Generated recipes on every device against the independent reference (hypothesis): layer
sizes with widths of 1, example counts down to 1, batch sizes that do not divide them, both
dtypes, each solver and optimizer, dropout, L2, learning-rate decay, validation with early
stopping, and 1 to 3 data-parallel ranks whose sums travel as MPI's do (the real
MPIReducer and each device's exchange, over a communicator of threads).

A failure hypothesis finds is kept as an ``@example`` of the test once shrunk. The default
profile runs a fixed set of examples (derandomized, no database: the same in CI every
time); HYPOTHESIS_PROFILE=explore draws new ones (docs/testing.md)."""

from __future__ import annotations

import threading
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from gpucat.backends.cpu import NumpyDevice
from gpucat.backends.cuda import CupyDevice
from gpucat.backends.strict import StrictDevice
from gpucat.config import TrainConfig
from gpucat.data.dataset import Dataset
from gpucat.nn.network import params_to_host
from gpucat.training.loop import fit
from gpucat.training.reducers import LOCAL

import reference_impl as ref
from conftest import RTOL, rel_err

FLOAT64 = 1e-10  # float64 sums added in other orders, over a few updates
ADAM_FLOAT32_PARAMS = 1e-3  # Adam moves a weight by ~lr whatever its gradient's rounding


@st.composite
def recipes(draw):
    """A recipe gpucat accepts, its data and how many ranks share it."""
    n_x = draw(st.integers(1, 10))
    hidden = draw(st.lists(st.integers(1, 5), max_size=2))
    M = draw(st.integers(1, 20))
    labels = draw(st.lists(st.integers(0, 1), min_size=M, max_size=M))
    optimizer = draw(st.sampled_from(["gd", "momentum", "adam"]))
    dtype = draw(st.sampled_from(["float64", "float32"]))
    recipe = dict(
        layers=(n_x, *hidden, 1),
        dtype=dtype,
        optimizer=optimizer,
        iterations=draw(st.integers(1, 8)),
        seed=draw(st.integers(0, 2**16)),
        learning_rate=0.004 if optimizer == "adam" else draw(st.sampled_from([0.0075, 0.05])),
        batch_size=draw(st.none() | st.integers(1, M)),
        lr_decay=draw(st.sampled_from([0.0, 0.5])),
        l2=draw(st.sampled_from([0.0, 0.1, 0.7])),
        keep_prob=draw(st.sampled_from([1.0, 0.8, 0.5])) if hidden else 1.0,
        log_every=draw(st.integers(1, 3)),
    )
    validation = draw(st.sampled_from([0.0, 0.0, 0.4]))
    train = M
    if validation:
        tr, va = ref.split(np.array([labels], dtype=float), validation, recipe["seed"])
        if tr.size and va.size:  # else gpucat refuses the split (tested elsewhere)
            train = tr.size
            recipe.update(validation=validation, validate_every=draw(st.integers(1, 3)))
            if dtype == "float64":  # float32 may break a tie of costs the other way
                recipe["patience"] = draw(st.none() | st.integers(1, 2))
    gram = optimizer != "adam" and "validation" not in recipe and hidden
    recipe["solver"] = draw(st.sampled_from(["direct", "gram"] if gram else ["direct"]))
    ranks = draw(st.integers(1, min(3, train)))
    return recipe, draw(st.integers(0, 2**16)), labels, ranks


def clear_best(expected: dict, tol: float) -> bool:
    """Whether the reference's best validation cost beats each other one (the final
    parameters' included) by more than ``tol``: else rounding may pick another."""
    costs = [c for _, c in expected["val_costs"]]
    if "final_val_cost" in expected:
        costs.append(expected["final_val_cost"])
    if len(costs) < 2:
        return True
    best, *rest = sorted(costs)
    return rest[0] - best > tol * abs(best)


def dataset(n_x: int, labels: list[int], seed: int) -> Dataset:
    """uint8 pixels (never all zeros), divided by 255 on the device as the course data is."""
    rng = np.random.default_rng(seed)
    rows = rng.integers(1, 256, (len(labels), n_x), dtype=np.uint8)
    return Dataset(rows, np.array([labels], dtype=np.float64), "generated")


class ThreadComm:
    """An MPI communicator of threads: Allreduce(IN_PLACE, buf, SUM) adds every rank's
    buffer in rank order into each one, as MPI does, between two barriers."""

    def __init__(self, hub, rank: int):
        self.hub, self.rank = hub, rank

    def Get_rank(self):  # noqa: N802 (mpi4py's names)
        return self.rank

    def Get_size(self):  # noqa: N802
        return self.hub.size

    def Allreduce(self, _in_place, buf, op):  # noqa: N802
        self.hub.parts[self.rank] = np.array(buf)
        self.hub.barrier.wait()
        total = self.hub.parts[0].copy()
        for part in self.hub.parts[1:]:
            total += part
        self.hub.barrier.wait()
        buf[...] = total


def a_device_like(device):
    """A device of the same kind with nothing shared (a rank is a process of its own: its
    update buffers and staging memory are its own)."""
    if isinstance(device, CupyDevice):
        return CupyDevice(device.xp, device.native, device.label)
    return {"numpy": NumpyDevice, "strict": StrictDevice}[device.name]()


def on_ranks(device, config, data, ranks: int):
    """Each rank's (result, its device) of the run on ``ranks`` threads joined as MPI ranks."""
    if ranks == 1:
        return [(fit(device, config, data, reducer=LOCAL), device)]
    from gpucat.training.distributed import MPIReducer

    hub = types.SimpleNamespace(size=ranks, parts=[None] * ranks)
    hub.barrier = threading.Barrier(ranks, timeout=60)
    out: list = [None] * ranks

    def rank(r):
        mine = a_device_like(device)
        try:
            out[r] = (fit(mine, config, data, reducer=MPIReducer(ThreadComm(hub, r), mine)), mine)
        except BaseException as e:  # noqa: BLE001 (raised below, in the test's thread)
            hub.barrier.abort()
            out[r] = e

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(ranks)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in out:
        if isinstance(r, BaseException):
            raise r
    return out


PLAIN = dict(
    dtype="float64", optimizer="gd", iterations=1, seed=0, learning_rate=0.0075, batch_size=None,
    lr_decay=0.0, l2=0.0, keep_prob=1.0, log_every=1, solver="direct",
)  # fmt: skip


def kept(layers, labels, ranks=1, data_seed=0, **changes):
    """A fixed example, as ``recipes`` draws them: PLAIN with ``changes``."""
    return {**PLAIN, "layers": layers, **changes}, data_seed, labels, ranks


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(case=recipes())
# one input, one hidden unit, one example
@example(case=kept((1, 1, 1), [1], iterations=3, learning_rate=0.05))
# found: a bias of 4e-15 (its gradient cancels over a balanced batch) whose own relative
# error is 1e-10; measured against its layer, as a whole, it is rounding
@example(case=kept((3, 5, 4, 1), [0] * 7 + [1] * 7, seed=2))
# found: the validation costs at iteration 0 and after it are 2.8e-9 apart, below float32's
# rounding: float32 found the later one lower, float64 keeps iteration 0
@example(
    case=kept((1, 1, 1), [0, 0, 0, 1, 1], ranks=2, seed=2, dtype="float32",
              optimizer="momentum", validation=0.4, validate_every=1)
)  # fmt: skip
# more ranks than held-out examples: the last rank validates none and adds nothing
@example(case=kept((1, 1, 1), [0, 0, 0, 1, 1], ranks=3, validation=0.4, validate_every=1))
def test_generated_recipes_equal_the_independent_reference(device, case):
    recipe, data_seed, labels, ranks = case
    config = TrainConfig(**recipe)
    data = dataset(recipe["layers"][0], labels, data_seed)
    knobs = {k: v for k, v in recipe.items() if k not in ("layers", "dtype", "solver")}
    expected = ref.train_options(data.X, data.Y, list(recipe["layers"]), **knobs)
    dtype = recipe["dtype"]
    if dtype == "float32" and expected["first_kink"] is not None:
        # past a ReLU kink within float32 rounding the two dtypes may legitimately part
        config = TrainConfig(**{**recipe, "iterations": max(expected["first_kink"], 1)})
        knobs["iterations"] = config.iterations
        expected = ref.train_options(data.X, data.Y, list(recipe["layers"]), **knobs)
    tol = FLOAT64 if dtype == "float64" else RTOL[dtype]
    runs = on_ranks(device, config, data, ranks)
    for got, where in runs:
        assert got.solver == recipe["solver"]
        assert [i for i, _ in got.costs] == [i for i, _ in expected["costs"]]
        assert rel_err([c for _, c in got.costs], [c for _, c in expected["costs"]]) <= tol
        assert [i for i, _ in got.val_costs] == [i for i, _ in expected["val_costs"]]
        if expected["val_costs"]:
            got_val = [c for _, c in got.val_costs]
            assert rel_err(got_val, [c for _, c in expected["val_costs"]]) <= tol
        if not clear_best(expected, tol):
            continue  # the best validation cost ties another within rounding: either may win
        assert (got.best_iteration, got.stopped_early, got.iterations_done) == (
            expected["best_iteration"],
            expected["stopped_early"],
            expected["iterations_done"],
        )
        ptol = ADAM_FLOAT32_PARAMS if (dtype, recipe["optimizer"]) == ("float32", "adam") else tol
        L = len(recipe["layers"]) - 1
        want = [(expected["params"][f"W{l}"], expected["params"][f"b{l}"]) for l in range(1, L + 1)]
        for (W, b), (W0, b0) in zip(params_to_host(where, got.params), want):
            # a layer's W and b together: a bias whose gradient cancels to rounding (a
            # balanced batch) is measured against the layer's scale, not against its own
            assert rel_err(np.r_[W.ravel(), b.ravel()], np.r_[W0.ravel(), b0.ravel()]) <= ptol


@pytest.mark.parametrize("ranks", [2, 3])
def test_ranks_hold_the_same_parameters(ranks):
    """The communicator of threads is MPI's sum: every rank ends with the same parameters."""
    from gpucat.backends import get_device

    data = dataset(5, [0, 1, 1, 0, 1, 0, 0], 3)
    config = TrainConfig(layers=(5, 3, 1), iterations=4, batch_size=3, dtype="float64")
    runs = on_ranks(get_device("cpu"), config, data, ranks)
    first = params_to_host(runs[0][1], runs[0][0].params)
    for got, where in runs[1:]:
        for (W, b), (W0, b0) in zip(params_to_host(where, got.params), first):
            np.testing.assert_array_equal(W, W0)
            np.testing.assert_array_equal(b, b0)


def test_each_rank_sizes_its_memory_check_by_its_own_block(monkeypatch):
    """Seven examples on three ranks: each checks the memory its own block needs (3, 2, 2
    examples) against the whole set's M."""
    from gpucat.backends import get_device
    from gpucat.training import loop

    seen, real = [], loop.check_memory
    monkeypatch.setattr(loop, "check_memory", lambda name, config, M, m, *a: seen.append((M, m)) or real(name, config, M, m, *a))  # fmt: skip
    on_ranks(get_device("cpu"), TrainConfig(layers=(5, 3, 1), iterations=1), dataset(5, [0, 1, 1, 0, 1, 0, 0], 3), 3)  # fmt: skip
    assert sorted(seen) == [(7, 2), (7, 2), (7, 3)]
