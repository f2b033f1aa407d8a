#!/usr/bin/env python3
"""Data bigger than memory: the figures of docs/performance.md, "Streaming".

    python scripts/big_data.py make OUT.h5 [--images 100000] [--layout contiguous]
        A course-layout h5 of uint8 images made from the 209 course training images
        (random shifts, mirror images, brightness and noise; labels kept), stored
        contiguous (as `gpucat prepare` writes it), one image a chunk, or gzip-compressed
        64 images a chunk: 100,000 images are 1.23 GB uncompressed.
    python scripts/big_data.py steps MEMORY.h5 FILE.h5 ... [--steps 200] [--rounds 3]
        Steady-state ms per mini-batch Adam step (batch 256, float32) with MEMORY.h5 read
        whole into memory and streamed from each FILE, alternating, after a warm-up.
    python scripts/big_data.py memory BIG.h5 [--iterations 300] [--log-every 50]
        `gpucat train --train BIG.h5` (mini-batch Adam) in a child process: its peak resident
        memory and training time, against the same steps with the file in memory.
    python scripts/big_data.py throughput BIG.h5 [--steps 300] [--runs 3]
        Images per second of that training streamed from the file: gpucat against PyTorch
        eager with a DataLoader over the same file (a map-style dataset of single images,
        batches of 256 collated by one worker process, two batches ahead), alternating
        whole processes after a warm-up; medians.
    python scripts/big_data.py epoch BIG.h5
        One epoch from the file in a child process: images per second, the share of the time
        spent waiting for data, peak resident memory; beside the disk's read rate (the whole
        file read in order, cold, through the page cache and with O_DIRECT: the faster) and
        the compute rate (the same steps on 20,000 of its images held in memory).
    python scripts/big_data.py prepare-speed [--images 600] [--runs 3]
        `gpucat prepare` of a folder of JPEG photos (640x480) with --jobs 1 and --jobs 2,
        alternating; medians and the speed-up.

Each prints one JSON object last. OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are removed first.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import ROOT, machine_info, restart_unpinned

HERE = str(Path(__file__).resolve())


LAYOUTS = {
    "contiguous": {},
    "chunk1": {"chunks": (1, 64, 64, 3)},
    "gzip64": {"chunks": (64, 64, 64, 3), "compression": "gzip"},
}


def make(args) -> dict:
    import h5py

    from gpucat.data.course import load_course_data

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
            src = rng.integers(0, train.m, k)
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


RECIPE = dict(batch_size=256, optimizer="adam", learning_rate=0.0005, dtype="float32")


def step_ms(source, steps: int, warmup: int = 20) -> float:
    """ms per mini-batch step of a solver over the source, after a warm-up."""
    from gpucat.backends import get_device
    from gpucat.config import TrainConfig
    from gpucat.training.loop import solver_for

    solver = solver_for(get_device("cpu"), TrainConfig(**RECIPE), source)[0]
    for i in range(warmup):
        solver.step(i)
    t = time.perf_counter()
    for i in range(warmup, warmup + steps):
        solver.step(i)
    ms = 1000 * (time.perf_counter() - t) / steps
    solver.close()
    return ms


def steps(args) -> dict:
    from gpucat.data.h5 import load_h5
    from gpucat.data.streaming import H5Source

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
        "recipe": RECIPE,
        "ms_per_step": times,
        "median_ms": med,
        "over_memory": {f: med[f] / med["memory"] for f in files},
        "layouts": {f: source.storage[0] for f, source in files.items()},
    }


def in_child(argv: list[str]) -> tuple[dict, float]:
    """Run argv in a child process: (the JSON of its last line, its peak RSS in GiB)."""
    code = (
        "import json, resource, subprocess, sys\n"
        "p = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'rc': p.returncode, 'peak_kib': peak, 'out': p.stdout, 'err': p.stderr[-2000:]}))\n"
    )
    run = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True)
    r = json.loads(run.stdout)
    if r["rc"] != 0:
        raise SystemExit(r["err"])
    return json.loads(r["out"].strip().splitlines()[-1]), r["peak_kib"] / 2**20


def memory(args) -> dict:
    from gpucat.backends import get_device
    from gpucat.config import TrainConfig
    from gpucat.data.h5 import load_h5
    from gpucat.training.loop import fit

    cmd = [
        sys.executable, "-m", "gpucat", "train", "--train", args.file, "--batch-size", "256",
        "--dtype", "float32", "--device", "cpu", "--iterations", str(args.iterations),
        "--log-every", str(args.log_every), "--optimizer", "adam", "--learning-rate", "0.0005",
        "--json",
    ]  # fmt: skip
    config = TrainConfig(**RECIPE, iterations=args.iterations, log_every=args.log_every)
    whole = load_h5(args.file)
    streamed, in_memory, peaks = [], [], []
    for _ in range(args.runs):  # alternating: the streamed run in a child, then from memory
        doc, peak = in_child(cmd)
        streamed.append(doc["seconds"])
        peaks.append(peak)
        in_memory.append(fit(get_device("cpu"), config, whole).seconds)
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


def epoch_child(path: str) -> dict:
    """One epoch streamed from the file: its rate and the share of time waiting for data
    (in the shard's batch(): the prefetched batch not ready yet)."""
    from gpucat.backends import get_device
    from gpucat.config import TrainConfig
    from gpucat.data.streaming import H5Source
    from gpucat.training.loop import solver_for

    solver = solver_for(get_device("cpu"), TrainConfig(**RECIPE), H5Source(path))[0]
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
        "images": solver.M,
        "seconds": seconds,
        "images_per_s": solver.M / seconds,
        "waiting_share": waited[0] / seconds,
    }


