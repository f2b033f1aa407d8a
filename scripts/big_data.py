#!/usr/bin/env python3
"""Data bigger than memory: the figures of docs/benchmarks.md, "Data bigger than memory".

    python scripts/big_data.py make OUT.h5 [--images 100000]
        A course-layout h5 of uint8 images made from the 209 course training images
        (random shifts, mirror images, brightness and noise; labels kept), chunked one image
        per chunk as `gpucat prepare` writes it: 100,000 images are 1.23 GB.
    python scripts/big_data.py memory BIG.h5 [--iterations 1000]
        `gpucat train --train BIG.h5 --batch-size 256 --dtype float32 --device cpu` in a
        child process: its peak resident memory (ru_maxrss) and its logged costs.
    python scripts/big_data.py throughput BIG.h5 [--steps 300] [--runs 3]
        Images per second of mini-batch Adam training (batch 256, float32) streamed from the
        file: gpucat (its streamed shard with a prefetch thread) against PyTorch eager with
        a DataLoader over the same file (a map-style dataset of single images, batches of
        256 collated by one worker process, two batches ahead), alternating,
        after a warm-up; medians.
    python scripts/big_data.py prepare-speed [--images 600] [--runs 3]
        `gpucat prepare` of a folder of JPEG photos (640x480) with --jobs 1 and --jobs 2,
        alternating; medians and the speed-up.

Each prints one JSON object last. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed first.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BLAS_PINS = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")


def machine() -> dict:
    sys.path.insert(0, str(ROOT / "scripts"))
    from benchmark import machine_info

    return machine_info()


def make(args) -> dict:
    import h5py

    from gpucat.data import load_course_data

    train, _ = load_course_data()
    rng = np.random.default_rng(0)
    out = Path(args.out)
    tmp = out.with_name(f".{out.name}.tmp")
    block = 2000
    with h5py.File(tmp, "w") as f:
        x = f.create_dataset(
            "train_set_x", (args.images, 64, 64, 3), np.uint8, chunks=(1, 64, 64, 3)
        )
        y = np.empty(args.images, np.int64)
        for a in range(0, args.images, block):
            k = min(block, args.images - a)
            src = rng.integers(0, train.m, k)
            imgs = train.images[src].astype(np.int16)
            for j in range(k):  # shift by up to 4 pixels, mirror half of them
                dy, dx = rng.integers(-4, 5, 2)
                imgs[j] = np.roll(imgs[j], (dy, dx), axis=(0, 1))
                if rng.random() < 0.5:
                    imgs[j] = imgs[j, :, ::-1]
            imgs = imgs * rng.uniform(0.8, 1.2, (k, 1, 1, 1)) + rng.normal(0, 6, imgs.shape)
            x[a : a + k] = np.clip(imgs, 0, 255).astype(np.uint8)
            y[a : a + k] = train.Y[0, src]
        f["train_set_y"] = y
        f["list_classes"] = np.array([b"non-cat", b"cat"])
    os.replace(tmp, out)
    return {"file": str(out), "images": args.images, "bytes": out.stat().st_size}


def memory(args) -> dict:
    code = (
        "import json, resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'rc': p.returncode, 'peak_kib': peak, 'out': p.stdout, 'err': p.stderr[-2000:]}))\n"
    )
    cmd = [
        sys.executable, "-m", "gpucat", "train", "--train", args.file, "--batch-size", "256",
        "--dtype", "float32", "--device", "cpu", "--iterations", str(args.iterations),
        "--log-every", str(args.log_every), "--optimizer", "adam", "--learning-rate", "0.0005",
        "--json",
    ]  # fmt: skip
    t = time.perf_counter()
    r = json.loads(
        subprocess.run(
            [sys.executable, "-c", code, *cmd], capture_output=True, text=True, check=True
        ).stdout
    )
    wall = time.perf_counter() - t
    if r["rc"] != 0:
        raise SystemExit(r["err"])
    doc = json.loads(r["out"].strip().splitlines()[-1])
    costs = [c for _, c in doc["costs"]]
    return {
        "file": args.file,
        "command": " ".join(cmd[2:]),
        "peak_rss_gib": r["peak_kib"] / 2**20,
        "costs": doc["costs"],
        "cost_falling": costs[-1] < costs[0],
        "train_accuracy": doc["train_accuracy"],
        "training_seconds": doc["seconds"],
        "wall_seconds": wall,
    }


def gpucat_throughput(path: str, steps: int, batch: int) -> float:
    """Images per second of gpucat's mini-batch Adam step, streamed from the file."""
    from gpucat.backend import get_backend
    from gpucat.config import TrainConfig
    from gpucat.data import H5Source
    from gpucat.train import solver_for

    config = TrainConfig(batch_size=batch, optimizer="adam", learning_rate=0.0005, dtype="float32")
    solver = solver_for(get_backend("cpu"), config, H5Source(path))[0]
    for i in range(5):
        solver.step(i)
    t = time.perf_counter()
    for i in range(5, 5 + steps):
        solver.step(i)
    seconds = time.perf_counter() - t
    solver.shard.close()
    return steps * batch / seconds


def torch_throughput(path: str, steps: int, batch: int) -> float:
    """Images per second of PyTorch eager Adam training from a DataLoader over the file."""
    import h5py
    import torch
    from torch.utils.data import DataLoader, Dataset

    from gpucat.network import init_params

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
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT / 'scripts')!r}); import big_data; "
            f"print(big_data.{which}_throughput({args.file!r}, {args.steps}, {args.batch}))"
        )
        return float(
            subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
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
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("make")
    m.add_argument("out")
    m.add_argument("--images", type=int, default=100_000)
    r = sub.add_parser("memory")
    r.add_argument("file")
    r.add_argument("--iterations", type=int, default=1000)
    r.add_argument("--log-every", type=int, default=250)
    t = sub.add_parser("throughput")
    t.add_argument("file")
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--runs", type=int, default=3)
    s = sub.add_parser("prepare-speed")
    s.add_argument("--images", type=int, default=600)
    s.add_argument("--runs", type=int, default=3)
    args = p.parse_args()
    if any(k in os.environ for k in BLAS_PINS):
        os.execve(
            sys.executable,
            [sys.executable, *sys.argv],
            {k: v for k, v in os.environ.items() if k not in BLAS_PINS},
        )
    doc = {
        "make": make,
        "memory": memory,
        "throughput": throughput,
        "prepare-speed": prepare_speed,
    }[args.cmd](args)
    print(json.dumps({**doc, "machine": machine()}))


if __name__ == "__main__":
    main()
