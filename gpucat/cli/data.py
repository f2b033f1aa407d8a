"""`gpucat fetch-data` and `gpucat prepare`: the course files; image folders and h5 files as
the h5 that streams fastest."""

from __future__ import annotations

import argparse
import time

from gpucat.errors import GpucatError


def add(sub) -> None:
    f = sub.add_parser(
        "fetch-data",
        help="download verified copies of the course data (gpucat carries them too; this is "
        "for a copy of your own)",
    )
    f.set_defaults(run=fetch)
    f.add_argument(
        "--data-dir",
        default=None,
        help="where to put them (default: GPUCAT_DATA_DIR, else your cache folder, e.g. "
        "~/.cache/gpucat)",
    )
    f.add_argument(
        "--force",
        action="store_true",
        help="download anew even when verified copies are there (a good copy is replaced only "
        "by a verified download)",
    )
    pp = sub.add_parser(
        "prepare",
        help="write a labelled image folder (decoded once, in parallel) or an h5 in any layout "
        "as the h5 that streams fastest (contiguous, uncompressed)",
    )
    pp.set_defaults(run=prepare)
    pp.add_argument(
        "source",
        metavar="FOLDER_OR_H5",
        help="a folder with cat/ and non-cat/ subfolders of images, or an .h5 file",
    )
    pp.add_argument("--out", required=True, help="the .h5 file to write (atomically)")
    pp.add_argument("--jobs", type=int, default=None, help="processes (default: one per core)")


def fetch(args: argparse.Namespace) -> None:
    import os

    from gpucat.data.course import TEST_FILE, TRAIN_FILE
    from gpucat.data.fetch import fetch_data

    folder, done = fetch_data(args.data_dir or os.environ.get("GPUCAT_DATA_DIR"), force=args.force)
    for name, what in zip((TRAIN_FILE, TEST_FILE), done):
        print(f"{folder / name}: {what} (SHA-256 checked)")
    if "downloaded" not in done:
        print("Both files were there and verified; --force downloads them anew.")
    print(f"Train on them with: gpucat train --data-dir {folder}")


def prepare(args: argparse.Namespace) -> None:
    from gpucat.data.prepare import prepare

    if args.jobs is not None and args.jobs < 1:
        raise GpucatError(f"--jobs must be at least 1, got {args.jobs}.")
    t = time.perf_counter()
    m = prepare(args.source, args.out, args.jobs)
    seconds = time.perf_counter() - t
    print(f"Prepared {m} images from {args.source} into {args.out} in {seconds:.1f} s")
