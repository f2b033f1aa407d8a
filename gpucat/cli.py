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
    from gpucat.config import SOLVERS
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
        choices=SOLVERS,
        help="gram: exact and fast for plain full-batch training with fewer examples than "
        "inputs; auto picks it when it applies. fused: the direct algorithm as fused "
        "kernels (for GPUs)",
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
        "--train",
        default=None,
        metavar="PATH",
        help="train on this data: a course-layout .h5, the original .csv, or a folder with "
        "cat/ and non-cat/ subfolders (default: the course training set)",
    )
    t.add_argument(
        "--test",
        default=None,
        metavar="PATH",
        help="score the trained model on this labelled data too (default: the course test "
        "set when --train is not given, else none)",
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

    pp = sub.add_parser(
        "prepare", help="decode a labelled image folder once, in parallel, into a chunked h5"
    )
    pp.add_argument("folder", help="a folder with cat/ and non-cat/ subfolders of images")
    pp.add_argument("--out", required=True, help="the .h5 file to write (atomically)")
    pp.add_argument("--jobs", type=int, default=None, help="processes (default: one per core)")

    i = sub.add_parser(
        "info",
        help="versions, BLAS, GPUs and MPI: what a bug report needs",
        description=(
            "Versions of gpucat, Python, NumPy and its BLAS, CuPy and CUDA; each GPU with its "
            "free memory and whether it passes gpucat's probe (and why not); mpi4py and MPI."
        ),
    )
    i.add_argument("--json", action="store_true", help="print one JSON object")

    x = sub.add_parser("export", help="write a trained model as an ONNX graph")
    x.add_argument("--model", required=True, help="a .safetensors or original-program JSON model")
    x.add_argument("--out", required=True, help="the .onnx file to write")
    x.add_argument(
        "--input",
        choices=("images", "features"),
        default="images",
        help="images: raw uint8 (N, 64, 64, 3); features: normalized float (N, 12288)",
    )
    x.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    return parser


def _note(line: str) -> None:
    print(f"gpucat: note: {line}", file=sys.stderr, flush=True)


def get_backend(device: str | None, gpu_index: int = 0):
    """The backend for --device; ``auto`` falling back to the CPU where a GPU was expected
    says why in one line."""
    from gpucat.backend import get_backend as resolve

    return resolve(device, gpu_index, on_fallback=_note)


def _cost_logger(out, bar=None):
    """on_log for the trainer: one line per logging point, through ``out`` (print on rank 0),
    or above the progress bar, whose cost it updates."""

    def log(i: int, cost: float, val: float | None) -> None:
        extra = f", validation cost {val:.6f}" if val is not None else ""
        line = f"Cost after iteration {i}: {cost:.6f}{extra}"
        if bar is None:
            out(line, flush=True)
        else:
            bar.write(line)
            bar.set_postfix_str(f"cost {cost:.4f}", refresh=False)

    return log


def _progress_bar(args, config, reducer):
    """A tqdm bar over the iterations (with the cost and the time left), when stdout is a
    terminal, not under --json, on rank 0; else None."""
    if args.json or not reducer.is_root or not sys.stdout.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=config.iterations, unit="it", desc="training", file=sys.stdout, leave=False)


def _check_writable(*paths: str | None) -> None:
    """Fail before long work when an output file's folder does not exist."""
    from pathlib import Path

    for p in paths:
        if p and not Path(p).resolve().parent.is_dir():
            raise GpucatError(f"{p}: the folder {Path(p).parent} does not exist; create it first.")


def _training_data(args: argparse.Namespace, can_fetch: bool):
    """(training set, test set or None): --train / --test, else the course files (downloaded
    first when they are missing and ``can_fetch``)."""
    from gpucat import data
    from gpucat.inputs import load_input

    def labelled(path):  # a large uint8 h5 stays on disk and is read as training goes
        return load_input(path, require_labels=True, stream=True)

    if args.train:
        if args.data_dir:
            raise GpucatError("--data-dir names the course files; drop it when giving --train.")
        return labelled(args.train), (labelled(args.test) if args.test else None)
    folder = data.resolve_data_dir(args.data_dir)
    if can_fetch and not all((folder / n).exists() for n in (data.TRAIN_FILE, data.TEST_FILE)):
        from gpucat.fetch import fetch_data

        print(f"Course data not found in {folder}; downloading it.", file=sys.stderr, flush=True)
        fetch_data(folder)
    train_set, test_set = data.load_course_data(folder)
    return train_set, (labelled(args.test) if args.test else test_set)


