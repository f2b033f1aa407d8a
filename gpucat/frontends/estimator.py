"""CatClassifier: the trainer behind a scikit-learn estimator (scikit-learn optional).

    clf = CatClassifier(optimizer="adam", learning_rate=0.001, batch_size=64).fit(X, y)
    clf.predict(X_new); clf.predict_proba(X_new); clf.score(X_test, y_test)

X is (n_samples, n_features), or images (n_samples, 64, 64, 3), flattened in
height-width-channel order. Integer values are pixels and are scaled to [0, 1] (uint16 by
65535, every other integer type by 255); float features are used as they are, except that
float *images* must already lie in [0, 1]. y holds any two labels (numbers or strings);
``classes_`` keeps them sorted and ``predict`` returns them. The network's output is the
probability of ``pos_label_``: ``pos_label`` when given, else the label "cat" (any case),
else the larger label (1 of 0/1).

With scikit-learn installed the class is a real BaseEstimator / ClassifierMixin, validates
its input with scikit-learn's own helpers and passes ``check_estimator``; without it, the
same API stands alone with plain checks.
"""

from __future__ import annotations

import inspect
import warnings
from dataclasses import fields

import numpy as np

from gpucat.config import REFERENCE_LAYERS, TrainConfig
from gpucat.data.dataset import IMAGE_SHAPE, Dataset, divisor_for
from gpucat.errors import DEAD_NETWORK_ADVICE, DeadNetworkWarning, GpucatError

try:  # scikit-learn stays optional: without it the class stands alone with the same API
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data

    _BASES: tuple = (ClassifierMixin, BaseEstimator)
    HAVE_SKLEARN = True
except ImportError:
    _BASES = (object,)
    HAVE_SKLEARN = False

# The parameters: the network's hidden layers, every knob of TrainConfig but the layers and
# the seed (so a knob added there is a parameter here too), where to train, the seed, and
# which label means "cat".
_RECIPE = {f.name: f.default for f in fields(TrainConfig) if f.name not in ("layers", "seed")}
_PARAMS = {
    "hidden_layers": REFERENCE_LAYERS[1:-1],
    **_RECIPE,
    "device": "auto",
    "random_state": 1,
    "pos_label": None,
}


def _flatten_images(X):
    """(n, 64, 64, 3) images -> (n, 12288) rows (height-width-channel); other input as is.
    Float images must be scaled to [0, 1] already."""
    if isinstance(X, np.ndarray) and X.ndim == 4 and X.shape[1:] == IMAGE_SHAPE:
        if np.issubdtype(X.dtype, np.floating) and X.size and np.nanmax(X) > 1.0:
            raise ValueError(
                "float images must hold values in [0, 1]; pass 8-bit pixels as uint8 (they are "
                "divided by 255) or divide them yourself."
            )
        return X.reshape(X.shape[0], -1)
    return X


def positive_label(classes: np.ndarray, pos_label=None):
    """The label that means "cat": ``pos_label`` when given (one of the classes), else the
    label spelled "cat" (any case), else the larger of the two (1 of 0/1; the later of two
    strings, as scikit-learn's binary metrics take it)."""
    if pos_label is not None:
        if pos_label not in classes.tolist():
            raise ValueError(
                f"pos_label={pos_label!r} is not one of the labels {classes.tolist()}."
            )
        return pos_label
    named = [c for c in classes.tolist() if isinstance(c, str) and c.lower() == "cat"]
    return named[0] if named else classes[-1]


def _check_plain(X, y=None):
    """The validation scikit-learn would do, for when it is not installed."""
    X = np.asarray(X)
    if X.ndim != 2 or X.shape[0] < 1 or X.shape[1] < 1:
        raise ValueError(f"X must be a non-empty 2-D array (n_samples, n_features), got {X.shape}.")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == bool) or np.iscomplexobj(X):
        raise ValueError(f"X must hold real numbers, got dtype {X.dtype}.")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinity.")
    if y is None:
        return X
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y.ravel()
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ValueError(f"X has {X.shape[0]} samples but y has shape {y.shape}.")
    return X, y


