"""`gpucat compare`: the reference recipe on every usable device and dtype, as a table; with
--sweep, the training step over data sizes and widths against each device's peak."""

from __future__ import annotations

import argparse
import json
import sys

from gpucat.errors import GpucatError
from gpucat.files import check_writable

ABOUT = (
    "train the same recipe from the same start on every usable device and dtype; compare "
    "costs, accuracy and time (--sweep: the step's time over data sizes, against each "
    "device's peak)"
)
RECIPE_ONLY = ("log_every", "solver", "data_dir")  # flags of the recipe comparison alone
SWEEP_ONLY = ("examples", "widths")


def _counts(text: str) -> list[int]:
    """Comma-separated whole numbers of at least 1."""
    try:
        values = [int(t) for t in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated whole numbers of at least 1, like 209,2000, got {text!r}"
        )
    return values


def add(sub) -> None:
    from gpucat.config import DTYPES, SOLVERS

    c = sub.add_parser("compare", help=ABOUT, description=ABOUT[0].upper() + ABOUT[1:] + ".")
    c.set_defaults(run=run)
    c.add_argument(
        "--iterations",
        type=int,
        default=None,
        help="iterations of each run (default: 2500); with --sweep, timed at each size "
        "(default: 5)",
    )
    c.add_argument(
        "--log-every", type=int, default=None, help="cost compared every N (default: 100)"
    )
    c.add_argument("--dtype", choices=DTYPES, default=None, help="one dtype (default: both)")
    c.add_argument("--solver", choices=SOLVERS, default=None, help="(default: auto)")
    c.add_argument(
        "--data-dir",
        default=None,
        help="folder with the course files (default: GPUCAT_DATA_DIR, else the copies gpucat "
        "carries)",
    )
    c.add_argument(
        "--sweep",
        action="store_true",
        help="time the training step over example counts and widths on synthetic data, "
        "against each device's peak GFLOP/s",
    )
    c.add_argument(
        "--examples",
        type=_counts,
        default=None,
        metavar="M,M,...",
        help="--sweep's example counts (default: 209, 2000, 20000, ... up to what fits and "
        "takes a few seconds)",
    )
    c.add_argument(
        "--widths",
        type=_counts,
        default=None,
        metavar="N,N,...",
        help="--sweep's hidden widths: the first hidden layer of the reference network "
        "(default: 20)",
    )
    c.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help=(
            "a picture of the results: cost curves and time bars; with --sweep, ms per "
            "iteration and GFLOP/s against examples"
        ),
    )
    c.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    c.add_argument(
        "--json-out", default=None, metavar="FILE", help="the JSON, rewritten after every run"
    )


def run(args: argparse.Namespace) -> None:
    given = [k for k in (SWEEP_ONLY if not args.sweep else RECIPE_ONLY) if getattr(args, k)]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise GpucatError(
            f"{flag} is for {'--sweep' if not args.sweep else 'the recipe comparison'} only: "
            f"{'add --sweep' if not args.sweep else 'leave out --sweep'}, or leave out {flag}."
        )
    if args.iterations is not None and args.iterations < 1:
        raise GpucatError(f"--iterations must be at least 1, got {args.iterations}.")
    check_writable(args.plot, args.json_out)
    if args.plot:
        from gpucat.frontends.plots import pyplot

        pyplot()  # a missing matplotlib is reported before measuring, not after
    (sweep if args.sweep else recipe)(args)


def _emit(args, result: dict, table: str, plot) -> None:
    print(table)
    if args.plot:
        plot(args.plot, result)
        print(f"Saved {args.plot}")
    if args.json:
        print(json.dumps(result))


def _saver(args):
    from gpucat.files import atomic_write

    def save(result: dict) -> None:  # after every row: a later failure keeps the rows done
        if args.json_out:
            atomic_write(args.json_out, (json.dumps(result) + "\n").encode())

    return save


def recipe(args: argparse.Namespace) -> None:
    from gpucat.frontends.compare import BOTH, compare, table
    from gpucat.frontends.plots import plot_device_comparison

    save = _saver(args)

    def on_row(result: dict) -> None:
        row = result["rows"][-1]
        print(
            f"trained on {row['device']}, {row['dtype']}: {row['ms_per_iteration']:.3f} "
            "ms/iteration",
            file=sys.stderr,
            flush=True,
        )
        save(result)

    result = compare(
        iterations=2500 if args.iterations is None else args.iterations,
        dtypes=[args.dtype] if args.dtype else BOTH,
        solver=args.solver or "auto",
        log_every=args.log_every or 100,
        data_dir=args.data_dir,
        on_row=on_row,
    )
    _emit(args, result, table(result), lambda path, r: plot_device_comparison(path, r["rows"]))


def sweep(args: argparse.Namespace) -> None:
    from gpucat.frontends.compare import BOTH
    from gpucat.frontends.plots import plot_sweep
    from gpucat.frontends.sweep import crossover, sweep, table

    save, rows, notes = _saver(args), [], []

    def on_row(row: dict) -> None:
        rows.append(row)
        print(
            f"timed {row['device']}, {row['dtype']}, {row['examples']} examples, width "
            f"{row['width']}: {row['ms_per_iteration']:.3f} ms/iteration ({row['solver']})",
            file=sys.stderr,
            flush=True,
        )
        save({"rows": rows, "crossover": crossover(rows), "notes": notes})

    result = sweep(
        examples=args.examples,
        widths=args.widths,
        dtypes=[args.dtype] if args.dtype else BOTH,
        iterations=5 if args.iterations is None else args.iterations,
        on_row=on_row,
        on_note=notes.append,
    )
    save(result)
    _emit(args, result, table(result), plot_sweep)