def cmd_train(args: argparse.Namespace) -> None:
    from gpucat import models
    from gpucat.reducers import LOCAL
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
    if args.plot:
        from gpucat.plots import _pyplot

        _pyplot()  # a missing matplotlib is reported before training, not after
    reducer, threads = LOCAL, None
    if args.distributed:
        from gpucat.distributed import setup

        reducer, backend, threads = setup(args.device, on_fallback=_note)
    else:
        backend = get_backend(args.device)
    say = print if reducer.is_root else (lambda *a, **k: None)  # rank 0 alone speaks
    train_set, test_set = _training_data(args, can_fetch=not args.distributed)
    where = backend.label if reducer.size == 1 else f"{reducer.size} processes ({threads})"
    say(
        f"Training {'-'.join(map(str, config.layers))} on {where}, {config.dtype}, "
        f"{config.iterations} iterations, learning rate {config.learning_rate:g}, "
        f"{train_set.m} examples from {train_set.source}",
        flush=True,
    )
    bar = _progress_bar(args, config, reducer)

    def step(i: int) -> None:
        bar.n = i + 1  # resumed runs start part way
        bar.update(0)

    try:
        result, summary = run_recipe(
            backend,
            config,
            train_set,
            test_set,
            on_log=_cost_logger(say, bar),
            on_step=step if bar is not None else None,
            reducer=reducer,
            checkpoint=args.checkpoint or (args.resume if args.checkpoint_every else None),
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
        )
    finally:
        if bar is not None:
            bar.close()
    if not reducer.is_root:
        return
    if threads:
        summary["threads"] = threads
    if result.stopped_early:
        print(
            f"Early stopping after iteration {result.iterations_done - 1}; restored the "
            f"parameters of iteration {result.best_iteration} (best validation cost)"
        )
    for name in ("train", "test"):
        if f"{name}_accuracy" in summary:
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
    print(f"Device: {backend.label}, solver: {result.solver}, gradients: {result.reduce_how}")
    print(
        f"Training time: {result.seconds:.3f} s "
        f"({summary['ms_per_iteration']:.3f} ms/iteration, device synchronized)"
    )

    if args.out:
        result_meta = {
            k: summary[k] for k in ("train_accuracy", "test_accuracy", "final_cost") if k in summary
        }
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


def cmd_fetch_data(args: argparse.Namespace) -> None:
    from gpucat.fetch import fetch_data

    folder = fetch_data(args.data_dir)
    print(f"Course data verified in {folder}")


def _model_and_backend(args: argparse.Namespace):
    from gpucat.models import load_model

    model = load_model(args.model)
    return model, get_backend(args.device)


def cmd_evaluate(args: argparse.Namespace) -> None:
    from gpucat.inference import probabilities, scores
    from gpucat.inputs import load_input

    _check_writable(args.mislabeled)
    model, backend = _model_and_backend(args)
    ds = load_input(args.data, require_labels=True, stream=True)
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


def cmd_prepare(args: argparse.Namespace) -> None:
    import time

    from gpucat.prepare import prepare

    if args.jobs is not None and args.jobs < 1:
        raise GpucatError(f"--jobs must be at least 1, got {args.jobs}.")
    t = time.perf_counter()
    m = prepare(args.folder, args.out, args.jobs)
    seconds = time.perf_counter() - t
    print(f"Prepared {m} images from {args.folder} into {args.out} in {seconds:.1f} s")


def cmd_export(args: argparse.Namespace) -> None:
    from gpucat.export import export_onnx
    from gpucat.models import load_model

    _check_writable(args.out)
    model = load_model(args.model)
    export_onnx(model, args.out, args.input, args.dtype)
    sizes = "-".join(map(str, model.layer_sizes))
    print(f"Saved {args.model} ({sizes}) as ONNX to {args.out}: input {args.input}, {args.dtype}")


def cmd_info(args: argparse.Namespace) -> None:
    from gpucat.info import collect, table

    info = collect()
    print(json.dumps(info) if args.json else table(info))


COMMANDS = {
    "info": cmd_info,
    "train": cmd_train,
    "fetch-data": cmd_fetch_data,
    "evaluate": cmd_evaluate,
    "predict": cmd_predict,
    "export": cmd_export,
    "prepare": cmd_prepare,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        COMMANDS[args.command](args)
    except GpucatError as e:
        print(f"gpucat: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as e:  # a file the loaders did not foresee: unreadable, a folder, ...
        where = f"{e.filename}: " if e.filename else ""
        print(
            f"gpucat: error: {where}{e.strerror or e}; check the path and its permissions.",
            file=sys.stderr,
        )
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("gpucat: interrupted; nothing was saved.", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
