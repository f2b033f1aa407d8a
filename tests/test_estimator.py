"""CatClassifier: a scikit-learn estimator that passes scikit-learn's own checks."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from gpucat import CatClassifier

import reference_impl as ref
from conftest import data_dir, rel_err, same_device_in

CHECK = """
import json, sys
from sklearn.utils.estimator_checks import check_estimator
from gpucat import CatClassifier
results = check_estimator(CatClassifier(iterations=50, device=sys.argv[1]), on_fail=None)
print(json.dumps([[r["check_name"], r["status"], str(r["exception"])[:300]] for r in results]))
"""


def test_passes_scikit_learns_check_estimator(device):
    """scikit-learn's whole estimator suite on each device: nothing fails, nothing skips.
    SCIPY_ARRAY_API=1 lets its array API check run; pandas lets the DataFrame check run."""
    env = {**os.environ, "SCIPY_ARRAY_API": "1"}
    out = subprocess.run(
        [sys.executable, "-c", same_device_in(device) + CHECK, device.flag],
        capture_output=True,
        text=True,
        env=env,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    results = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(results) >= 50
    bad = [r for r in results if r[1] != "passed"]
    assert not bad, bad


def test_fit_predict_score_reproduce_the_reference(course_data):
    """The defaults are `gpucat train`'s (float64, the reference recipe): 40/50, 206/209."""
    train, test = course_data
    clf = CatClassifier(device="cpu").fit(train.images, train.Y.ravel())
    assert clf.dtype == "float64" and clf.n_features_in_ == 12288
    assert clf.score(test.images, test.Y.ravel()) == pytest.approx(0.8)
    assert clf.score(train.images, train.Y.ravel()) == pytest.approx(206 / 209)
    proba = clf.predict_proba(test.images)
    assert proba.shape == (50, 2) and np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(test.images), (proba[:, 1] > 0.5).astype(int))
    # flat uint8, other integer pixel types and floats in [0, 1] give the same answers
    flat = test.images.reshape(50, -1)
    np.testing.assert_array_equal(clf.predict_proba(flat), proba)
    np.testing.assert_array_equal(clf.predict_proba(flat.astype(np.int64)), proba)
    np.testing.assert_allclose(clf.predict_proba(flat.astype(np.uint16) * 257), proba, rtol=1e-12)
    np.testing.assert_allclose(clf.predict_proba(flat / 255.0), proba, rtol=1e-12)
    with pytest.raises(ValueError, match=r"float images must hold values in \[0, 1\]"):
        clf.predict_proba(test.images.astype(np.float64))


def test_estimator_equals_the_independent_reference(device, course_data):
    """CatClassifier with Adam in mini-batches against the course-style float64
    implementation (tests/reference_impl.py), which shares no code with gpucat."""
    train, _ = course_data
    options = dict(iterations=20, optimizer="adam", learning_rate=0.001, batch_size=64)
    clf = CatClassifier(hidden_layers=(6, 4), dtype="float64", device=device.flag, **options)
    clf.fit(train.images, train.Y.ravel())
    assert clf.device_ == device.label
    expected = ref.train_options(train.X, train.Y, [12288, 6, 4, 1], **options)["params"]
    for l, (W, b) in enumerate(clf.params_, start=1):
        assert rel_err(W, expected[f"W{l}"]) <= 1e-10 and rel_err(b, expected[f"b{l}"]) <= 1e-10


def test_any_two_labels_any_features_and_repeatable_fits():
    from sklearn.base import clone

    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 5))
    y = np.where(X[:, 0] + 0.5 * X[:, 1] > 0, "tabby", "dog")
    clf = CatClassifier(hidden_layers=(8,), iterations=300, learning_rate=0.1, device="cpu")
    clf.fit(X, y)
    assert clf.n_features_in_ == 5 and clf.classes_.tolist() == ["dog", "tabby"]
    assert set(clf.predict(X)) <= {"dog", "tabby"} and clf.score(X, y) > 0.9
    proba = clf.predict_proba(X)
    np.testing.assert_array_equal(clf.predict(X), clf.classes_[proba.argmax(axis=1)])
    # pickling and clone round-trip; the same random_state fits the same model
    again = pickle.loads(pickle.dumps(clf))
    np.testing.assert_array_equal(again.predict_proba(X), proba)
    refit = clone(clf).fit(X, y)
    np.testing.assert_array_equal(refit.predict_proba(X), proba)
    other = clone(clf).set_params(random_state=2).fit(X, y)
    assert not np.array_equal(other.params_[0][0], clf.params_[0][0])
    with pytest.raises(ValueError, match="X has 4 features, but CatClassifier is expecting 5"):
        clf.predict(X[:, :4])


