#!/usr/bin/env python3
"""A course-layout h5 of uint8 images for the streaming measurements, made from the 209
course training images (random shifts, mirror images, brightness and noise; labels kept),
stored contiguous (as `gpucat prepare` writes it), one image a chunk, or gzip-compressed 64
images a chunk: 100,000 images are 1.23 GB uncompressed.

    python benchmarks/make_big_h5.py OUT.h5 [--images 100000] [--layout contiguous]
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from gpucat.data.course import load_course_data

from _common import finish, parser, restart_unpinned

LAYOUTS = {
    "contiguous": {},
    "chunk1": {"chunks": (1, 64, 64, 3)},
    "gzip64": {"chunks": (64, 64, 64, 3), "compression": "gzip"},
}


def make(args) -> dict:
    import h5py

    train, _ = load_course_data()
    rng = np.random.default_rng(0)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    block = 2048
    with h5py.File(tmp, "w") as f:
        shape = (args.images, 64, 64, 3)
        x = f.create_dataset("train_set_x", shape, np.uint8, **LAYOUTS[args.layout])
        y = np.empty(args.images, np.int64)
        for a in range(0, args.images, block):
            k = min(block, args.images - a)
            src = rng.integers(0, train.n_examples, k)
            dy, dx = rng.integers(-4, 5, 2)  # one shift a block, a mirror for half of them
            imgs = np.roll(train.images[src], (dy, dx), axis=(1, 2)).astype(np.int16)
            flip = rng.random(k) < 0.5
            imgs[flip] = imgs[flip, :, ::-1]
            imgs = imgs * rng.uniform(0.8, 1.2, (k, 1, 1, 1)) + rng.integers(-8, 9, imgs.shape)
            x[a : a + k] = np.clip(imgs, 0, 255).astype(np.uint8)
            y[a : a + k] = train.Y[0, src]
        f["train_set_y"] = y
        f["list_classes"] = np.array([b"non-cat", b"cat"])
    os.replace(tmp, out)
    return {
        "file": str(out),
        "images": args.images,
        "layout": args.layout,
        "bytes": out.stat().st_size,
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("out")
    p.add_argument("--images", type=int, default=100_000)
    p.add_argument("--layout", default="contiguous", choices=sorted(LAYOUTS))
    args = p.parse_args()
    restart_unpinned()
    finish(make(args), None)


if __name__ == "__main__":
    main()
