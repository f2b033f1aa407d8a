"""The `gpucat` command line. User errors are caught once here: one message, exit code 2."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from gpucat.errors import GpucatError

EXIT_USER_ERROR = 2


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.replace(" ", "").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated sizes like 12288,20,7,5,1, got {text!r}"
        ) from None


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--device",
        choices=("auto", "cpu", "gpu"),
        default=None,
        help="where to compute (default: GPUCAT_DEVICE, else auto)",
    )


def build_parser() -> argparse.ArgumentParser:
    from gpucat.train import TrainConfig

    d = TrainConfig()
    from gpucat import __doc__ as about
    from gpucat import __version__

    parser = argparse.ArgumentParser(prog="gpucat", description=about.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"gpucat {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train the cat classifier (defaults: the reference recipe)")
    _add_device(t)
    # Recipe flags are recorded only when given (SUPPRESS), so that --resume can tell a
    # flag the user typed from a default.
    recipe = t.add_argument_group("recipe (defaults: the reference recipe)")

    def opt(flag, **kw):
        name = flag[2:].replace("-", "_")
        default = getattr(d, name)
        kw.setdefault("help", "")
        kw["help"] += f" (default: {default})" if default not in (None, False) else ""
        recipe.add_argument(flag, default=argparse.SUPPRESS, **kw)

    opt("--dtype", choices=("float32", "float64"))
    opt("--layers", type=_layers, help="layer sizes, e.g. 12288,20,7,5,1")
    opt("--learning-rate", type=float)
    opt("--iterations", type=int, help="parameter updates, one per mini-batch")
    opt("--seed", type=int, help="initial weights, shuffles, dropout masks, validation split")
    opt("--log-every", type=int, help="iterations between cost read-outs")
    opt(
        "--solver",
        choices=("auto", "direct", "gram"),
        help="gram: exact and fast for plain full-batch training with fewer examples than "
        "inputs; auto picks it when it applies",
    )
    opt(
        "--batch-size",
        type=int,
        help="mini-batch size, reshuffled every epoch (default: full batch)",
    )
    opt("--optimizer", choices=("gd", "momentum", "adam"))
    opt("--beta1", type=float, help="momentum's beta, Adam's beta1")
    opt("--beta2", type=float, help="Adam's beta2")
    opt("--epsilon", type=float, help="Adam's epsilon")
    opt("--lr-decay", type=float, help="learning rate / (1 + decay * epoch)")
    opt("--l2", type=float, help="L2 regularization strength lambda")
    opt(
        "--keep-prob",
        type=float,
        help="inverted dropout on hidden layers: probability to keep a unit",
    )
    opt("--flip", action="store_true", help="add left-right mirrored copies of the training images")
    opt("--validation", type=float, help="fraction of the training set held out (stratified)")
    opt("--patience", type=int, help="early stopping: log points without a better validation cost")
    t.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI: run as `mpiexec -n N gpucat train --distributed`",
    )
    ck = t.add_argument_group("checkpoints")
    ck.add_argument("--checkpoint", default=None, metavar="FILE", help="where checkpoints go")
    ck.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="write a checkpoint every N iterations (atomically)",
    )
    ck.add_argument(
        "--resume",
        default=None,
        metavar="FILE",
        help="continue from a checkpoint; ends exactly where an uninterrupted run would",
    )
    t.add_argument(
        "--data-dir",
        default=None,
        help="folder with train_catvnoncat.h5 and test_catvnoncat.h5 "
        "(default: GPUCAT_DATA_DIR, else the project's data/)",
    )
    t.add_argument(
        "--out",
        default=None,
        help="save the trained model (.safetensors, or .json for the original format)",
    )
    t.add_argument(
        "--plot", default=None, metavar="PNG", help="draw the cost curve (needs matplotlib)"
    )
    t.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    f = sub.add_parser("fetch-data", help="download the course data and verify its SHA-256")
    f.add_argument(
        "--data-dir", default=None, help="where to put it (default: GPUCAT_DATA_DIR, else data/)"
    )

    e = sub.add_parser("evaluate", help="score a model on labelled data")
    e.add_argument(
        "--model", required=True, help="a .safetensors model or the original program's JSON model"
    )
    e.add_argument(
        "--data",
        required=True,
        help="an .h5 file, the original CSV, or a folder with cat/ and non-cat/",
    )
    _add_device(e)
    e.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    e.add_argument(
        "--mislabeled", default=None, metavar="PNG", help="draw the misclassified images"
    )
    e.add_argument("--json", action="store_true", help="print one JSON object as the last line")

    pr = sub.add_parser("predict", help="the probability of 'cat' for images or data files")
    pr.add_argument("--model", required=True)
    pr.add_argument("inputs", nargs="+", metavar="PATH", help="images, folders, .h5 or .csv files")
    _add_device(pr)
    pr.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    pr.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    return parser


def _cost_logger(out):
    """on_log for the trainers: one line per logging point, through ``out`` (print on rank 0)."""

    def log(i: int, cost: float, val: float | None) -> None:
        extra = f", validation cost {val:.6f}" if val is not None else ""
        out(f"Cost after iteration {i}: {cost:.6f}{extra}", flush=True)

    return log


def _check_writable(*paths: str | None) -> None:
    """Fail before long work when an output file's folder does not exist."""
    from pathlib import Path

    for p in paths:
        if p and not Path(p).resolve().parent.is_dir():
            raise GpucatError(f"{p}: the folder {Path(p).parent} does not exist; create it first.")


