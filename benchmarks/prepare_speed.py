#!/usr/bin/env python3
"""`gpucat prepare` of a folder of JPEG photos (640x480, made from the test fixtures' photos)
with --jobs 1 and --jobs 2, alternating whole processes; medians and the speed-up.

    python benchmarks/prepare_speed.py [--images 600] [--runs 3]
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from _common import ROOT, finish, parser, restart_unpinned


def prepare_speed(args) -> dict:
    from PIL import Image

    photos = sorted((ROOT / "tests" / "fixtures" / "photos").iterdir())
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        for k in range(args.images):
            sub = folder / ("cat" if k % 3 == 0 else "non-cat")
            sub.mkdir(parents=True, exist_ok=True)
            with Image.open(photos[k % len(photos)]) as im:
                im = im.convert("RGB")
                w, h = im.size
                left, top = int(rng.integers(0, w // 4)), int(rng.integers(0, h // 4))
                im = im.crop((left, top, left + 3 * w // 4, top + 3 * h // 4)).resize((640, 480))
                im.save(sub / f"{k:05d}.jpg", quality=90)
        times = {1: [], 2: []}
        for _ in range(args.runs):
            for jobs in (1, 2):
                t = time.perf_counter()
                subprocess.run(
                    [sys.executable, "-m", "gpucat", "prepare", str(folder), "--out", str(Path(tmp) / "p.h5"), "--jobs", str(jobs)],
                    check=True, capture_output=True,
                )  # fmt: skip
                times[jobs].append(time.perf_counter() - t)
                print(f"--jobs {jobs}: {times[jobs][-1]:.2f} s", file=sys.stderr, flush=True)
    one, two = statistics.median(times[1]), statistics.median(times[2])
    return {
        "images": args.images,
        "size": "640x480 JPEG",
        "seconds_jobs_1": times[1],
        "seconds_jobs_2": times[2],
        "speedup_2_over_1": one / two,
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--images", type=int, default=600)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default=None, help="write the JSON here too")
    args = p.parse_args()
    restart_unpinned()
    finish(prepare_speed(args), args.out)


if __name__ == "__main__":
    main()
