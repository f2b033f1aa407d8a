"""`gpucat train`: the recipe's flags (made from TrainConfig's fields), the data, the device,
checkpoints; then one run of the trainer and its report."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from gpucat.cli import add_device, get_device, note
from gpucat.errors import GpucatError
from gpucat.files import check_writable


def _layers(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(","))  # int() takes the spaces around
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated sizes like 12288,20,7,5,1, got {text!r}"
        ) from None


def add(sub) -> None:
    t = sub.add_parser("train", help="train the cat classifier (defaults: the reference recipe)")
    t.set_defaults(run=run)
    add_device(t)
    _add_recipe(t)
    _add_run(t)


def _add_recipe(t) -> None:
    """One flag per TrainConfig knob, recorded only when given (SUPPRESS), so that --resume
    can tell a flag the user typed from a default."""
    from gpucat.config import TrainConfig, kind

    recipe = t.add_argument_group("recipe (defaults: the reference recipe)")
    for f in fields(TrainConfig):
        default, meta = f.default, f.metadata
        shown = f" (default: {','.join(map(str, default)) if f.name == 'layers' else default})"
        kw = {"help": meta["help"] + ("" if default is None or default is False else shown)}
        if isinstance(default, bool):
            kw["action"] = "store_true"
        elif meta["choices"]:
            kw["choices"] = meta["choices"]
        else:
            kw["type"] = {"layers": _layers, "float": float, "int": int}[kind(f)]
        recipe.add_argument(f"--{f.name.replace('_', '-')}", default=argparse.SUPPRESS, **kw)


def _add_run(t) -> None:
    """The flags of a run besides its recipe: processes, checkpoints, data, what to save."""
    t.add_argument(
        "--distributed",
        action="store_true",
        help="data-parallel over MPI: run as `mpiexec -n N gpucat train --distributed`",
    )
    ck = t.add_argument_group("checkpoints")
    ck.add_argument(
        "--checkpoint",
        default=None,
        metavar="FILE",
        help="write a resumable checkpoint here at the end, and when interrupted (Ctrl-C, "
        "SIGTERM); atomically",
    )
    ck.add_argument(
        "--checkpoint-every", type=int, default=0, metavar="N", help="... and every N iterations"
    )
    ck.add_argument(
        "--resume",
        default=None,
        metavar="FILE",
        help="continue from a checkpoint (and keep writing it, unless --checkpoint says "
        "where); ends exactly where an uninterrupted run would",
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
        "(default: GPUCAT_DATA_DIR, else the copies gpucat carries)",
    )
    t.add_argument(
        "--out",
        default=None,
        help="save the trained model (.safetensors, or .json for the original format)",
    )
    t.add_argument("--plot", default=None, metavar="PNG", help="draw the cost curve (matplotlib)")
    t.add_argument("--json", action="store_true", help="print one JSON object as the last line")


def _logger(out, bar=None):
    """on_log for the trainer: one line per log point or validation, through ``out`` (print
    on rank 0), or above the progress bar, whose cost it updates."""

    def log(i: int, cost: float | None, val: float | None) -> None:
        if cost is None:
            line = f"Validation cost after iteration {i}: {val:.6f}"
        else:
            line = f"Cost after iteration {i}: {cost:.6f}"
        if bar is None:
            out(line, flush=True)
        else:
            bar.write(line)
            if cost is not None:
                bar.set_postfix_str(f"cost {cost:.4f}", refresh=False)

    return log


def _progress_bar(args, config, reducer):
    """A tqdm bar over the iterations (with the cost and the time left), when stdout is a
    terminal, not under --json, on rank 0; else None."""
    if args.json or not reducer.is_root or not sys.stdout.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=config.iterations, unit="it", desc="training", file=sys.stdout, leave=False)


def _training_data(args: argparse.Namespace, can_fetch: bool):
    """(training set, test set or None): --train / --test, else the course files (downloaded
    first when they are missing and ``can_fetch``)."""
    from gpucat.data.course import TEST_FILE, TRAIN_FILE, load_course_data, resolve_data_dir
    from gpucat.data.inputs import load_input

    def labelled(path):  # a large uint8 h5 stays on disk and is read as training goes
        return load_input(path, require_labels=True, stream=True)

    if args.train:
        if args.data_dir:
            raise GpucatError("--data-dir names the course files; drop it when giving --train.")
        return labelled(args.train), (labelled(args.test) if args.test else None)
    folder = resolve_data_dir(args.data_dir)
    if can_fetch and not all((folder / n).exists() for n in (TRAIN_FILE, TEST_FILE)):
        from gpucat.data.fetch import fetch_data

        print(f"Course data not found in {folder}; downloading it.", file=sys.stderr, flush=True)
        fetch_data(folder)
    train_set, test_set = load_course_data(folder)
    return train_set, (labelled(args.test) if args.test else test_set)


def _config(args):
    from gpucat.config import TrainConfig

    given = {k: v for k, v in vars(args).items() if k in TrainConfig.__dataclass_fields__}
    if args.resume:
        from gpucat.training.checkpoint import load_checkpoint

        return TrainConfig.from_dict({**load_checkpoint(args.resume).config, **given})
    return TrainConfig(**given)


def _where(args: argparse.Namespace):
    """(device, reducer, BLAS threads or None): one process on the device asked for, or
    with --distributed one rank of an MPI run."""
    from gpucat.training.reducers import LOCAL

    if not args.distributed:
        return get_device(args.device), LOCAL, None
    from gpucat.training.distributed import setup

    reducer, device, threads = setup(args.device, on_fallback=note)
    if reducer.size == 1:
        note(
            "--distributed, but this is the only process: run it as `mpiexec -n N gpucat "
            "train --distributed` (if you did, mpiexec and mpi4py belong to different MPI "
            "libraries); training as one process."
        )
    return device, reducer, threads


def run(args: argparse.Namespace) -> None:
    from gpucat.frontends.report import run_recipe
    from gpucat.training.loop import check_data

    config = _config(args)
    check_writable(args.out, args.plot, args.checkpoint)
    if args.plot:
        from gpucat.frontends.plots import pyplot

        pyplot()  # a missing matplotlib is reported before training, not after
    device, reducer, threads = _where(args)
    say = print if reducer.is_root else (lambda *a, **k: None)  # rank 0 alone speaks
    train_set, test_set = _training_data(args, can_fetch=not args.distributed)
    check_data(config, train_set)  # before the run is announced
    where = device.label if reducer.size == 1 else f"{reducer.size} processes ({threads})"
    say(
        f"Training {'-'.join(map(str, config.layers))} on {where}, {config.dtype}, "
        f"{config.iterations} iterations, learning rate {config.learning_rate:g}, "
        f"{train_set.n_examples} examples from {train_set.origin}",
        flush=True,
    )
    bar = _progress_bar(args, config, reducer)

    def step(i: int) -> None:
        bar.n = i + 1  # resumed runs start part way
        bar.update(0)

    try:
        result, summary = run_recipe(
            device,
            config,
            train_set,
            test_set,
            on_log=_logger(say, bar),
            on_step=step if bar is not None else None,
            reducer=reducer,
            checkpoint=args.checkpoint or args.resume,
            checkpoint_every=args.checkpoint_every,
            resume=args.resume,
        )
    finally:
        if bar is not None:
            bar.close()
        for source in (train_set, test_set):  # a file streamed from disk: its reading threads
            if source is not None:
                source.close()
    if reducer.is_root:
        _report(args, config, device, result, summary, threads)


def _report(args, config, device, result, summary, threads) -> None:
    from gpucat.frontends.report import to_model
    from gpucat.modelfiles.model import save_model

    if result.stopped_early:
        print(
            f"Early stopping after iteration {result.iterations_done - 1}; restored the "
            f"parameters of iteration {result.best_iteration} (best validation cost)"
        )
    for name in ("train", "validation", "test"):
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
    print(f"Device: {device.label}, solver: {result.solver}, gradients: {result.reduce_how}")
    print(
        f"Training time: {result.seconds:.3f} s "
        f"({summary['ms_per_iteration']:.3f} ms/iteration, device synchronized)"
    )
    if args.out:
        save_model(args.out, to_model(device, config, result, summary))
        print(f"Saved model to {args.out}")
    if args.plot:
        from gpucat.frontends.plots import plot_costs

        plot_costs(
            args.plot,
            {f"{device.name} {config.dtype}": result.costs},
            f"gpucat {'-'.join(map(str, config.layers))}, lr {config.learning_rate:g}",
        )
        print(f"Saved cost curve to {args.plot}")
    checkpoint = args.checkpoint or args.resume
    if checkpoint:
        print(
            f"Checkpoint: {checkpoint} (continue with --resume {checkpoint}; a checkpoint is "
            "not a model: --out saves one)"
        )
    if args.json:
        doc = {**summary, "threads": threads, "model": args.out, "checkpoint": checkpoint}
        print(json.dumps(doc))