def cmd_train(args: argparse.Namespace) -> None:
    from gpucat import data, models
    from gpucat.backend import get_backend
    from gpucat.train import TrainConfig, params_to_host, run_recipe

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    if args.resume:
        from gpucat.checkpoint import load_checkpoint

        saved = load_checkpoint(args.resume)[0]
        config = TrainConfig.from_dict({**saved, **given})
    else:
        config = TrainConfig(**given)
    config.check()
    _check_writable(args.out, args.plot, args.checkpoint)
    if args.distributed:
        return _train_distributed(args, config)
    if args.plot:
        from gpucat.plots import _pyplot

        _pyplot()  # a missing matplotlib is reported before training, not after
    backend = get_backend(args.device)
    folder = data.resolve_data_dir(args.data_dir)
    if not all((folder / n).exists() for n in (data.TRAIN_FILE, data.TEST_FILE)):
        from gpucat.fetch import fetch_data

        print(f"Course data not found in {folder}; downloading it.", file=sys.stderr, flush=True)
        fetch_data(folder)
    train_set, test_set = data.load_course_data(folder)
    print(
        f"Training {'-'.join(map(str, config.layers))} on {backend.label}, {config.dtype}, "
        f"{config.iterations} iterations, learning rate {config.learning_rate:g}, "
        f"{train_set.m} examples",
        flush=True,
    )

    log = _cost_logger(print)
    checkpoint = args.checkpoint or (args.resume if args.checkpoint_every else None)
    result, summary = run_recipe(
        backend,
        config,
        train_set,
        test_set,
        on_log=log,
        checkpoint=checkpoint,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )
    if result.stopped_early:
        print(
            f"Early stopping after iteration {result.iterations_done - 1}; restored the "
            f"parameters of iteration {result.best_iteration} (best validation cost)"
        )
    for name in ("train", "test"):
        print(
            f"{name.capitalize()} accuracy: {summary[name + '_accuracy']:.4f} "
            f"({summary[name + '_correct']}/{summary[name + '_examples']})"
        )
    if summary["dead_layers"]:
        print(
            f"gpucat: warning: every unit of hidden layer {summary['dead_layers'][0]} is inactive "
            "for every training image, so the model gives all inputs the same probability "
            "(a 'dead' ReLU network). Try another --seed or a smaller --learning-rate.",
            file=sys.stderr,
        )
    print(f"Device: {backend.label}, solver: {result.solver}")
    print(
        f"Training time: {result.seconds:.3f} s "
        f"({summary['ms_per_iteration']:.3f} ms/iteration, device synchronized)"
    )

    if args.out:
        result_meta = {k: summary[k] for k in ("train_accuracy", "test_accuracy", "final_cost")}
        meta = {"recipe": config.to_dict(), "device": backend.label, "result": result_meta}
        models.save_model(args.out, models.Model(params_to_host(backend, result.params), meta))
        print(f"Saved model to {args.out}")

    if args.plot:
        from gpucat.plots import plot_costs

        plot_costs(
            args.plot,
            {f"{backend.name} {config.dtype}": result.costs},
            f"gpucat {'-'.join(map(str, config.layers))}, lr {config.learning_rate:g}",
        )
        print(f"Saved cost curve to {args.plot}")

    if args.json:
        print(json.dumps({**summary, "model": args.out}))


