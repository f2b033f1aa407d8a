"""Using a trained model: cat probabilities for a dataset, and the scores of a labelled one."""

from __future__ import annotations

import numpy as np

from gpucat.backend import Backend
from gpucat.data import Dataset
from gpucat.errors import GpucatError
from gpucat.models import Model
from gpucat.train import params_to_device, predict_proba


def probabilities(
    backend: Backend, model: Model, ds: Dataset, dtype: str, model_name: str
) -> np.ndarray:
    """P(cat) for every example of ds, in input order, computed on the backend."""
    n_in = model.layer_sizes[0]
    if n_in != ds.n_features:
        raise GpucatError(
            f"{model_name}: the model takes {n_in} inputs per example but {ds.source} has "
            f"{ds.n_features} (64x64 RGB images); use a model trained on this kind of data."
        )
    params = params_to_device(backend, model.params, dtype)
    return predict_proba(backend, params, ds, dtype)


def scores(p: np.ndarray, Y: np.ndarray) -> dict:
    """Accuracy and the confusion counts (cat is the positive class)."""
    pred = p > 0.5
    true = Y.reshape(-1) > 0.5
    tp = int(np.sum(pred & true))
    tn = int(np.sum(~pred & ~true))
    fp = int(np.sum(pred & ~true))
    fn = int(np.sum(~pred & true))
    return {
        "accuracy": (tp + tn) / p.size,
        "n": int(p.size),
        "correct": tp + tn,
        "true_positives": tp,
        "true_negatives": tn,
        "false_positives": fp,
        "false_negatives": fn,
    }
