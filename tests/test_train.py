"""Training on the real course data: the published reference run, and every device alike."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from gpucat.config import TrainConfig
from gpucat.errors import TrainingDiverged
from gpucat.nn import network
from gpucat.nn.inference import probabilities, scores
from gpucat.training.loop import fit

import reference_impl as ref
from conftest import RTOL, data_dir, rel_err

PUBLISHED_COST_0 = 0.771749  # the published recipe's printed cost at iteration 0 (6 decimals)


@pytest.fixture(scope="session")
def independent_run(course_data):
    """The reference recipe, 2500 iterations, by the independent implementation."""
    train, test = course_data
    p, costs = ref.train(train.X, train.Y, [12288, 20, 7, 5, 1], 0.0075, 2500)
    return {
        "costs": costs,
        "train_accuracy": float(np.mean(ref.predict(train.X, p) == train.Y)),
        "test_accuracy": float(np.mean(ref.predict(test.X, p) == test.Y)),
    }


def test_independent_run_is_the_published_one(independent_run):
    """The published numbers themselves: 0.771749, 206/209, 40/50."""
    assert round(independent_run["costs"][0][1], 6) == PUBLISHED_COST_0
    assert round(independent_run["train_accuracy"] * 209) == 206
    assert round(independent_run["test_accuracy"] * 50) == 40


def test_cli_reproduces_published_run(independent_run):
    """`gpucat train --device cpu --dtype float64 --json`, the issue's acceptance command."""
    env = {**os.environ, "GPUCAT_DATA_DIR": str(data_dir())}
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "gpucat",
            "train",
            "--device",
            "cpu",
            "--dtype",
            "float64",
            "--json",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["dtype"] == "float64" and doc["backend"] == "numpy" and doc["iterations"] == 2500
    logged = [i for i, _ in doc["costs"]]
    assert logged == [i for i, _ in independent_run["costs"]] == [*range(0, 2500, 100), 2499]
    for (_, c), (_, c_ref) in zip(doc["costs"], independent_run["costs"]):
        assert abs(c - c_ref) <= 1e-6 * abs(c_ref)
    assert round(doc["costs"][0][1], 6) == PUBLISHED_COST_0
    assert doc["train_accuracy"] == pytest.approx(206 / 209)
    assert doc["test_accuracy"] == pytest.approx(40 / 50)
    assert doc["seconds"] > 0
    assert "Cost after iteration 2499" in out.stdout


def test_full_reference_run_same_accuracies_on_every_backend(device, course_data, independent_run):
    train, test = course_data
    config = TrainConfig(dtype="float64")
    result = fit(device, config, train)
    c = [c for _, c in result.costs]
    c_ref = [c for _, c in independent_run["costs"]]
    # 2500 iterations compound rounding differences; 1e-9 is still far below what prints
    assert rel_err(c, c_ref) <= 1e-9
    acc_train, acc_test = (
        scores(probabilities(device, result.params, ds, "float64"), ds.Y)["accuracy"]
        for ds in (train, test)
    )
    assert (acc_train, acc_test) == (
        independent_run["train_accuracy"],
        independent_run["test_accuracy"],
    )


def test_50_iterations_same_cost_trajectory(device, dtype, course_data):
    """Every device and dtype follows the independent float64 trajectory within dtype
    tolerance, cost by cost."""
    train, _ = course_data
    _, expected = ref.train(train.X, train.Y, [12288, 20, 7, 5, 1], 0.0075, 50, log_every=1)
    got = fit(device, TrainConfig(iterations=50, log_every=1, dtype=dtype), train)
    assert [i for i, _ in got.costs] == list(range(50))
    assert rel_err([c for _, c in got.costs], [c for _, c in expected]) <= RTOL[dtype]


def test_divergence_is_reported_not_returned(course_data):
    import gpucat.backends as b

    train, _ = course_data
    with warnings.catch_warnings():  # overflow on the way is expected, and not printed
        warnings.simplefilter("error")
        with pytest.raises(TrainingDiverged, match="smaller --learning-rate"):
            fit(b.get_device("cpu"), TrainConfig(learning_rate=1e4, iterations=300), train)


def test_a_nan_weight_is_the_same_divergence_at_the_same_iteration_everywhere(device, course_data):
    """One NaN in W1: every device stops at iteration 0 with the one message (the GPU's ReLU
    must not zero the layer and train on as if nothing happened)."""
    train, _ = course_data
    init = network.init_params([12288, 20, 7, 5, 1], 1)
    init[0][0][3, 100] = np.nan
    with pytest.raises(TrainingDiverged) as e:
        fit(device, TrainConfig(iterations=5), train, init=init)
    assert "the training loss reached nan at iteration 0" in str(e.value)


@pytest.mark.parametrize(
    "first, mean, expected",
    [
        (0.05, 14.99, False),  # under 100 x 0.05 + 10: the additive term lets it rise this far
        (0.05, 15.01, True),
        (0.5, 60.0, False),  # exactly at the limit: not above it
        (0.7, 79.99, False),
        (0.7, 80.01, True),
        (0.7, float("inf"), True),
        (0.7, float("nan"), True),
    ],
)
def test_the_divergence_limit_from_both_sides(first, mean, expected):
    from gpucat.training.loop import diverged

    assert diverged(mean, first) is expected


def one_huge_step(train, learning_rate):
    """One iteration of 12288-3-1 at this learning rate from an output layer scaled by 100
    (its loss, computed before the update, finite): the result, or TrainingDiverged."""
    import gpucat.backends as b

    init = network.init_params([12288, 3, 1], 1)
    init[1] = (init[1][0] * 100, init[1][1])
    config = TrainConfig(layers=(12288, 3, 1), learning_rate=learning_rate, iterations=1)
    return fit(b.get_device("cpu"), config, train, init=init)


def test_parameters_the_last_update_made_infinite_are_divergence(course_data):
    """At learning rate 1e308 the update leaves weights that are not finite: a divergence at
    iteration 0, not a model."""
    with warnings.catch_warnings(), pytest.raises(TrainingDiverged) as e:
        warnings.simplefilter("error")  # NumPy's overflow warnings are not the user's
        one_huge_step(course_data[0], 1e308)
    assert str(e.value) == (
        "training diverged: the parameters are not finite after iteration 0 (learning rate "
        "1e+308); try a smaller --learning-rate. No model was saved."
    )


def test_finite_parameters_however_large_are_not_that_divergence(course_data):
    """The same at learning rate 1e305: weights up to about 1e306, finite, whose plain sum
    overflows: the check looks at each value, so the run ends with them."""
    import gpucat.backends as b

    result = one_huge_step(course_data[0], 1e305)
    W1 = network.params_to_host(b.get_device("cpu"), result.params)[0][0]
    assert np.isfinite(W1).all() and np.abs(W1).max() > 1e305
    with np.errstate(over="ignore"):
        assert not np.isfinite(W1.sum())
