"""`gpucat fetch-data` and `gpucat prepare`: the course files; image folders and h5 files as
the h5 that streams fastest."""

from __future__ import annotations

import argparse
import time

from gpucat.errors import GpucatError


def add(sub) -> None:
    f = sub.add_parser("fetch-data", help="download the course data and verify its SHA-256")
    f.set_defaults(run=fetch)
    f.add_argument(
        "--data-dir", default=None, help="where to put it (default: GPUCAT_DATA_DIR, else data/)"
    )
    pp = sub.add_parser(
        "prepare",
        help="write a labelled image folder (decoded once, in parallel) or an h5 in any layout "
        "as the h5 that streams fastest (contiguous, uncompressed)",
    )
    pp.set_defaults(run=prepare)
    pp.add_argument(
        "folder", help="a folder with cat/ and non-cat/ subfolders of images, or an .h5 file"
    )
    pp.add_argument("--out", required=True, help="the .h5 file to write (atomically)")
    pp.add_argument("--jobs", type=int, default=None, help="processes (default: one per core)")


def fetch(args: argparse.Namespace) -> None:
    from gpucat.fetch import fetch_data

    print(f"Course data verified in {fetch_data(args.data_dir)}")


def prepare(args: argparse.Namespace) -> None:
    from gpucat.prepare import prepare

    if args.jobs is not None and args.jobs < 1:
        raise GpucatError(f"--jobs must be at least 1, got {args.jobs}.")
    t = time.perf_counter()
    m = prepare(args.folder, args.out, args.jobs)
    seconds = time.perf_counter() - t
    print(f"Prepared {m} images from {args.folder} into {args.out} in {seconds:.1f} s")
