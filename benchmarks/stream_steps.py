#!/usr/bin/env python3
"""Steady-state ms per mini-batch Adam step (batch 256, float32) with MEMORY.h5 read whole
into memory and streamed from each FILE, alternating, after a warm-up (docs/performance.md,
"Streaming").

    python benchmarks/stream_steps.py MEMORY.h5 FILE.h5 ... [--steps 200] [--rounds 3]
"""

from __future__ import annotations

import statistics
import sys

from gpucat.data.h5 import load_h5
from gpucat.data.streaming import H5Source

from _common import STREAM_RECIPE, finish, parser, restart_unpinned, step_ms


def steps(args) -> dict:
    memory = load_h5(args.memory)
    files = {f: H5Source(f) for f in args.files}
    times = {"memory": [], **{f: [] for f in files}}
    for _ in range(args.rounds):
        times["memory"].append(step_ms(memory, args.steps))
        for f, source in files.items():
            times[f].append(step_ms(source, args.steps))
        print({k: round(v[-1], 2) for k, v in times.items()}, file=sys.stderr, flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "steps": args.steps,
        "recipe": STREAM_RECIPE,
        "ms_per_step": times,
        "median_ms": med,
        "over_memory": {f: med[f] / med["memory"] for f in files},
        "layouts": {f: source.storage[0] for f, source in files.items()},
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("memory", help="the h5 to read whole into memory")
    p.add_argument("files", nargs="+", help="h5 files to stream from")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default=None, help="write the JSON here too")
    args = p.parse_args()
    restart_unpinned()
    finish(steps(args), args.out)


if __name__ == "__main__":
    main()