def drop_from_page_cache(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)


def epoch(args) -> dict:
    from gpucat.data.dataset import Dataset
    from gpucat.data.streaming import H5Source

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
        rates[how] = source.n / (time.perf_counter() - t)  # images/s
    disk = max(rates.values())  # what the disk allows
    rows, y = source.read(np.arange(min(20000, source.n)))
    compute = 256e3 / step_ms(Dataset(rows, y.reshape(1, -1), "in memory"), 200)
    del rows
    drop_from_page_cache(args.file)
    doc, peak = in_child([sys.executable, HERE, "child-epoch", args.file])
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


def gpucat_throughput(path: str, steps: int, batch: int) -> float:
    """Images per second of gpucat's mini-batch Adam step, streamed from the file."""
    from gpucat.backends import get_device
    from gpucat.config import TrainConfig
    from gpucat.data.streaming import H5Source
    from gpucat.training.loop import solver_for

    config = TrainConfig(batch_size=batch, optimizer="adam", learning_rate=0.0005, dtype="float32")
    solver = solver_for(get_device("cpu"), config, H5Source(path))[0]
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
        cmd = [sys.executable, HERE, "child-throughput", which, args.file]
        cmd += [str(args.steps), str(args.batch)]
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
    m.add_argument("--layout", default="contiguous", choices=sorted(LAYOUTS))
    st = sub.add_parser("steps")
    st.add_argument("memory", help="the h5 to read whole into memory")
    st.add_argument("files", nargs="+", help="h5 files to stream from")
    st.add_argument("--steps", type=int, default=200)
    st.add_argument("--rounds", type=int, default=3)
    r = sub.add_parser("memory")
    r.add_argument("file")
    r.add_argument("--iterations", type=int, default=300)
    r.add_argument("--log-every", type=int, default=50)
    r.add_argument("--runs", type=int, default=3)
    e = sub.add_parser("epoch")
    e.add_argument("file")
    t = sub.add_parser("throughput")
    t.add_argument("file")
    t.add_argument("--steps", type=int, default=300)
    t.add_argument("--batch", type=int, default=256)
    t.add_argument("--runs", type=int, default=3)
    s = sub.add_parser("prepare-speed")
    s.add_argument("--images", type=int, default=600)
    s.add_argument("--runs", type=int, default=3)
    # what the commands above run in a child process of their own (not for direct use)
    ce = sub.add_parser("child-epoch", help=argparse.SUPPRESS)
    ce.add_argument("file")
    ct = sub.add_parser("child-throughput", help=argparse.SUPPRESS)
    ct.add_argument("which", choices=("gpucat", "torch"))
    ct.add_argument("file")
    ct.add_argument("steps", type=int)
    ct.add_argument("batch", type=int)
    args = p.parse_args()
    restart_unpinned()
    if args.cmd == "child-epoch":
        print(json.dumps(epoch_child(args.file)))
        return
    if args.cmd == "child-throughput":
        run = gpucat_throughput if args.which == "gpucat" else torch_throughput
        print(run(args.file, args.steps, args.batch))
        return
    commands = {"make": make, "steps": steps, "memory": memory, "epoch": epoch}
    commands.update({"throughput": throughput, "prepare-speed": prepare_speed})
    doc = commands[args.cmd](args)
    print(json.dumps({**doc, "machine": machine_info()}))


if __name__ == "__main__":
    main()
