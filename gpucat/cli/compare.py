"""`gpucat compare`: the reference recipe on every usable device and dtype, as a table."""

from __future__ import annotations

import argparse
import json
import sys

from gpucat.files import check_writable

ABOUT = (
    "train the same recipe from the same start on every usable device and dtype; compare "
    "costs, accuracy and time"
)


def add(sub) -> None:
    from gpucat.config import DTYPES, SOLVERS

    c = sub.add_parser("compare", help=ABOUT, description=ABOUT[0].upper() + ABOUT[1:] + ".")
    c.set_defaults(run=run)
    c.add_argument("--iterations", type=int, default=2500, help="(default: 2500)")
    c.add_argument(
        "--log-every", type=int, default=100, help="cost compared every N (default: 100)"
    )
    c.add_argument("--dtype", choices=DTYPES, default=None, help="one dtype (default: both)")
    c.add_argument("--solver", choices=SOLVERS, default="auto", help="(default: auto)")
    c.add_argument(
        "--data-dir",
        default=None,
        help="folder with the course files (default: GPUCAT_DATA_DIR, else the copies gpucat "
        "carries)",
    )
    c.add_argument("--plot", default=None, metavar="PNG", help="cost curves and time bars")
    c.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    c.add_argument(
        "--json-out", default=None, metavar="FILE", help="the JSON, rewritten after every run"
    )


def run(args: argparse.Namespace) -> None:
    from gpucat.compare import BOTH, compare, table
    from gpucat.files import atomic_write

    check_writable(args.plot, args.json_out)
    if args.plot:
        from gpucat.plots import _pyplot

        _pyplot()  # a missing matplotlib is reported before training, not after

    def on_row(result: dict) -> None:
        row = result["rows"][-1]
        print(
            f"trained on {row['device']}, {row['dtype']}: {row['ms_per_iteration']:.3f} "
            "ms/iteration",
            file=sys.stderr,
            flush=True,
        )
        if args.json_out:  # after every run: a later failure keeps the runs done
            atomic_write(args.json_out, (json.dumps(result) + "\n").encode())

    result = compare(
        iterations=args.iterations,
        dtypes=[args.dtype] if args.dtype else BOTH,
        solver=args.solver,
        log_every=args.log_every,
        data_dir=args.data_dir,
        on_row=on_row,
    )
    print(table(result))
    if args.plot:
        from gpucat.plots import plot_device_comparison

        plot_device_comparison(args.plot, result["rows"])
        print(f"Saved {args.plot}")
    if args.json:
        print(json.dumps(result))
