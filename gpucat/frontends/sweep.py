"""Comparing devices where it matters: the training step's time over data sizes and widths,
its achieved GFLOP/s against each device's own peak, and the example count from which a GPU
pays (`gpucat compare --sweep`, ``gpucat.sweep_devices``).

Each row times the step `gpucat train` would run (the solver its rules choose for that
size) on synthetic data of the course's shape: uint8 pixels, never zeros, divided by 255 on
the device. A size is set up once, warmed up, then its iterations are timed one by one, the
device synchronized around each; a row's figure is their median. The work of an iteration
is counted from the layer sizes (``work``): its matrix products, the floating-point
operations of every other step being of a lower order. Each device's peak is measured in
the same run: a large GEMM in each dtype and a large copy, medians after warm-up.
"""

from __future__ import annotations

import datetime
import platform
import statistics
import time
from collections.abc import Callable, Sequence

import numpy as np

from gpucat.config import REFERENCE_LAYERS, TrainConfig
from gpucat.errors import GpucatError
from gpucat.frontends.compare import BOTH

COLUMNS = (
    "device", "backend", "dtype", "solver", "examples", "width", "layers", "ms_per_iteration",
    "gflops", "peak_gflops", "peak_gbps", "fraction_of_peak",
)  # fmt: skip
START = (209, 2000, 20000)  # the default sizes begin here, and go on by tens
SIZE_SECONDS = 20.0  # the default sizes stop before one whose set-up and steps would take longer
DISTINCT = 2048  # synthetic examples drawn; a larger size repeats them (timing cares not)


def work(layers: Sequence[int], batch: int, solver: str = "direct", examples: int = 0) -> int:
    """Floating-point operations of one iteration's matrix products on ``batch`` examples:
    in each layer Z = W·A (2·n_l·n_(l-1) per example) and dW = dZ·A_prevᵀ (as many), and
    beyond the first layer dA_prev = Wᵀ·dZ too. The Gram solver forms Z1 = C·G instead
    (C: n_1 × M over all M ``examples``) and no first-layer dW."""
    n = list(layers)
    deeper = sum(6 * a * b for a, b in zip(n[1:-1], n[2:]))
    if solver == "gram":
        first = 2 * n[1] * examples
    else:
        first = 4 * n[0] * n[1]
    return (first + deeper) * batch


def crossover(rows: list[dict]) -> dict[str, int | None]:
    """Per dtype, the smallest example count from which another device's step beats the
    first device's (the host's: devices are listed host first) at every larger size
    measured; None where none does, or where one device ran. Rows of the first width."""
    out: dict[str, int | None] = {}
    if not rows:
        return out
    width, first = rows[0]["width"], rows[0]["device"]
    for dtype in dict.fromkeys(r["dtype"] for r in rows):
        mine = [r for r in rows if r["dtype"] == dtype and r["width"] == width]
        host = {r["examples"]: r["ms_per_iteration"] for r in mine if r["device"] == first}
        found = None
        for other in dict.fromkeys(r["device"] for r in mine if r["device"] != first):
            theirs = {r["examples"]: r["ms_per_iteration"] for r in mine if r["device"] == other}
            sizes = sorted(set(host) & set(theirs))
            since = None
            for m in sizes:
                since = (m if since is None else since) if theirs[m] < host[m] else None
            if since is not None and (found is None or since < found):
                found = since
        out[dtype] = found
    return out


def timed(step: Callable[[], object], sync: Callable[[], None], repeats: int, warmup: int = 1):
    """Median seconds of ``step`` over ``repeats`` runs after ``warmup``, synchronized."""
    for _ in range(warmup):
        step()
    sync()
    samples = []
    for _ in range(repeats):
        t = time.perf_counter()
        step()
        sync()
        samples.append(time.perf_counter() - t)
    return statistics.median(samples)


