#!/usr/bin/env python3
"""Choose an improved recipe by validation on the training set only, then report its test
accuracy over 5 seeds (mean and spread) beside the reference recipe's.

    python scripts/choose_recipe.py [--seeds 5] [--out docs/recipes.json]

Selection never looks at the test set: each candidate is scored by stratified 5-fold
cross-validation on the training images (fold k also uses seed k + 1 for the initial
weights, shuffles and masks); the best mean validation accuracy wins, the lower mean
validation cost breaks ties. Only then are the winner and the reference trained on the
whole training set with seeds 1..5 and scored on the test set.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import numpy as np

from gpucat import data
from gpucat.backend import get_backend
from gpucat.config import TrainConfig
from gpucat.train import accuracy, fit, predict_proba

CANDIDATES = {
    "reference (gd 0.0075, 2500 it)": dict(),
    "gd + l2 0.5": dict(l2=0.5),
    "gd + dropout 0.8": dict(keep_prob=0.8),
    "gd + flips": dict(flip=True),
    "adam 0.0005, batch 64, 800 it": dict(
        optimizer="adam", learning_rate=0.0005, batch_size=64, iterations=800
    ),
    "adam 0.0005, batch 64, 800 it, flips": dict(
        optimizer="adam", learning_rate=0.0005, batch_size=64, iterations=800, flip=True
    ),
    "adam 0.0005, batch 64, 800 it, l2 0.5": dict(
        optimizer="adam", learning_rate=0.0005, batch_size=64, iterations=800, l2=0.5
    ),
    "adam 0.0002, full batch, 1500 it, flips": dict(
        optimizer="adam", learning_rate=0.0002, iterations=1500, flip=True
    ),
    "gd + flips + l2 0.5": dict(flip=True, l2=0.5),
    "momentum 0.02, batch 64, 1500 it": dict(
        optimizer="momentum", learning_rate=0.02, batch_size=64, iterations=1500
    ),
}


def stratified_folds(Y: np.ndarray, k: int, seed: int = 0) -> list[np.ndarray]:
    """k disjoint validation index sets, each holding about 1/k of every class."""
    y = Y.reshape(-1) > 0.5
    rng = np.random.default_rng(seed)
    folds = [[] for _ in range(k)]
    for cls in (False, True):
        for j, chunk in enumerate(np.array_split(rng.permutation(np.flatnonzero(y == cls)), k)):
            folds[j].extend(chunk.tolist())
    return [np.sort(np.array(f)) for f in folds]


def validate(backend, train, options: dict, va: np.ndarray, seed: int) -> tuple[float, float]:
    """Validation accuracy and cost of one candidate: fit on the rest, score the fold."""
    tr = np.setdiff1d(np.arange(train.m), va)
    cfg = TrainConfig(dtype="float64", seed=seed, log_every=10**6, **options)
    r = fit(backend, cfg, train.X[:, tr], train.Y[:, tr])
    p = predict_proba(backend, r.params, train.X[:, va], "float64")
    eps = 1e-12
    y = train.Y[0, va]
    cost = float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
    return accuracy(p, train.Y[:, va])[0], cost


def test_accuracies(backend, train, test, options: dict, seeds) -> list[float]:
    out = []
    for seed in seeds:
        cfg = TrainConfig(dtype="float64", seed=seed, log_every=10**6, **options)
        r = fit(backend, cfg, train.X, train.Y)
        out.append(accuracy(predict_proba(backend, r.params, test.X, "float64"), test.Y)[0])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    backend = get_backend("cpu")
    train, test = data.load_course_data(args.data_dir)
    rows = []
    for name, options in CANDIDATES.items():
        t = time.perf_counter()
        folds = stratified_folds(train.Y, args.folds)
        vals = [validate(backend, train, options, va, k + 1) for k, va in enumerate(folds)]
        rows.append(
            {
                "recipe": name,
                "options": options,
                "val_accuracy": statistics.mean(v[0] for v in vals),
                "val_cost": statistics.mean(v[1] for v in vals),
            }
        )
        print(
            f"{name:40} validation accuracy {rows[-1]['val_accuracy']:.4f}  cost "
            f"{rows[-1]['val_cost']:.4f}  ({time.perf_counter() - t:.0f} s)",
            file=sys.stderr,
            flush=True,
        )
    best = max(rows, key=lambda r: (round(r["val_accuracy"], 6), -r["val_cost"]))
    seeds = list(range(1, args.seeds + 1))
    report = {"selection": rows, "chosen": best["recipe"], "seeds": seeds, "folds": args.folds}
    for key, options in (("chosen_test", best["options"]), ("reference_test", {})):
        accs = test_accuracies(backend, train, test, options, seeds)
        report[key] = {
            "accuracies": accs,
            "mean": statistics.mean(accs),
            "stdev": statistics.stdev(accs),
            "min": min(accs),
            "max": max(accs),
        }
    print(json.dumps(report))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
