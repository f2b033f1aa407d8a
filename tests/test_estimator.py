"""CatClassifier: a scikit-learn estimator that passes scikit-learn's own checks."""

from __future__ import annotations

import os
import pickle
import re
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


@pytest.fixture(scope="module")
def dead_fit(course_data):
    """The README's Adam recipe with the default seed, which ends with a dead hidden layer:
    (the fitted estimator, the warnings its fit gave, the training rows and labels)."""
    import warnings

    train, _ = course_data
    X, y = train.rows, train.Y.ravel().astype(int)
    dead = CatClassifier(optimizer="adam", learning_rate=0.0005, batch_size=64, iterations=800)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dead.fit(X, y)
    return dead, caught, X, y


def test_a_dead_network_is_a_warning_and_an_attribute(dead_fit):
    """Every probability the same: fit says so (DeadNetworkWarning, as scikit-learn warns
    with ConvergenceWarning), naming the layer it records in dead_layers_; the reference
    recipe does not."""
    import warnings

    from gpucat.errors import DEAD_NETWORK_ADVICE, DeadNetworkWarning

    dead, caught, X, y = dead_fit
    assert dead.dead_layers_ and np.ptp(dead.predict_proba(X)[:, 1]) == 0
    assert [(w.category, str(w.message)) for w in caught] == [
        (
            DeadNetworkWarning,
            f"every unit of hidden layer {dead.dead_layers_[0]} is inactive for every training "
            f"example, so this model gives all inputs the same probability; "
            f"{DEAD_NETWORK_ADVICE}.",
        )
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeadNetworkWarning)
        alive = CatClassifier(iterations=100, device="cpu").fit(X, y)
    assert alive.dead_layers_ == [] and np.ptp(alive.predict_proba(X)[:, 1]) > 0


def test_the_dead_network_warning_points_at_the_callers_fit_line(dead_fit):
    _, caught, _, _ = dead_fit
    assert [w.filename for w in caught] == [__file__]


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


def small(n=40, seed=3):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 5))
    return X, (X[:, 0] > 0).astype(int)


def test_pos_label_names_what_the_network_outputs():
    """pos_label=0: the network learns P(0), the columns stay in classes_ order, each row sums
    to one; a label that is not one of y's is refused."""
    X, y = small()
    kw = dict(hidden_layers=(4,), iterations=60, learning_rate=0.1, device="cpu")
    ones = CatClassifier(**kw).fit(X, y)
    zeros = CatClassifier(**kw, pos_label=0).fit(X, 1 - y)  # the same 0/1 targets
    assert zeros.pos_label_ == 0 and ones.pos_label_ == 1
    p0, p1 = zeros.predict_proba(X), ones.predict_proba(X)
    np.testing.assert_array_equal(p0[:, 0], p1[:, 1])
    np.testing.assert_array_equal(p0.sum(axis=1), np.ones(len(X)))
    np.testing.assert_array_equal(zeros.predict(X), 1 - ones.predict(X))
    with pytest.raises(ValueError, match=re.escape("pos_label=5 is not one of the labels [0, 1].")):
        CatClassifier(**kw, pos_label=5).fit(X, y)


def test_a_probability_of_exactly_one_half_is_not_a_cat():
    X, y = small()
    clf = CatClassifier(hidden_layers=(4,), iterations=5, device="cpu").fit(
        X, np.where(y, "cat", "dog")
    )
    clf.params_ = [(np.zeros_like(W), np.zeros_like(b)) for W, b in clf.params_]  # sigmoid(0)
    np.testing.assert_array_equal(clf.predict_proba(X), np.full((len(X), 2), 0.5))
    assert set(clf.predict(X)) == {"dog"}  # above one half is a cat, as `gpucat evaluate` says


def test_probabilities_are_computed_in_float64_whatever_the_training_dtype():
    X, y = small()
    clf = CatClassifier(hidden_layers=(4,), iterations=30, learning_rate=0.1, dtype="float32",
                        device="cpu").fit(X, y)  # fmt: skip
    (W1, b1), (W2, b2) = [(W.astype(np.float64), b.astype(np.float64)) for W, b in clf.params_]
    z = W2 @ np.maximum(W1 @ X.T + b1, 0) + b2
    expected = 1 / (1 + np.exp(-z.ravel()))
    assert rel_err(clf.predict_proba(X)[:, 1], expected) <= 1e-12


