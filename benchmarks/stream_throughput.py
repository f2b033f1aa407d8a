#!/usr/bin/env python3
"""Images per second of mini-batch Adam training streamed from a big h5 file: gpucat (its
iterations alone, through the solver_for hook) against PyTorch eager with a DataLoader over
the same file (a map-style dataset of single images, batches of 256 collated by one worker
process, two batches ahead), alternating whole processes after a warm-up; medians.

    python benchmarks/stream_throughput.py BIG.h5 [--steps 300] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

import gpucat

from _common import STREAM_RECIPE, finish, parser, restart_unpinned

HERE = str(Path(__file__).resolve())


def gpucat_throughput(path: str, steps: int, batch: int) -> float:
    """Images per second of gpucat's mini-batch Adam step, streamed from the file."""
    from gpucat.data.streaming import H5Source
    from gpucat.training.loop import solver_for

    config = gpucat.TrainConfig(**{**STREAM_RECIPE, "batch_size": batch})
    solver = solver_for(gpucat.device("cpu"), config, H5Source(path))[0]
    for i in range(5):
        solver.step(i)
    t = time.perf_counter()
    for i in range(5, 5 + steps):
        solver.step(i)
    seconds = time.perf_counter() - t
    solver.close()
    return steps * batch / seconds


def torch_throughput(path: str, steps: int, batch: int) -> float:
    """Images per second of PyTorch eager Adam training from a DataLoader over the file."""
    import h5py
    import torch
    from torch.utils.data import DataLoader, Dataset

    from gpucat.nn.network import init_params

    class Images(Dataset):  # the usual map-style dataset: one example per item
        def __init__(self, path):
            self.path, self.file = path, None
            with h5py.File(path) as f:
                self.y = torch.as_tensor(f["train_set_y"][()], dtype=torch.float32)

        def __len__(self):
            return len(self.y)

        def __getitem__(self, i):
            if self.file is None:  # opened in the worker process
                self.file = h5py.File(self.path, "r")
            return torch.from_numpy(self.file["train_set_x"][i].reshape(-1)), self.y[i]

    data = Images(path)
    loader = DataLoader(
        data,
        batch_size=batch,
        shuffle=True,
        drop_last=True,
        num_workers=1,
        prefetch_factor=2,
        persistent_workers=True,
        generator=torch.Generator().manual_seed(1),
    )
    mods = []
    for W, b in init_params([12288, 20, 7, 5, 1], 1):
        lin = torch.nn.Linear(W.shape[1], W.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(W))
            lin.bias.copy_(torch.as_tensor(b.ravel()))
        mods += [lin, torch.nn.ReLU()]
    model = torch.nn.Sequential(*mods[:-1])
    opt = torch.optim.Adam(model.parameters(), lr=0.0005)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    it = iter(loader)

    def step():
        x, y = next(it)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x.float() / 255.0)[:, 0], y).backward()
        opt.step()

    for _ in range(5):
        step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * batch / (time.perf_counter() - t)


def throughput(args) -> dict:
    def one(which: str) -> float:
        cmd = [sys.executable, HERE, args.file, "--child", which]
        cmd += ["--steps", str(args.steps), "--batch", str(args.batch)]
        return float(
            subprocess.run(cmd, capture_output=True, text=True, check=True)
            .stdout.strip()
            .splitlines()[-1]
        )

    g, t = [], []
    for _ in range(args.runs):  # alternating whole processes: A B A B ...
        g.append(one("gpucat"))
        t.append(one("torch"))
        print(f"gpucat {g[-1]:.0f} img/s, torch {t[-1]:.0f} img/s", file=sys.stderr, flush=True)
    return {
        "file": args.file,
        "batch": args.batch,
        "steps": args.steps,
        "gpucat_images_per_s": g,
        "torch_images_per_s": t,
        "gpucat_median": statistics.median(g),
        "torch_median": statistics.median(t),
        "ratio_gpucat_over_torch": statistics.median(a / b for a, b in zip(g, t)),
    }


def main() -> None:
    p = parser(__doc__)
    p.add_argument("file")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", default=None, help="write the JSON here too")
    # one side's run, in a process of its own
    p.add_argument("--child", choices=("gpucat", "torch"), help=argparse.SUPPRESS)
    args = p.parse_args()
    restart_unpinned()
    if args.child:
        run = gpucat_throughput if args.child == "gpucat" else torch_throughput
        print(run(args.file, args.steps, args.batch))
        return
    finish(throughput(args), args.out)


if __name__ == "__main__":
    main()
