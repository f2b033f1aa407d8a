#!/usr/bin/env python3
"""One epoch from a big h5 file in a child process: images per second, the share of the time
spent waiting for data, peak resident memory; beside the disk's read rate (the whole file
read in order, cold, through the page cache and with O_DIRECT: the faster) and the compute
rate (the same steps on 20,000 of its images held in memory). The child times the
iterations alone through the solver_for hook.

    python benchmarks/stream_epoch.py BIG.h5
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import sys
import time
from pathlib import Path

import numpy as np

import gpucat
from gpucat.data.dataset import Dataset
from gpucat.data.streaming import H5Source
from gpucat.training.loop import solver_for

from _common import (
    STREAM_RECIPE,
    drop_from_page_cache,
    finish,
    in_child,
    parser,
    restart_unpinned,
    step_ms,
)

HERE = str(Path(__file__).resolve())


def epoch_child(path: str) -> dict:
    """One epoch streamed from the file: its rate and the share of time waiting for data
    (in the shard's batch(): the prefetched batch not ready yet)."""
    config = gpucat.TrainConfig(**STREAM_RECIPE)
    solver = solver_for(gpucat.device("cpu"), config, H5Source(path))[0]
    shard, waited = solver.shard, [0.0]
    batch = shard.batch

    def timed(local):
        t = time.perf_counter()
        out = batch(local)
        waited[0] += time.perf_counter() - t
        return out

    shard.batch = timed
    t = time.perf_counter()
    for i in range(solver.batches.per_epoch):
        solver.step(i)
    seconds = time.perf_counter() - t
    return {
        "images": solver.M,  # the examples it trains on
        "seconds": seconds,
        "images_per_s": solver.M / seconds,
        "waiting_share": waited[0] / seconds,
    }


def epoch(args) -> dict:
    source = H5Source(args.file)
    rates = {}
    for how in ("page cache", "O_DIRECT"):  # the file read whole in order, 64 MB a call
        drop_from_page_cache(args.file)
        fd = os.open(args.file, os.O_RDONLY | (os.O_DIRECT if how == "O_DIRECT" else 0))
        buf, n, t = mmap.mmap(-1, 64 << 20), 0, time.perf_counter()  # page-aligned
        while k := os.preadv(fd, [buf], n):
            n += k
            if k < len(buf):  # the end (past it, O_DIRECT may refuse the unaligned offset)
                break
        os.close(fd)
        rates[how] = source.n_examples / (time.perf_counter() - t)  # images/s
    disk = max(rates.values())  # what the disk allows
    rows, y = source.read(np.arange(min(20000, source.n_examples)))
    compute = 256e3 / step_ms(Dataset.from_arrays(rows, y, "in memory"), 200)
    del rows
    drop_from_page_cache(args.file)
    doc, peak = in_child([sys.executable, HERE, args.file, "--child"])
    bound = min(disk, compute)
    return {
        "file": args.file,
        "bytes": n,
        "disk_images_per_s": disk,
        "disk_images_per_s_by_read": rates,
        "compute_images_per_s": compute,
        **doc,
        "peak_rss_gib": peak,
        "limit": "disk" if disk < compute else "compute",
        "fraction_of_limit": doc["images_per_s"] / bound,
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("file")
    p.add_argument("--out", default=None, help="write the JSON here too")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)  # the timed epoch
    args = p.parse_args()
    restart_unpinned()
    if args.child:
        print(json.dumps(epoch_child(args.file)))
        return
    finish(epoch(args), args.out)


if __name__ == "__main__":
    main()