def _distributed_shards(data, train_file, config, size: int, rank: int):
    """This rank's training shard, its first position, the global training count, its part
    of the validation set and the validation count: the same examples, in the same order,
    as a single process trains on (validation held out first, then mirrored copies)."""
    import numpy as np

    from gpucat.distributed import shard_bounds
    from gpucat.train import mirrored, stratified_split

    m_file = data.h5_length(train_file)
    rows, val_rows = np.arange(m_file), np.zeros(0, dtype=np.int64)
    if config.validation:
        rows, val_rows = stratified_split(
            data.h5_labels(train_file), config.validation, config.seed
        )
    n_train = rows.size
    m = n_train * (2 if config.flip else 1)
    start, stop = shard_bounds(m, size, rank)
    positions = np.arange(start, stop)
    plain = data.load_h5(train_file, rows=rows[positions[positions < n_train]])
    X, Y = plain.X, plain.Y
    if config.flip:  # positions past n_train are mirrored copies of the training rows
        flipped = data.load_h5(train_file, rows=rows[positions[positions >= n_train] - n_train])
        X = np.concatenate([X, mirrored(flipped.X)], axis=1)
        Y = np.concatenate([Y, flipped.Y], axis=1)
    val = data.load_h5(train_file, rows=np.array_split(val_rows, size)[rank])
    return data.Dataset(X, Y, str(train_file)), start, m, val, val_rows.size


def _train_distributed(args: argparse.Namespace, config) -> None:
    """`mpiexec -n N gpucat train --distributed`: every rank trains on its shard."""
    from gpucat import data, models
    from gpucat.backend import get_backend
    from gpucat.distributed import (
        fit_distributed,
        init_mpi,
        limit_blas_threads,
        local_gpu_index,
        shard_bounds,
    )
    from gpucat.train import accuracy, params_to_host, predict_proba, summarize

    if args.checkpoint_every and not (args.checkpoint or args.resume):
        raise GpucatError("--checkpoint-every needs a --checkpoint FILE to write to.")
    comm = init_mpi()
    rank, size = comm.Get_rank(), comm.Get_size()
    say = print if rank == 0 else (lambda *a, **k: None)
    backend = get_backend(args.device, gpu_index=local_gpu_index(comm))
    threads = limit_blas_threads(comm) if backend.name == "numpy" else "one GPU per rank"
    folder = data.resolve_data_dir(args.data_dir)
    train_file = folder / data.TRAIN_FILE
    shard, start, m, val, n_val = _distributed_shards(data, train_file, config, size, rank)
    test_set = data.load_h5(folder / data.TEST_FILE)
    say(
        f"Training {'-'.join(map(str, config.layers))} on {size} processes ({backend.label} on "
        f"rank 0), {config.dtype}, {config.iterations} iterations, {m} examples in shards of "
        f"{m // size}-{-(-m // size)}; {threads}",
        flush=True,
    )

    log = _cost_logger(say)
    result = fit_distributed(
        comm,
        backend,
        config,
        shard.X,
        shard.Y,
        m,
        start,
        on_log=log,
        X_val=val.X,
        Y_val=val.Y,
        n_val=n_val,
        checkpoint=args.checkpoint or args.resume,
        checkpoint_every=args.checkpoint_every,
        resume=args.resume,
    )
    if result.stopped_early:
        say(
            f"Early stopping after iteration {result.iterations_done - 1}; restored the "
            f"parameters of iteration {result.best_iteration} (best validation cost)"
        )
    # accuracy over the whole training file, as a single process reports it
    m = data.h5_length(train_file)
    shard = data.load_h5(train_file, rows=slice(*shard_bounds(m, size, rank)))
    say(f"Gradients all-reduced in one buffer per iteration: {result.reduce_how}")
    p = predict_proba(backend, result.params, shard.X, config.dtype)
    local_correct = accuracy(p, shard.Y)[1]
    from mpi4py import MPI

    train_correct = comm.allreduce(local_correct, op=MPI.SUM)
    test_acc, test_correct = accuracy(
        predict_proba(backend, result.params, test_set.X, config.dtype), test_set.Y
    )
    summary = {
        **summarize(backend, config, result),
        "processes": size,
        "threads": threads,
        "reduce": result.reduce_how,
        "train_accuracy": train_correct / m,
        "train_correct": train_correct,
        "train_examples": m,
        "test_accuracy": test_acc,
        "test_correct": test_correct,
        "test_examples": test_set.m,
    }
    say(f"Train accuracy: {train_correct / m:.4f} ({train_correct}/{m})")
    say(f"Test accuracy: {test_acc:.4f} ({test_correct}/{test_set.m})")
    say(f"Training time: {result.seconds:.3f} s ({summary['ms_per_iteration']:.3f} ms/iteration)")
    if rank != 0:
        return
    if args.out:
        meta = {"recipe": config.to_dict(), "device": backend.label, "processes": size}
        models.save_model(args.out, models.Model(params_to_host(backend, result.params), meta))
        print(f"Saved model to {args.out}")
    if args.plot:
        from gpucat.plots import plot_costs

        plot_costs(args.plot, {f"{size} processes": result.costs}, "gpucat --distributed")
    if args.json:
        print(json.dumps({**summary, "model": args.out}))


