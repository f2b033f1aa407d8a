#!/usr/bin/env python3
"""`gpucat train --train BIG.h5` (mini-batch Adam) in a child process: its peak resident
memory and training time, against the same steps with the file in memory (the public
train_model on the file read whole), alternating.

    python benchmarks/stream_memory.py BIG.h5 [--iterations 300] [--log-every 50]
"""

from __future__ import annotations

import statistics
import sys

import gpucat

from _common import STREAM_RECIPE, finish, in_child, parser, restart_unpinned


def memory(args) -> dict:
    cmd = [
        sys.executable, "-m", "gpucat", "train", "--train", args.file, "--batch-size", "256",
        "--dtype", "float32", "--device", "cpu", "--iterations", str(args.iterations),
        "--log-every", str(args.log_every), "--optimizer", "adam", "--learning-rate", "0.0005",
        "--json",
    ]  # fmt: skip
    recipe = dict(**STREAM_RECIPE, iterations=args.iterations, log_every=args.log_every)
    streamed, in_memory, peaks = [], [], []
    for _ in range(args.runs):  # alternating: the streamed run in a child, then from memory
        doc, peak = in_child(cmd)
        streamed.append(doc["seconds"])
        peaks.append(peak)
        whole = gpucat.train_model(args.file, device="cpu", **recipe)  # read whole
        in_memory.append(whole.metadata["result"]["seconds"])
        print(f"streamed {streamed[-1]:.2f} s, memory {in_memory[-1]:.2f} s", file=sys.stderr)
    return {
        "file": args.file,
        "command": " ".join(cmd[2:]),
        "peak_rss_gib": max(peaks),
        "costs": doc["costs"],
        "cost_kind": doc["cost_kind"],
        "streamed_seconds": streamed,
        "memory_seconds": in_memory,
        "streamed_over_memory": statistics.median(streamed) / statistics.median(in_memory),
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("file")
    p.add_argument("--iterations", type=int, default=300)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default=None, help="write the JSON here too")
    args = p.parse_args()
    restart_unpinned()
    finish(memory(args), args.out)


if __name__ == "__main__":
    main()