class CatClassifier(*_BASES):
    """An L-layer binary classifier (ReLU hidden layers, sigmoid output) trained by gpucat;
    every parameter but ``hidden_layers``, ``device``, ``random_state`` (``--seed``; None:
    a fresh seed, kept in ``seed_``) and ``pos_label`` is a TrainConfig knob and a `gpucat
    train` flag of the same name."""

    def __init__(self, **params):
        unknown = sorted(set(params) - set(_PARAMS))
        if unknown:
            raise TypeError(
                f"CatClassifier got unknown parameters {unknown}; valid: {list(_PARAMS)}"
            )
        for name, default in _PARAMS.items():
            setattr(self, name, params.get(name, default))

    # scikit-learn reads the parameters from __init__'s signature: spell them out there
    __init__.__signature__ = inspect.Signature(
        [inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)]
        + [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
            for name, default in _PARAMS.items()
        ]
    )

    if not HAVE_SKLEARN:  # get_params / set_params as scikit-learn defines them

        def get_params(self, deep: bool = True) -> dict:
            return {n: getattr(self, n) for n in _PARAMS}

        def set_params(self, **params):
            valid = self.get_params()
            for k, v in params.items():
                if k not in valid:
                    raise ValueError(
                        f"invalid parameter {k!r} for CatClassifier; valid: {sorted(valid)}"
                    )
                setattr(self, k, v)
            return self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_class = False  # binary: one sigmoid output
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        # A short run at a small learning rate leaves gradient descent near its starting
        # point (the defaults, lr 0.0075 over 2500 iterations, are the image recipe's): on
        # scikit-learn's blobs, 50 iterations at 0.0075 reach 0.74 accuracy, 200 reach
        # 0.95. Below a step budget lr * iterations of 1 the classifier scores poorly.
        try:
            tags.classifier_tags.poor_score = float(self.learning_rate) * int(self.iterations) < 1
        except (TypeError, ValueError):
            pass
        return tags

    # --- input ---------------------------------------------------------------------------

    def _validate(self, X, y=None, reset: bool = True):
        X = _flatten_images(X)
        if HAVE_SKLEARN:
            if y is None and reset:
                return validate_data(self, X, y=None, reset=reset)  # "requires y" error
            kw = dict(dtype="numeric", accept_sparse=False, ensure_min_samples=1)
            if y is None:
                return validate_data(self, X, reset=reset, **kw)
            return validate_data(self, X, y, reset=reset, **kw)
        if y is None and reset:
            raise ValueError("CatClassifier requires y to be passed, but the target y is None.")
        out = _check_plain(X, y)
        X = out[0] if y is not None else out
        if reset:
            self.n_features_in_ = X.shape[1]
        elif X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, but CatClassifier is expecting "
                f"{self.n_features_in_} features as input."
            )
        return out

    def _labels(self, y) -> np.ndarray:
        """y as 0/1 floats, 1 for the positive label; ``classes_`` = the two labels, sorted."""
        if HAVE_SKLEARN:
            check_classification_targets(y)
            kind = type_of_target(y)
            if kind not in ("binary", "multiclass"):
                raise ValueError(f"CatClassifier needs binary class labels; y is {kind}.")
        classes = np.unique(y)
        if classes.size > 2:
            raise ValueError(
                f"Only binary classification is supported: y holds {classes.size} classes "
                f"({classes[:5].tolist()}); CatClassifier has one sigmoid output."
            )
        if classes.size < 2:
            raise ValueError(
                f"CatClassifier needs two classes to learn from; y holds only one class "
                f"({classes.tolist()})."
            )
        self.classes_ = classes
        self.pos_label_ = positive_label(classes, self.pos_label)
        return (y == self.pos_label_).astype(np.float64)

    def _seed(self) -> int:
        """``random_state``: an int is the seed (`gpucat train --seed`); None draws a fresh
        one, as scikit-learn does, and a RandomState draws from itself; ``seed_`` keeps it."""
        r = self.random_state
        if r is None or isinstance(r, np.random.RandomState):
            state = np.random if r is None else r  # None: NumPy's global generator
            return int(state.randint(0, 2**32 - 1, dtype=np.int64))
        return r

    def _config(self) -> TrainConfig:
        recipe = {k: getattr(self, k) for k in _RECIPE}
        layers = (self.n_features_in_, *tuple(self.hidden_layers), 1)
        return TrainConfig(layers=layers, seed=self._seed(), **recipe)

    def _device(self):
        from gpucat.backends import get_device

        return get_device(self.device)

    # --- the estimator API ---------------------------------------------------------------

    def fit(self, X, y):
        """Train from the seed's initial weights (``random_state``) on (X, y)."""
        from gpucat.nn.inference import dead_layers
        from gpucat.nn.network import params_to_host
        from gpucat.training.loop import fit

        X, y = self._validate(X, y, reset=True)
        Y = self._labels(y)
        try:
            config = self._config()
            chosen = self._device()
            data = Dataset(X, Y.reshape(1, -1), "CatClassifier.fit", divisor=divisor_for(X.dtype))
            result = fit(chosen, config, data)
            dead = dead_layers(chosen, result.params, result.train, config.dtype)
        except GpucatError as e:
            raise ValueError(str(e)) from None
        self.dead_layers_ = dead  # hidden layers inactive for every training example
        if dead:
            warnings.warn(
                f"every unit of hidden layer {dead[0]} is inactive for every training example, "
                f"so this model gives all inputs the same probability; {DEAD_NETWORK_ADVICE}.",
                DeadNetworkWarning,
                stacklevel=2,
            )
        self.seed_ = config.seed  # random_state=seed_ repeats this fit
        self.params_ = params_to_host(chosen, result.params)
        self.device_ = chosen.label  # where it trained: device="auto" picks a usable GPU
        self.costs_ = result.costs
        self.validation_costs_ = result.val_costs
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(n_samples, 2): the probabilities of ``classes_[0]`` and ``classes_[1]``, computed
        in float64 from the trained weights (as `gpucat evaluate` does by default); the
        network's output is the probability of ``pos_label_``."""
        from gpucat.nn.inference import probabilities
        from gpucat.nn.network import params_to_device

        if HAVE_SKLEARN:
            check_is_fitted(self)
        elif not hasattr(self, "params_"):
            raise GpucatError("this CatClassifier is not fitted yet; call fit(X, y) first.")
        X = self._validate(X, reset=False)
        chosen = self._device()
        data = Dataset(X, None, "CatClassifier.predict", divisor=divisor_for(X.dtype))
        p = probabilities(
            chosen, params_to_device(chosen, self.params_, "float64"), data, "float64"
        )
        pos = int(np.flatnonzero(self.classes_ == self.pos_label_)[0])
        return np.column_stack([1.0 - p, p] if pos == 1 else [p, 1.0 - p])

    def predict(self, X) -> np.ndarray:
        """The label (from ``classes_``) whose probability is above one half."""
        proba = self.predict_proba(X)  # checks first that the model is fitted
        pos = self.classes_ == self.pos_label_
        cat = proba[:, np.flatnonzero(pos)[0]] > 0.5  # as `gpucat evaluate` thresholds
        return np.where(cat, self.classes_[pos][0], self.classes_[~pos][0])

    if not HAVE_SKLEARN:

        def score(self, X, y, sample_weight=None) -> float:
            """Mean accuracy."""
            hits = (self.predict(X) == np.asarray(y).reshape(-1)).astype(np.float64)
            return float(np.average(hits, weights=sample_weight))
