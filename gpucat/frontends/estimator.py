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

The class is a scikit-learn BaseEstimator / ClassifierMixin (scikit-learn is its
requirement: ``pip install 'gpucat[sklearn]'``), validates its input with scikit-learn's
own helpers and passes ``check_estimator``. It trains as `gpucat train` and
``gpucat.train_model`` do (frontends/report.py): ``model_`` is the same Model they save.
"""

from __future__ import annotations

import warnings
from dataclasses import fields

import numpy as np

try:
    from sklearn.base import BaseEstimator, ClassifierMixin
    from sklearn.utils.multiclass import check_classification_targets, type_of_target
    from sklearn.utils.validation import check_is_fitted, validate_data
except ImportError as e:
    raise ImportError(
        f"CatClassifier needs scikit-learn ({e}): pip install 'gpucat[sklearn]'"
    ) from None

from gpucat.config import TrainConfig
from gpucat.data.dataset import IMAGE_SHAPE, Dataset
from gpucat.errors import DEAD_NETWORK_ADVICE, DeadNetworkWarning, GpucatError

# every knob of TrainConfig but the layers and the seed is a parameter of the same name
RECIPE = tuple(f.name for f in fields(TrainConfig) if f.name not in ("layers", "seed"))


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


class CatClassifier(ClassifierMixin, BaseEstimator):
    """An L-layer binary classifier (ReLU hidden layers, sigmoid output) trained by gpucat;
    every parameter but ``hidden_layers``, ``device``, ``random_state`` (``--seed``; None:
    a fresh seed, kept in ``seed_``) and ``pos_label`` is a TrainConfig knob and a `gpucat
    train` flag of the same name, with the same default."""

    def __init__(
        self,
        hidden_layers=(20, 7, 5),
        *,
        learning_rate=0.0075,
        iterations=2500,
        dtype="float64",
        log_every=100,
        solver="auto",
        batch_size=None,
        optimizer="gd",
        beta1=0.9,
        beta2=0.999,
        epsilon=1e-8,
        lr_decay=0.0,
        l2=0.0,
        keep_prob=1.0,
        flip=False,
        validation=0.0,
        validate_every=100,
        patience=None,
        full_cost=False,
        device="auto",
        random_state=1,
        pos_label=None,
    ):
        self.hidden_layers = hidden_layers
        self.learning_rate = learning_rate
        self.iterations = iterations
        self.dtype = dtype
        self.log_every = log_every
        self.solver = solver
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.lr_decay = lr_decay
        self.l2 = l2
        self.keep_prob = keep_prob
        self.flip = flip
        self.validation = validation
        self.validate_every = validate_every
        self.patience = patience
        self.full_cost = full_cost
        self.device = device
        self.random_state = random_state
        self.pos_label = pos_label

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

    def _validate(self, X, y=None, *, reset: bool):
        """Checked (X, y) for fit (a y of None is scikit-learn's "requires y" error), checked
        X for prediction: dense numbers, at least one sample (validate_data's defaults)."""
        X = _flatten_images(X)
        if reset:
            return validate_data(self, X, y, reset=True)
        return validate_data(self, X, reset=False)

    def _labels(self, y) -> np.ndarray:
        """y as 0/1 floats, 1 for the positive label; ``classes_`` = the two labels, sorted."""
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
        recipe = {k: getattr(self, k) for k in RECIPE}
        layers = (self.n_features_in_, *tuple(self.hidden_layers), 1)
        return TrainConfig(layers=layers, seed=self._seed(), **recipe)

    def _device(self):
        from gpucat.backends import get_device

        return get_device(self.device)

    # --- the estimator API ---------------------------------------------------------------

    def fit(self, X, y):
        """Train from the seed's initial weights (``random_state``) on (X, y), as `gpucat
        train` does: ``model_`` is the Model it would save."""
        from gpucat.frontends.report import run_recipe, to_model

        X, y = self._validate(X, y, reset=True)
        Y = self._labels(y)
        try:
            config = self._config()
            chosen = self._device()
            data = Dataset.from_arrays(X, Y, "CatClassifier.fit")
            result, summary = run_recipe(chosen, config, data)
        except GpucatError as e:
            raise ValueError(str(e)) from None
        dead = summary["dead_layers"]  # hidden layers inactive for every training example
        if dead:
            warnings.warn(
                f"every unit of hidden layer {dead[0]} is inactive for every training example, "
                f"so this model gives all inputs the same probability; {DEAD_NETWORK_ADVICE}.",
                DeadNetworkWarning,
                stacklevel=2,
            )
        self.model_ = to_model(chosen, config, result, summary)
        self.dead_layers_ = dead
        self.seed_ = config.seed  # random_state=seed_ repeats this fit
        self.params_ = self.model_.params
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

        check_is_fitted(self)
        X = self._validate(X, reset=False)
        chosen = self._device()
        data = Dataset.from_arrays(X, None, "CatClassifier.predict")
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
