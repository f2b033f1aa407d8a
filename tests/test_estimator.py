"""CatClassifier: the scikit-learn-style API, with and without scikit-learn."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from conftest import RTOL, rel_err

from gpucat import CatClassifier
from gpucat.errors import GpucatError
from gpucat.train import TrainConfig, fit


def test_fit_predict_score_reproduce_the_reference(course_data):
    train, test = course_data
    clf = CatClassifier(device="cpu").fit(train.images, train.Y.ravel())
    assert clf.score(test.images, test.Y.ravel()) == pytest.approx(0.8)
    assert clf.score(train.images, train.Y.ravel()) == pytest.approx(206 / 209)
    proba = clf.predict_proba(test.images)
    assert proba.shape == (50, 2) and np.allclose(proba.sum(axis=1), 1.0)
    np.testing.assert_array_equal(clf.predict(test.images), (proba[:, 1] > 0.5).astype(int))
    # flat (n, 12288) uint8 input and float input in [0, 1] give the same answers
    flat = test.images.reshape(50, -1)
    np.testing.assert_array_equal(clf.predict_proba(flat), proba)
    np.testing.assert_allclose(clf.predict_proba(flat / 255.0), proba, rtol=1e-12)


def test_estimator_equals_the_trainer(backend, course_data):
    train, _ = course_data
    clf = CatClassifier(
        hidden_layers=(6, 4),
        iterations=20,
        optimizer="adam",
        learning_rate=0.001,
        batch_size=64,
        device=backend.flag,
    )
    clf.fit(train.images, train.Y.ravel())
    ref = fit(
        __import__("gpucat.backend").backend.get_backend("cpu"),
        TrainConfig(
            layers=(12288, 6, 4, 1),
            iterations=20,
            optimizer="adam",
            learning_rate=0.001,
            batch_size=64,
            dtype="float64",
        ),
        train.X,
        train.Y,
    )
    for (W, _), layer in zip(clf.params_, ref.params):
        assert rel_err(W, layer.W) <= RTOL["float64"]


def test_get_set_params_and_errors():
    clf = CatClassifier()
    p = clf.get_params()
    assert p["learning_rate"] == 0.0075 and p["hidden_layers"] == (20, 7, 5)
    assert clf.set_params(l2=0.5, keep_prob=0.8) is clf and clf.l2 == 0.5
    with pytest.raises(ValueError, match="invalid parameter"):
        clf.set_params(nonsense=1)
    with pytest.raises(GpucatError, match="not fitted"):
        clf.predict(np.zeros((1, 12288), np.uint8))
    with pytest.raises(GpucatError, match="n_samples"):
        CatClassifier().fit(np.zeros((3, 10)), [0, 1, 0])


def test_pipeline_and_cross_val_score(course_data):
    import sklearn
    from sklearn.base import clone
    from sklearn.model_selection import cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    train, _ = course_data
    assert sklearn.__version__
    clf = CatClassifier(iterations=200, device="cpu")
    assert clone(clf).get_params() == clf.get_params()
    pipe = make_pipeline(FunctionTransformer(lambda X: X.reshape(len(X), -1)), clf)
    scores = cross_val_score(pipe, train.images, train.Y.ravel(), cv=3)
    assert scores.shape == (3,) and ((0 <= scores) & (scores <= 1)).all()
    # the scores are really those of separately fitted folds: recompute one by hand
    from sklearn.model_selection import StratifiedKFold

    tr, te = next(iter(StratifiedKFold(3).split(train.images, train.Y.ravel())))
    one = (
        clone(clf)
        .fit(train.images[tr], train.Y.ravel()[tr])
        .score(train.images[te], train.Y.ravel()[te])
    )
    assert scores[0] == pytest.approx(one)


def test_works_without_scikit_learn():
    code = (
        "import sys; sys.modules['sklearn'] = None\n"
        "import numpy as np; from gpucat import CatClassifier\n"
        "rng = np.random.default_rng(0); X = rng.integers(0, 256, (12, 12288), dtype=np.uint8)\n"
        "y = np.array([0, 1] * 6)\n"
        "c = CatClassifier(hidden_layers=(3,), iterations=5, device='cpu').fit(X, y)\n"
        "assert CatClassifier.__mro__[1] is object\n"
        "print(c.predict(X).shape, 0 <= c.score(X, y) <= 1)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(12,) True"
