"""CatClassifier: the trainer behind a scikit-learn-style estimator (scikit-learn optional).

    clf = CatClassifier(optimizer="adam", learning_rate=0.001, batch_size=64).fit(X, y)
    clf.predict(X_new); clf.predict_proba(X_new); clf.score(X_test, y_test)

X is (n_samples, 12288) or (n_samples, 64, 64, 3): uint8 pixels are divided by 255, floats
are taken as already scaled to [0, 1]. With scikit-learn installed the class is a real
BaseEstimator / ClassifierMixin, so Pipeline, clone and cross_val_score work with it.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np

from gpucat.config import TrainConfig
from gpucat.data import N_FEATURES
from gpucat.errors import GpucatError

try:  # scikit-learn stays optional: without it the class stands alone with the same API
    from sklearn.base import BaseEstimator, ClassifierMixin

    _BASES: tuple = (ClassifierMixin, BaseEstimator)
except ImportError:
    _BASES = (object,)

_RECIPE = [f.name for f in fields(TrainConfig) if f.name not in ("seed", "layers")]


def as_columns(X) -> np.ndarray:
    """(n, 12288) or (n, 64, 64, 3) samples-first input -> float64 (12288, n) columns in [0, 1]."""
    X = np.asarray(X)
    if X.ndim == 4 and X.shape[1:] == (64, 64, 3):
        X = X.reshape(X.shape[0], -1)
    if X.ndim != 2 or X.shape[1] != N_FEATURES:
        raise GpucatError(
            f"X must have shape (n_samples, {N_FEATURES}) or (n_samples, 64, 64, 3); got {X.shape}."
        )
    scaled = X.astype(np.float64) / 255.0 if X.dtype == np.uint8 else X.astype(np.float64)
    if not np.isfinite(scaled).all():
        raise GpucatError("X contains NaN or infinity.")
    return np.ascontiguousarray(scaled.T)


class CatClassifier(*_BASES):
    """An L-layer cat / non-cat classifier; every parameter maps to a `gpucat train` flag."""

    def __init__(
        self,
        hidden_layers=(20, 7, 5),
        learning_rate=0.0075,
        iterations=2500,
        optimizer="gd",
        batch_size=None,
        beta1=0.9,
        beta2=0.999,
        epsilon=1e-8,
        lr_decay=0.0,
        l2=0.0,
        keep_prob=1.0,
        flip=False,
        validation=0.0,
        patience=None,
        log_every=100,
        solver="auto",
        dtype="float64",
        device="auto",
        random_state=1,
    ):
        self.hidden_layers = hidden_layers
        self.learning_rate = learning_rate
        self.iterations = iterations
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.beta1 = beta1
        self.beta2 = beta2
        self.epsilon = epsilon
        self.lr_decay = lr_decay
        self.l2 = l2
        self.keep_prob = keep_prob
        self.flip = flip
        self.validation = validation
        self.patience = patience
        self.log_every = log_every
        self.solver = solver
        self.dtype = dtype
        self.device = device
        self.random_state = random_state

    # get_params / set_params as scikit-learn defines them (also without scikit-learn)
    def get_params(self, deep: bool = True) -> dict:
        import inspect

        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {n: getattr(self, n) for n in names}

    def set_params(self, **params):
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(
                    f"invalid parameter {k!r} for CatClassifier; valid: {sorted(valid)}"
                )
            setattr(self, k, v)
        return self

    def _config(self) -> TrainConfig:
        recipe = {k: getattr(self, k) for k in _RECIPE if hasattr(self, k)}
        layers = (N_FEATURES, *tuple(self.hidden_layers), 1)
        return TrainConfig(layers=layers, seed=int(self.random_state), **recipe)

    def fit(self, X, y):
        from gpucat.backend import get_backend
        from gpucat.train import fit, params_to_host

        Xc = as_columns(X)
        y = np.asarray(y).reshape(-1)
        if y.size != Xc.shape[1]:
            raise GpucatError(f"X has {Xc.shape[1]} samples but y has {y.size} labels.")
        if not np.isin(y, (0, 1)).all():
            raise GpucatError("y must hold 0 (non-cat) and 1 (cat) only.")
        backend = get_backend(self.device)
        result = fit(backend, self._config(), Xc, y.reshape(1, -1).astype(np.float64))
        self.params_ = params_to_host(backend, result.params)
        self.costs_ = result.costs
        self.validation_costs_ = result.val_costs
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = N_FEATURES
        return self

    def predict_proba(self, X) -> np.ndarray:
        """(n_samples, 2): P(non-cat), P(cat)."""
        from gpucat.backend import get_backend
        from gpucat.train import params_to_device, predict_proba

        if not hasattr(self, "params_"):
            raise GpucatError("this CatClassifier is not fitted yet; call fit(X, y) first.")
        backend = get_backend(self.device)
        params = params_to_device(backend, self.params_, self.dtype)
        p = predict_proba(backend, params, as_columns(X), self.dtype)
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        return (self.predict_proba(X)[:, 1] > 0.5).astype(int)

    def score(self, X, y, sample_weight=None) -> float:
        """Mean accuracy."""
        y = np.asarray(y).reshape(-1)
        hits = (self.predict(X) == y).astype(np.float64)
        return float(np.average(hits, weights=sample_weight))