@pytest.mark.parametrize(
    "X, y, message",
    [
        (np.ones((4, 3)), [0, 1, 2, 1], "Only binary classification is supported"),
        (np.ones((4, 3)), [1, 1, 1, 1], "one class"),
        (np.ones((4, 3)), [0.1, 0.7, 0.3, 0.2], "Unknown label type"),
        (np.ones((4, 3)), [0, 1, 0], "inconsistent numbers of samples"),
        (np.full((4, 3), np.nan), [0, 1, 0, 1], "NaN"),
        (np.ones((0, 3)), [], "0 sample"),
        (np.ones((4, 3)) + 1j, [0, 1, 0, 1], "Complex data not supported"),
    ],
)
def test_bad_input_is_a_value_error(X, y, message):
    with pytest.raises(ValueError, match=message):
        CatClassifier(iterations=2, device="cpu").fit(X, y)


def test_unfitted_and_bad_settings():
    from sklearn.exceptions import NotFittedError

    with pytest.raises(NotFittedError):
        CatClassifier().predict(np.zeros((1, 12288), np.uint8))
    X, y = np.random.default_rng(1).random((6, 3)), [0, 1] * 3
    with pytest.raises(ValueError, match="--learning-rate must be a positive number"):
        CatClassifier(learning_rate=-1.0, device="cpu").fit(X, y)
    with pytest.raises(ValueError, match="--seed"):
        CatClassifier(random_state=-5, device="cpu").fit(X, y)


def test_pipeline_cross_val_score_and_a_scikit_learn_data_set(course_data):
    from sklearn.base import clone
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, StandardScaler

    train, _ = course_data
    clf = CatClassifier(iterations=200, device="cpu")
    assert clone(clf).get_params() == clf.get_params()
    pipe = make_pipeline(FunctionTransformer(lambda X: X.reshape(len(X), -1)), clf)
    scores = cross_val_score(pipe, train.images, train.Y.ravel(), cv=3)
    assert scores.shape == (3,) and ((0 <= scores) & (scores <= 1)).all()
    # the scores are really those of separately fitted folds: recompute one by hand
    tr, te = next(iter(StratifiedKFold(3).split(train.images, train.Y.ravel())))
    one = (
        clone(clf)
        .fit(train.images[tr], train.Y.ravel()[tr])
        .score(train.images[te], train.Y.ravel()[te])
    )
    assert scores[0] == pytest.approx(one)
    # the README's example: a scikit-learn data set, scaled features, 5-fold accuracy
    X, y = load_breast_cancer(return_X_y=True)
    model = make_pipeline(
        StandardScaler(), CatClassifier(learning_rate=0.05, iterations=500, device="cpu")
    )
    assert cross_val_score(model, X, y, cv=5).mean() > 0.9


def test_without_scikit_learn_it_says_what_to_install():
    code = "import sys; sys.modules['sklearn'] = None\nfrom gpucat import CatClassifier\n"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    last = out.stderr.strip().splitlines()[-1]
    assert out.returncode == 1 and last.startswith("ImportError: CatClassifier needs scikit-learn")
    assert last.endswith("): pip install 'gpucat[sklearn]'")