def test_random_state_seeds_as_scikit_learn_does():
    X, y = small()
    kw = dict(hidden_layers=(4,), iterations=2, device="cpu")
    seven = CatClassifier(**kw, random_state=7).fit(X, y)
    assert seven.seed_ == 7 and [i for i, _ in seven.costs_] == [0, 1]  # the run's cost log
    a = CatClassifier(**kw, random_state=np.random.RandomState(3)).fit(X, y).seed_
    b = CatClassifier(**kw, random_state=np.random.RandomState(3)).fit(X, y).seed_
    assert a == b and isinstance(a, int)
    kept = np.random.get_state()  # noqa: NPY002
    try:  # None: a fresh seed from NumPy's global generator, as scikit-learn draws one
        np.random.seed(11)  # noqa: NPY002
        c = CatClassifier(**kw, random_state=None).fit(X, y).seed_
        np.random.seed(11)  # noqa: NPY002
        assert CatClassifier(**kw, random_state=None).fit(X, y).seed_ == c
    finally:
        np.random.set_state(kept)  # noqa: NPY002
    draws = [CatClassifier(random_state=np.random.RandomState(k))._seed() for k in range(20)]
    assert len(set(draws)) == 20 and all(0 <= d < 2**32 for d in draws)


def test_scikit_learn_tags_say_binary_dense_no_nan_and_when_a_run_is_too_short():
    tags = CatClassifier().__sklearn_tags__()
    assert tags.classifier_tags.multi_class is False
    assert tags.input_tags.sparse is False and tags.input_tags.allow_nan is False
    assert tags.classifier_tags.poor_score is False  # the recipe: 0.0075 x 2500
    for lr, n, poor in ((0.01, 50, True), (0.01, 100, False), (0.005, 100, True)):
        tags = CatClassifier(learning_rate=lr, iterations=n).__sklearn_tags__()
        assert tags.classifier_tags.poor_score is poor


def test_images_and_lists_are_taken_and_float_images_must_be_scaled():
    rng = np.random.default_rng(0)
    X, y = small()
    kw = dict(hidden_layers=(4,), iterations=2, device="cpu")
    assert CatClassifier(**kw).fit(X.tolist(), y.tolist()).n_features_in_ == 5
    images = rng.random((4, 64, 64, 3)).astype(np.float32)
    images[0, 0, 0, 0] = 1.0  # 1.0 is the top of [0, 1]
    assert CatClassifier(**kw).fit(images, [0, 1, 0, 1]).n_features_in_ == 12288
    images[1, 2, 3, 1] = 1.5
    with pytest.raises(ValueError) as e:
        CatClassifier(**kw).fit(images, [0, 1, 0, 1])
    assert str(e.value) == (
        "float images must hold values in [0, 1]; pass 8-bit pixels as uint8 (they are "
        "divided by 255) or divide them yourself."
    )


def test_fit_needs_labels_and_many_classes_are_listed_five_at_most():
    X, _ = small(14)
    with pytest.raises(ValueError, match="requires y to be passed"):
        CatClassifier(device="cpu").fit(X, None)
    with pytest.raises(ValueError, match=re.escape("holds 7 classes ([0, 1, 2, 3, 4]);")):
        CatClassifier(device="cpu").fit(X, np.arange(14) % 7)


def test_sparse_input_is_refused_and_one_sample_is_enough_to_predict():
    from scipy import sparse

    X, y = small()
    clf = CatClassifier(hidden_layers=(4,), iterations=2, device="cpu").fit(X, y)
    assert clf.predict(X[:1]).shape == (1,)
    with pytest.raises(TypeError, match="Sparse data was passed"):
        clf.predict(sparse.csr_matrix(X))
    with pytest.raises(TypeError, match="Sparse data was passed"):
        CatClassifier(iterations=2, device="cpu").fit(sparse.csr_matrix(X), y)
    with pytest.raises(ValueError, match="could not convert|dtype='numeric'|numeric"):
        clf.predict(np.full((2, 5), "a"))


def test_every_parameter_given_is_the_parameter_kept():
    """scikit-learn reads parameters back by name (get_params, clone): each one given, not
    its default, is what the estimator holds."""
    import inspect

    given = {}
    for name, p in inspect.signature(CatClassifier).parameters.items():
        d = p.default
        given[name] = (
            (7,) if name == "hidden_layers" else not d if isinstance(d, bool)
            else d * 2 + 1 if isinstance(d, (int, float)) else f"{d}-given"
        )  # fmt: skip
    assert CatClassifier(**given).get_params() == given


def test_validation_costs_are_kept():
    X, y = small(40)
    clf = CatClassifier(hidden_layers=(4,), iterations=4, validation=0.25, validate_every=2,
                        device="cpu").fit(X, y)  # fmt: skip
    assert [i for i, _ in clf.validation_costs_] == [0, 2]  # every validate_every iterations