def cmd_fetch_data(args: argparse.Namespace) -> None:
    from gpucat.fetch import fetch_data

    folder = fetch_data(args.data_dir)
    print(f"Course data verified in {folder}")


def _model_and_backend(args: argparse.Namespace):
    from gpucat.backend import get_backend
    from gpucat.models import load_model

    model = load_model(args.model)
    return model, get_backend(args.device)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from gpucat.inference import probabilities, scores
    from gpucat.inputs import load_input

    _check_writable(args.mislabeled)
    model, backend = _model_and_backend(args)
    ds = load_input(args.data, require_labels=True)
    p = probabilities(backend, model, ds, args.dtype, args.model)
    s = scores(p, ds.Y)
    print(f"Model: {args.model} ({'-'.join(map(str, model.layer_sizes))})")
    print(f"Data: {ds.source} ({ds.m} examples), device: {backend.label}")
    print(f"Accuracy: {s['accuracy']:.4f} ({s['correct']}/{s['n']})")
    print(
        f"Confusion (cat = positive): TP {s['true_positives']}, TN {s['true_negatives']}, "
        f"FP {s['false_positives']}, FN {s['false_negatives']}"
    )
    if args.mislabeled:
        from gpucat.plots import plot_mislabeled

        n = plot_mislabeled(args.mislabeled, ds.images, p, ds.Y.reshape(-1))
        print(f"Saved {n} mislabeled images to {args.mislabeled}")
    if args.json:
        labels = [int(y) for y in ds.Y.reshape(-1)]
        print(
            json.dumps(
                {
                    **s,
                    "model": args.model,
                    "data": ds.source,
                    "device": backend.label,
                    "probabilities": p.tolist(),
                    "labels": labels,
                    "predicted": [int(v > 0.5) for v in p],
                    "names": ds.names,
                }
            )
        )


def cmd_predict(args: argparse.Namespace) -> None:
    from gpucat.inference import probabilities
    from gpucat.inputs import load_input

    model, backend = _model_and_backend(args)
    rows = []
    for path in args.inputs:
        ds = load_input(path)
        p = probabilities(backend, model, ds, args.dtype, args.model)
        for k, pk in enumerate(p):
            label = "cat" if pk > 0.5 else "non-cat"
            rows.append({"input": ds.name(k), "probability": float(pk), "label": label})
            print(f"{ds.name(k)}: {label} (p(cat) = {pk:.4f})")
    if args.json:
        print(json.dumps({"model": args.model, "device": backend.label, "predictions": rows}))


COMMANDS = {
    "train": cmd_train,
    "fetch-data": cmd_fetch_data,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except GpucatError as e:
        print(f"gpucat: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("gpucat: interrupted; nothing was saved.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
