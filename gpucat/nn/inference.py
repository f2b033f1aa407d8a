"""Using parameters: the cat probability of every example of a source, scores, and the check
for a dead hidden layer, each over a source chunk by chunk (a large set never sits on the
device whole) and, where a reducer is given, over every process of a data-parallel run."""

from __future__ import annotations

import numpy as np

from gpucat.backends import Device
from gpucat.data.shards import CHUNK
from gpucat.modelfiles.model import Model
from gpucat.nn import network
from gpucat.nn.network import Layer, params_to_device
from gpucat.training.reducers import LOCAL


def columns(device: Device, source, dtype: str, reducer=LOCAL):
    """This process's contiguous part of a source, as device columns, chunk by chunk."""
    a, b = reducer.block(source.n_examples, allow_empty=True)
    for lo in range(a, b, CHUNK):
        rows, y = source.read(np.arange(lo, min(lo + CHUNK, b)))
        yield device.to_columns(rows, dtype, source.divisor), y


def probabilities(device: Device, params: list[Layer], source, dtype: str) -> np.ndarray:
    """P(cat) for every example of a source, on the host, shape (m,)."""
    out = [
        device.to_host(network.predict_proba(device, params, X)).reshape(-1)
        for X, _ in columns(device, source, dtype)
    ]
    return np.concatenate(out) if out else np.zeros(0)


def model_probabilities(device: Device, model: Model, source, dtype: str) -> np.ndarray:
    """P(cat) for every example of a source from a model file's parameters (load_model has
    checked that they take the data's 12288 values)."""
    return probabilities(device, params_to_device(device, model.params, dtype), source, dtype)


def score(device: Device, params: list[Layer], source, dtype: str, reducer=LOCAL):
    """(correct, examples, non-finite predictions) over the whole source: each process
    scores its part, the counts are summed over processes."""
    correct, bad = 0, 0
    for X, y in columns(device, source, dtype, reducer):
        p = device.to_host(network.predict_proba(device, params, X)).reshape(-1)
        correct += scores(p, y)["correct"]
        bad += int(np.sum(~np.isfinite(p)))
    correct, bad = reducer.sum_scalars(correct, bad)
    return int(correct), source.n_examples, int(bad)


def dead_layers(device: Device, params: list[Layer], source, dtype: str, reducer=LOCAL):
    """1-based numbers of the hidden layers that are inactive for every example of the
    source, on every process (see network.dead_layers)."""
    alive = np.zeros(len(params) - 1)
    for X, _ in columns(device, source, dtype, reducer):
        flags = network.dead_layers(device, params, X)
        if flags is not None:
            alive += 1 - device.to_host(flags).astype(np.float64)
    alive = reducer.sum_scalars(*alive)
    return [l + 1 for l, a in enumerate(alive) if a == 0]


def scores(p: np.ndarray, Y: np.ndarray) -> dict:
    """Accuracy and the confusion counts (cat is the positive class)."""
    pred, true = p > 0.5, np.asarray(Y).reshape(-1) > 0.5
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
