"""TrainConfig's checks: each setting that cannot train is one message, naming the flag and
the value, when the config is made; the values at each limit that can train are accepted."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpucat.config import TrainConfig
from gpucat.errors import GpucatError

GRAM = "--solver gram cannot run this recipe: {}; use --solver direct."


@pytest.mark.parametrize(
    "bad, message",
    [
        (dict(seed=-1), "--seed must be a whole number in 0 .. 2**32 - 1, got -1."),
        (dict(seed=2**32), "--seed must be a whole number in 0 .. 2**32 - 1, got 4294967296."),
        (dict(layers=(1,)), "--layers needs at least two positive sizes, got (1,)."),
        (dict(layers=(5, 0, 1)), "--layers needs at least two positive sizes, got (5, 0, 1)."),
        (dict(layers=(5, 4, 3)), "--layers must end in 1 (one cat probability), got 3."),
        (dict(learning_rate=0), "--learning-rate must be a positive number, got 0.0."),
        (dict(learning_rate=math.inf), "--learning-rate must be a positive number, got inf."),
        (dict(learning_rate=math.nan), "--learning-rate must be a positive number, got nan."),
        (dict(epsilon=0), "--epsilon must be a positive number, got 0.0."),
        (dict(iterations=0), "--iterations must be at least 1, got 0."),
        (dict(log_every=0), "--log-every must be at least 1, got 0."),
        (dict(validate_every=0), "--validate-every must be at least 1, got 0."),
        (dict(batch_size=0), "--batch-size must be at least 1, got 0."),
        (dict(beta1=1), "--beta1 must be in [0, 1), got 1.0."),
        (dict(beta2=-0.1), "--beta2 must be in [0, 1), got -0.1."),
        (dict(lr_decay=-1), "--lr-decay and --l2 must not be negative."),
        (dict(l2=-1), "--lr-decay and --l2 must not be negative."),
        (dict(keep_prob=0), "--keep-prob must be in (0, 1], got 0.0."),
        (dict(keep_prob=1.5), "--keep-prob must be in (0, 1], got 1.5."),
        (dict(validation=1), "--validation must be a fraction in [0, 1), got 1.0."),
        (
            dict(patience=3),
            "--patience (early stopping) needs --validation > 0 and a value >= 1.",
        ),
        (
            dict(patience=0, validation=0.2),
            "--patience (early stopping) needs --validation > 0 and a value >= 1.",
        ),
        (dict(solver="gram", layers=(12288, 1)), GRAM.format("it needs at least one hidden layer")),
        (
            dict(solver="gram", optimizer="adam"),
            GRAM.format("it runs gradient descent and momentum, not Adam"),
        ),
        (
            dict(solver="gram", validation=0.2),
            GRAM.format("validation reads W1, which it forms only at the end"),
        ),
        (dict(iterations=True), "--iterations must be a whole number, got True."),
        (dict(log_every=2.5), "--log-every must be a whole number, got 2.5."),
        (dict(layers=(12288, 2.5, 1)), "--layers must be a whole number, got 2.5."),
        (
            dict(learning_rate="fast"),
            "a training setting is not a number (could not convert string to float: 'fast').",
        ),
    ],
)
def test_a_setting_that_cannot_train_is_one_message(bad, message):
    with pytest.raises(GpucatError) as e:
        TrainConfig(**bad)
    assert str(e.value) == message


@pytest.mark.parametrize(
    "limit",
    [
        dict(seed=0),
        dict(seed=2**32 - 1),
        dict(layers=(5, 1)),
        dict(learning_rate=5e-324, epsilon=5e-324),
        dict(batch_size=1),
        dict(beta1=0, beta2=0),
        dict(keep_prob=1),
        dict(validation=0.2, patience=1),
        dict(lr_decay=0, l2=0),
        dict(solver="gram", optimizer="momentum"),
    ],
)
def test_the_settings_at_each_limit_train(limit):
    config = TrainConfig(**limit)
    assert {k: getattr(config, k) for k in limit} == {
        k: tuple(v) if k == "layers" else v for k, v in limit.items()
    }


def test_numbers_are_made_plain_python_ones():
    """NumPy scalars and whole floats become int and float (a NumPy float64 learning rate
    would turn a float32 run's arrays into float64)."""
    config = TrainConfig(
        learning_rate=np.float64(0.01), iterations=np.int64(7), log_every=5.0, layers=[9, 1.0]
    )
    assert type(config.learning_rate) is float and config.learning_rate == 0.01
    assert type(config.iterations) is int and config.iterations == 7
    assert type(config.log_every) is int and config.log_every == 5
    assert config.layers == (9, 1) and all(type(n) is int for n in config.layers)