def peaks(device, dtype: str, repeats: int = 3) -> tuple[float, float]:
    """(GFLOP/s of a large n × n GEMM in ``dtype``, GB/s of a large copy: bytes read and
    written) on ``device``: n doubled from 256 until a product takes 50 ms, the copy from
    1 MiB until it takes 20 ms, each as long as its arrays take at most a quarter of the
    free memory; random numbers, never zeros."""
    rng = np.random.default_rng(0)
    room, itemsize = device.free_memory() // 4, np.dtype(dtype).itemsize
    n = 256
    while True:
        A = device.asarray(rng.random((n, n)) + 0.5, dtype)
        B = device.asarray(rng.random((n, n)) + 0.5, dtype)
        seconds = timed(lambda A=A, B=B: device.matmul(A, B), device.synchronize, repeats)
        if seconds >= 0.05 or 3 * (2 * n) ** 2 * itemsize > room:
            break
        n *= 2
    gflops = 2 * n**3 / seconds / 1e9
    del A, B
    size = 2**20
    while True:
        x = device.asarray(rng.random(size // 8) + 0.5, "float64")
        seconds = timed(lambda x=x: device.copy(x), device.synchronize, repeats)
        if seconds >= 0.02 or 4 * size > room:
            break
        size *= 2
    return gflops, 2 * size / seconds / 1e9


def synthetic(m: int, n_x: int, seed: int = 0):
    """m examples of n_x uint8 pixels (1..255: never zeros) and their labels: DISTINCT
    examples drawn, repeated to m."""
    from gpucat.data.dataset import Dataset

    rng = np.random.default_rng(seed)
    k = min(m, DISTINCT)
    rows = np.resize(rng.integers(1, 256, (k, n_x), dtype=np.uint8), (m, n_x))
    Y = np.resize(rng.random(k) < 0.35, m).astype(np.float64).reshape(1, m)
    return Dataset(rows, Y, f"synthetic ({m} examples)")


def time_size(device, config: TrainConfig, data, iterations: int) -> tuple[str, float, float]:
    """(the solver the run would choose, median seconds of an iteration, seconds in all,
    set-up included) of ``config`` on ``data``."""
    from gpucat.training.loop import solver_for

    started = time.perf_counter()
    solver = solver_for(device, config, data)[0]
    try:
        steps = iter(range(10**9))
        seconds = timed(lambda: solver.step(next(steps)), device.synchronize, iterations)
    finally:
        solver.close()
    return solver.name, seconds, time.perf_counter() - started


def machine() -> dict:
    """What the figures were measured on."""
    from gpucat.backends import available_devices, cpu_label
    from gpucat.frontends.info import blas

    libraries = [f"{b['library']} {b.get('version')} ({b.get('threads')} threads)" for b in blas()]
    return {
        "date": datetime.date.today().isoformat(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "cpu": cpu_label(),
        "blas": libraries,
        "devices": [d.label for d in available_devices()],
    }


def sweep(
    examples: Sequence[int] | None = None,
    widths: Sequence[int] | None = None,
    dtypes: Sequence[str] = BOTH,
    iterations: int = 5,
    devices: Sequence | None = None,
    on_row: Callable[[dict], None] | None = None,
    on_note: Callable[[str], None] | None = None,
) -> dict:
    """Time the training step on every device (default: every usable one) and dtype, at
    each example count and hidden width (the reference network with that first hidden
    width; default: the reference's, 20). Without
    ``examples``: 209, 2000, 20000, then ten times more each, up to the first that would
    not fit a device's memory or would take more than SIZE_SECONDS there. A size that does
    not fit is skipped with a note (``on_note``), never run out of memory. Returns
    ``{"rows": [...], "crossover": {dtype: examples or None}, "notes": [...],
    "machine": {...}}``; ``on_row(row)`` is called as each row is measured."""
    from gpucat.backends import available_devices

    widths = list(widths or (REFERENCE_LAYERS[1],))
    check(examples, widths, dtypes, iterations)
    devices = list(devices or available_devices())
    rows: list[dict] = []
    notes: list[str] = []

    def note(line: str) -> None:
        notes.append(line)
        if on_note:
            on_note(line)

    for device in devices:
        for dtype in dtypes:
            peak = peaks(device, dtype)
            for width in widths:
                layers = (REFERENCE_LAYERS[0], width, *REFERENCE_LAYERS[2:])
                for row in _sizes(device, dtype, layers, examples, iterations, peak, note):
                    rows.append(row)
                    if on_row:
                        on_row(row)
    return {"rows": rows, "crossover": crossover(rows), "notes": notes, "machine": machine()}


def _sizes(device, dtype, layers, examples, iterations, peak, note):
    """The rows of one device, dtype and network, size by size: ``examples``, else START
    and ten times more each, up to a size that would take over SIZE_SECONDS at the rate of
    the last one (set-up included); a size that does not fit ends them with a note."""
    from gpucat.backends import memory_available

    sizes, rate, k = list(examples or START), None, 0
    while k < len(sizes):
        m, k = sizes[k], k + 1
        where = f"{device.label}, {dtype}, width {layers[1]}, {m} examples"
        if not examples and rate is not None and rate * m > SIZE_SECONDS:
            note(f"{where}: not run (about {rate * m:.0f} s at this size; --examples asks for it)")
            return
        if m * layers[0] > memory_available():
            note(f"{where}: not run (its uint8 examples would not fit in host memory)")
            return
        config = TrainConfig(layers=layers, dtype=dtype, iterations=iterations)
        try:
            solver, seconds, total = time_size(device, config, synthetic(m, layers[0]), iterations)
        except (GpucatError, MemoryError) as e:  # the memory check, or the device's own
            note(f"{where}: skipped, it does not fit ({str(e).rstrip('.')})")
            return
        rate = total / m
        gflops = work(layers, m, solver, m) / seconds / 1e9
        yield {
            "device": device.label,
            "backend": device.name,
            "dtype": dtype,
            "solver": solver,
            "examples": m,
            "width": layers[1],
            "layers": list(layers),
            "ms_per_iteration": 1000 * seconds,
            "gflops": gflops,
            "peak_gflops": peak[0],
            "peak_gbps": peak[1],
            "fraction_of_peak": gflops / peak[0],
        }
        if not examples and k == len(sizes):
            sizes.append(10 * m)


def check(examples, widths, dtypes, iterations) -> None:
    """One GpucatError naming the first bad value."""
    if examples is not None and (not examples or any(int(m) < 1 for m in examples)):
        raise GpucatError(f"--examples takes whole numbers of at least 1, got {examples}.")
    if not widths or any(int(w) < 1 for w in widths):
        raise GpucatError(f"--widths takes whole numbers of at least 1, got {widths}.")
    if iterations < 1:
        raise GpucatError(f"--iterations must be at least 1 for a sweep, got {iterations}.")
    bad = [d for d in dtypes if d not in BOTH]
    if bad:
        raise GpucatError(f"unknown dtype {bad[0]!r}: choose float32 or float64.")


def table(result: dict) -> str:
    """The rows as a text table, the notes, and the crossover in one sentence."""
    head = (
        f"{'device':40} {'dtype':8} {'solver':7} {'examples':>9} {'width':>6} {'ms/iter':>10} "
        f"{'GFLOP/s':>9} {'peak':>8} {'of peak':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in result["rows"]:
        lines.append(
            f"{r['device'][:40]:40} {r['dtype']:8} {r['solver']:7} {r['examples']:9d} "
            f"{r['width']:6d} {r['ms_per_iteration']:10.3f} {r['gflops']:9.2f} "
            f"{r['peak_gflops']:8.1f} {r['fraction_of_peak']:8.1%}"
        )
    lines += [f"note: {n}" for n in result["notes"]]
    lines.append(sentence(result))
    return "\n".join(lines)


def sentence(result: dict) -> str:
    """The crossover, said once."""
    rows = result["rows"]
    if len({r["device"] for r in rows}) < 2:
        return "crossover: one device measured, nothing to compare."
    first = rows[0]["device"]
    said = []
    for dtype, m in result["crossover"].items():
        if m is None:
            said.append(f"in {dtype} no other device beats {first} at the sizes measured")
        else:
            said.append(f"in {dtype} another device beats {first} from {m} examples on")
    return "crossover: " + "; ".join(said) + "."