def test_its_parameters_are_the_recipes_knobs_with_their_defaults():
    """Spelled out in __init__ as scikit-learn asks, and no other: each TrainConfig knob but
    the layers and the seed, with TrainConfig's default (so the two cannot drift apart)."""
    from dataclasses import fields

    from gpucat.config import REFERENCE_LAYERS, TrainConfig

    params = CatClassifier().get_params()
    knobs = {f.name: f.default for f in fields(TrainConfig) if f.name not in ("layers", "seed")}
    assert params == {
        **knobs,
        "hidden_layers": REFERENCE_LAYERS[1:-1],
        "device": "auto",
        "random_state": TrainConfig().seed,
        "pos_label": None,
    }


def test_every_front_end_leaves_the_same_model(tmp_path, course_data, capsys):
    """`gpucat train --out`, gpucat.train_model and CatClassifier train the same run from the
    same data and leave the same model: parameters and metadata alike (the device and the
    time taken apart)."""
    import gpucat
    from gpucat.cli import main

    train, _ = course_data
    recipe = dict(layers=(12288, 3, 1), iterations=20, log_every=10, learning_rate=0.01)
    argv = ["train", "--device", "cpu", "--layers", "12288,3,1", "--iterations", "20"]
    argv += ["--log-every", "10", "--learning-rate", "0.01", "--out", str(tmp_path / "m.st")]
    assert main([*argv, "--train", str(data_dir() / "train_catvnoncat.h5"), "--json"]) == 0
    capsys.readouterr()
    saved = gpucat.load_model(tmp_path / "m.st")
    api = gpucat.train_model(train.images, train.Y.ravel(), device="cpu", **recipe)
    clf = CatClassifier(
        hidden_layers=(3,), iterations=20, log_every=10, learning_rate=0.01, device="cpu"
    ).fit(train.images, train.Y.ravel().astype(int))
    for model in (api, clf.model_):
        assert model.metadata["recipe"] == saved.metadata["recipe"]
        timed = ("seconds", "ms_per_iteration")
        mine = {k: v for k, v in model.metadata["result"].items() if k not in timed}
        assert mine == {k: v for k, v in saved.metadata["result"].items() if k not in timed}
        for (W, b), (W0, b0) in zip(model.params, saved.params):
            np.testing.assert_array_equal(W, W0)
            np.testing.assert_array_equal(b, b0)


def test_a_dead_network_is_a_warning_and_an_attribute(course_data):
    """The README's Adam recipe with the default seed ends with a dead hidden layer: every
    probability the same. fit says so (DeadNetworkWarning, as scikit-learn warns with
    ConvergenceWarning) and records it in dead_layers_; the reference recipe does not."""
    from gpucat.errors import DeadNetworkWarning

    train, _ = course_data
    X, y = train.rows, train.Y.ravel().astype(int)
    dead = CatClassifier(optimizer="adam", learning_rate=0.0005, batch_size=64, iterations=800)
    with pytest.warns(
        DeadNetworkWarning, match="hidden layer . is inactive for every training example"
    ):
        dead.fit(X, y)
    assert dead.dead_layers_ and np.ptp(dead.predict_proba(X)[:, 1]) == 0
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error", DeadNetworkWarning)
        alive = CatClassifier(iterations=100, device="cpu").fit(X, y)
    assert alive.dead_layers_ == [] and np.ptp(alive.predict_proba(X)[:, 1]) > 0


@pytest.mark.parametrize("cat, other", [("Cat", "Dog"), ("CAT", "dog"), ("cat", "zebra")])
def test_a_label_spelled_cat_in_any_case_is_the_positive_class(course_data, cat, other):
    """ "Cat" means cat whether it sorts first or last: the network's output is its
    probability, and predictions give back the caller's own labels."""
    train, _ = course_data
    X = train.rows[:60]
    y01 = train.Y.ravel()[:60].astype(int)
    y = np.where(y01 == 1, cat, other)
    clf = CatClassifier(iterations=40).fit(X, y)
    assert clf.pos_label_ == cat
    numeric = CatClassifier(iterations=40).fit(X, y01)
    p_cat = clf.predict_proba(X)[:, list(clf.classes_).index(cat)]
    np.testing.assert_allclose(p_cat, numeric.predict_proba(X)[:, 1], rtol=1e-12)
    assert set(clf.predict(X)) <= {cat, other}
