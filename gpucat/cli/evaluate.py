"""`gpucat evaluate` and `gpucat predict`: a trained model on labelled data, or on images."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from gpucat.cli import add_device, get_device
from gpucat.config import DTYPES
from gpucat.files import check_writable


def add(sub) -> None:
    e = sub.add_parser("evaluate", help="score a model on labelled data")
    e.set_defaults(run=evaluate)
    e.add_argument(
        "--model", required=True, help="a .safetensors model or the original program's JSON model"
    )
    e.add_argument(
        "--data",
        required=True,
        help="an .h5 file, the original CSV, or a folder with cat/ and non-cat/",
    )
    add_device(e)
    e.add_argument(
        "--dtype", choices=DTYPES, default="float64", help="the arithmetic (default: float64)"
    )
    e.add_argument(
        "--mislabeled", default=None, metavar="PNG", help="draw the misclassified images"
    )
    e.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    pr = sub.add_parser("predict", help="the probability of 'cat' for images or data files")
    pr.set_defaults(run=predict)
    pr.add_argument(
        "--model", required=True, help="a .safetensors model or the original program's JSON model"
    )
    pr.add_argument("inputs", nargs="+", metavar="PATH", help="images, folders, .h5 or .csv files")
    add_device(pr)
    pr.add_argument(
        "--dtype", choices=DTYPES, default="float64", help="the arithmetic (default: float64)"
    )
    pr.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def _model_and_device(args: argparse.Namespace):
    from gpucat.modelfiles.model import load_model

    return load_model(args.model), get_device(args.device)


def evaluate(args: argparse.Namespace) -> None:
    from gpucat.data.inputs import load_input
    from gpucat.nn.inference import model_probabilities, scores

    check_writable(args.mislabeled)
    model, device = _model_and_device(args)
    ds = load_input(args.data, require_labels=True, stream=True)
    try:
        p = model_probabilities(device, model, ds, args.dtype)
    finally:
        ds.close()  # pictures for --mislabeled are read again when asked for
    s = scores(p, ds.Y)
    print(f"Model: {args.model} ({'-'.join(map(str, model.layer_sizes))})")
    print(f"Data: {ds.origin} ({ds.n_examples} examples), device: {device.label}")
    print(f"Accuracy: {s['accuracy']:.4f} ({s['correct']}/{s['n']})")
    print(
        f"Confusion (cat = positive): TP {s['true_positives']}, TN {s['true_negatives']}, "
        f"FP {s['false_positives']}, FN {s['false_negatives']}"
    )
    if args.mislabeled:
        from gpucat.frontends.plots import plot_mislabeled

        n = plot_mislabeled(args.mislabeled, ds.images, p, ds.Y.reshape(-1))
        print(f"Saved {n} mislabeled images to {args.mislabeled}")
    if args.json:
        labels = [int(y) for y in ds.Y.reshape(-1)]
        extra = {"model": args.model, "data": ds.origin, "device": device.label}
        extra.update(probabilities=p.tolist(), labels=labels, names=ds.names)
        print(json.dumps({**s, **extra, "predicted": [int(v > 0.5) for v in p]}))


def _shown(given: str, ds, k: int) -> str:
    """Example k of an input as the user named it: an image by its path as given, a
    folder's images under the folder as given, a file's entries as FILE[name or index]."""
    if Path(given).is_dir() and ds.names:
        return str(Path(given) / ds.names[k])
    if ds.n_examples == 1 and ds.names == [Path(given).name]:
        return given
    return f"{given}[{ds.names[k] if ds.names else k}]"


def predict(args: argparse.Namespace) -> None:
    from gpucat.data.inputs import load_input
    from gpucat.nn.inference import model_probabilities

    model, device = _model_and_device(args)
    rows = []
    for path in args.inputs:
        ds = load_input(path)
        p = model_probabilities(device, model, ds, args.dtype)
        for k, pk in enumerate(p):
            label = "cat" if pk > 0.5 else "non-cat"
            name = _shown(path, ds, k)
            rows.append({"input": name, "probability": float(pk), "label": label})
            print(f"{name}: {label} (p(cat) = {pk:.4f})")
    if args.json:
        print(json.dumps({"model": args.model, "device": device.label, "predictions": rows}))
