"""Data bigger than memory: uint8 h5 streamed from disk with a prefetch thread, `gpucat
prepare` for image folders, blocks for CSV, a progress bar; every path equal to memory's."""

from __future__ import annotations

import json
import os
import sys
import tracemalloc

import h5py
import numpy as np
import pytest
from PIL import Image

from gpucat.backends import get_device
from gpucat.config import TrainConfig
from gpucat.data import batches, h5, shards, streaming
from gpucat.data.dataset import Dataset, Source
from gpucat.data.h5 import load_h5
from gpucat.data.inputs import load_folder, load_input
from gpucat.data.prepare import prepare
from gpucat.data.streaming import H5Source
from gpucat.errors import GpucatError
from gpucat.nn.network import params_to_host
from gpucat.training.loop import fit

from conftest import data_dir, rel_err, run_gpucat

# h5 layouts: how the images lie in the file, and how H5Source reads them (gpucat.data.h5.storage)
LAYOUTS = {
    "contiguous": ({}, "plain"),
    "one image a chunk": ({"chunks": (1, 64, 64, 3)}, "plain"),
    "7 images a chunk": ({"chunks": (7, 64, 64, 3)}, "plain"),
    "gzip, 16 a chunk": ({"chunks": (16, 64, 64, 3), "compression": "gzip"}, "gzip"),
    "gzip + shuffle": (
        {"chunks": (10, 64, 64, 3), "compression": "gzip", "shuffle": True},
        "chunks",
    ),
    "chunks cutting images": ({"chunks": (4, 32, 64, 3)}, "h5py"),
}


def course_h5(path, course_data, copies=1, layout="one image a chunk"):
    """The 209 training images (repeated `copies` times, each copy shifted in brightness so
    no two rows repeat) as a course-layout h5 stored in one of LAYOUTS."""
    train, _ = course_data
    images = np.concatenate(
        [np.clip(train.images.astype(int) + 3 * k, 0, 255).astype(np.uint8) for k in range(copies)]
    )
    with h5py.File(path, "w") as f:
        f.create_dataset("train_set_x", data=images, **LAYOUTS[layout][0])
        f["train_set_y"] = np.tile(train.Y[0].astype(np.int64), copies)
    return path


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_h5_source_reads_every_layout_as_memory_holds_it(tmp_path, course_data, layout):
    """Each layout by its own path (a memory map, gzip chunks inflated by zlib, h5py), any
    selection, repeats and order included, equal to the file read whole."""
    path = course_h5(tmp_path / "c.h5", course_data, copies=2, layout=layout)
    whole, lazy = load_h5(path), H5Source(path)
    assert lazy.storage[0] == LAYOUTS[layout][1]
    assert (
        lazy.chunk_rows
        == whole.chunk_rows
        == (LAYOUTS[layout][0]["chunks"][0] if lazy.storage[0] in ("gzip", "chunks") else 1)
    )
    rng = np.random.default_rng(0)
    for idx in (rng.integers(0, 418, 300), np.arange(17, 80), [417], [7, 6, 5, 5, 4], []):
        rows, y = lazy.read(np.array(idx, dtype=np.int64))
        np.testing.assert_array_equal(rows, whole.rows[idx])
        np.testing.assert_array_equal(y, whole.labels()[idx])


def test_chunk_aware_shuffle_takes_whole_chunks_a_window_at_a_time(monkeypatch):
    """Compressed chunks of 16: every epoch is a permutation in which each chunk's examples
    (mirrored copies included) fall in one window of 4 chunks; a pure function of (seed,
    epoch, layout): the same on every process; data read row by row is shuffled whole, as
    before."""
    monkeypatch.setattr(batches, "WINDOW", 64)
    data = Dataset(np.zeros((300, 12288), np.uint8), np.zeros((1, 300)), "x", chunk_rows=16)
    train = batches.TrainingSet(data, np.arange(3, 298), flip=True)  # as after a split
    M = train.n_examples

    def batches_of(start, stop, chunk_rows=16):
        data.chunk_rows = chunk_rows
        shard = shards.DeviceShard(
            get_device("cpu"),
            batches.TrainingSet(data, train.source_rows, True),
            start,
            stop,
            "float32",
            False,
            False,
        )
        return batches.Batches(shard, M, 50, seed=3)

    one, other = batches_of(0, M), batches_of(200, M)
    chunk = train.source_rows[np.arange(M) % train.source_rows.size] // 16
    for epoch in range(3):
        order = one.order(epoch)
        np.testing.assert_array_equal(np.sort(order), np.arange(M))
        np.testing.assert_array_equal(order, other.order(epoch))
        left = {c: n for c, n in zip(*np.unique(chunk, return_counts=True))}
        window: set = set()
        for c in chunk[order].tolist():  # a new window opens only when this one is used up
            if c not in window:
                assert len(window) < 4 or all(left[w] == 0 for w in window)
                window = {c} if len(window) == 4 else window | {c}
            left[c] -= 1
    assert not np.array_equal(one.order(0), one.order(1))
    whole = batches_of(0, M, chunk_rows=1).order(2)
    np.testing.assert_array_equal(whole, batches.host_rng(3, batches.SHUFFLE, 2).permutation(M))


def test_gzip_chunks_are_decompressed_once_an_epoch(tmp_path, course_data, monkeypatch):
    """The sampler takes a chunk's examples within one window and the source decodes the next
    windows ahead: over 3 epochs no chunk is decompressed more than once an epoch."""
    monkeypatch.setattr(batches, "WINDOW", 64)
    source = H5Source(
        course_h5(tmp_path / "g.h5", course_data, copies=4, layout="gzip, 16 a chunk")
    )
    decoded = []
    real = source._decode
    monkeypatch.setattr(source, "_decode", lambda c: decoded.append(c) or real(c))
    source.capacity = 1  # the shard sizes the cache: 4 windows of 4 chunks, of 53
    cfg = TrainConfig(
        layers=(12288, 4, 1), iterations=3 * 17, batch_size=50, log_every=50, dtype="float32"
    )
    result = fit(get_device("cpu"), cfg, source)  # 836 examples: 17 batches an epoch
    assert result.costs[-1][1] < result.costs[0][1]
    chunks = -(-836 // 16)
    assert set(decoded) == set(range(chunks))
    assert len(decoded) <= 3 * chunks + 2 * 4  # + the next epoch's first two windows, ahead
    per_chunk = [decoded.count(c) for c in range(chunks)]
    assert max(per_chunk) <= 4 and sorted(per_chunk)[-9] <= 3  # 4: only those 8 chunks


def test_h5_source_reads_any_selection_in_order(tmp_path, course_data):
    path = course_h5(tmp_path / "c.h5", course_data)
    whole, lazy = load_h5(path), H5Source(path)
    assert (lazy.n_examples, lazy.n_features) == (209, 12288)
    np.testing.assert_array_equal(lazy.labels(), whole.labels())
    for idx in ([5, 3, 3, 200, 0], list(range(17, 80)), [208], [7, 6, 5, 4]):
        rows, y = lazy.read(np.array(idx))
        np.testing.assert_array_equal(rows, whole.rows[idx])
        np.testing.assert_array_equal(y, whole.labels()[idx])


OPTIONS = [
    dict(batch_size=32),
    dict(batch_size=50, optimizer="adam", learning_rate=0.002, keep_prob=0.8, flip=True),
    dict(batch_size=40, validation=0.2, patience=4, l2=0.3, log_every=4),
]


@pytest.mark.parametrize("layout", ["one image a chunk", "gzip, 16 a chunk"])
@pytest.mark.parametrize("options", OPTIONS)
def test_streamed_training_equals_training_in_memory(tmp_path, course_data, options, layout):
    """The same shuffles and the same numbers: streaming changes where the bytes wait (the
    file read whole keeps its layout, so a chunk-aware shuffle is the same too)."""
    path = course_h5(tmp_path / "c.h5", course_data, layout=layout)
    cpu = get_device("cpu")
    cfg = TrainConfig(
        layers=(12288, 5, 3, 1), iterations=25, dtype="float64", **{"log_every": 5, **options}
    )
    memory = fit(cpu, cfg, load_h5(path))
    streamed = fit(cpu, cfg, H5Source(path))
    assert rel_err([c for _, c in streamed.costs], [c for _, c in memory.costs]) <= 1e-12
    assert (
        streamed.val_costs == memory.val_costs
        or rel_err([c for _, c in streamed.val_costs], [c for _, c in memory.val_costs]) <= 1e-12
    )
    for (W, b), (W0, b0) in zip(
        params_to_host(cpu, streamed.params), params_to_host(cpu, memory.params)
    ):
        assert rel_err(W, W0) <= 1e-12 and rel_err(b, b0) <= 1e-12


def test_streamed_mini_batches_on_every_device(tmp_path, course_data, monkeypatch, device):
    """Every device streams mini-batches from disk when the examples do not fit beside it (a
    GPU with 8 MiB free here; the CPU always): each batch read in the reading thread, staged
    there (device.stage_rows: converted on NumPy) and made columns on the device; the same
    numbers as the examples held in memory on NumPy."""
    path = course_h5(tmp_path / "c.h5", course_data, layout="gzip, 16 a chunk")
    monkeypatch.setattr(type(device), "free_memory", lambda self: 8 * 2**20)
    train = batches.TrainingSet(H5Source(path), np.arange(209))
    assert shards.is_streamed(device, train, 209, full_batch=False)
    cfg = TrainConfig(layers=(12288, 5, 1), iterations=12, batch_size=32, log_every=4)
    streamed = fit(device, cfg, H5Source(path))
    cpu = get_device("cpu")
    memory = fit(cpu, cfg, load_h5(path))
    assert rel_err([c for _, c in streamed.costs], [c for _, c in memory.costs]) <= 1e-12
    for (W, _), (W0, _) in zip(
        params_to_host(device, streamed.params), params_to_host(cpu, memory.params)
    ):
        assert rel_err(W, W0) <= 1e-12


def test_cpu_mini_batches_stream_and_read_each_batch_once(tmp_path, course_data, monkeypatch):
    path = course_h5(tmp_path / "c.h5", course_data)
    source = H5Source(path)
    reads = []
    real = source.read
    monkeypatch.setattr(source, "read", lambda idx: reads.append(len(idx)) or real(idx))
    train = batches.TrainingSet(source, np.arange(209))
    assert isinstance(
        shards.make_shard(get_device("cpu"), train, 0, 209, "float32", False),
        shards.StreamedShard,
    )
    assert not isinstance(
        shards.make_shard(get_device("cpu"), train, 0, 209, "float32", True),
        shards.StreamedShard,
    )
    reads.clear()
    cfg = TrainConfig(
        layers=(12288, 4, 1),
        iterations=12,
        batch_size=64,
        log_every=5,
        dtype="float32",
        solver="direct",
    )
    result = fit(get_device("cpu"), cfg, source)
    # 12 batches read ahead (plus the 13th, read ahead and unused); no batch is read twice,
    # and the log points (0, 5, 10, 11) read nothing: they report the batches' mean loss
    assert reads == [64, 64, 64, 17] * 3 + [64] and [i for i, _ in result.costs] == [0, 5, 10, 11]
    assert "batches since the previous log point" in result.cost_kind


def test_streamed_memory_stays_a_few_batches(tmp_path, course_data, monkeypatch):
    """Host memory of a streamed run is a few batches and chunks: it does not grow with the
    data set (4x the images, the same peak), while loading the file whole would."""
    monkeypatch.setattr(shards, "CHUNK", 128)
    cfg = TrainConfig(
        layers=(12288, 6, 1), iterations=20, batch_size=64, log_every=10, dtype="float32"
    )
    peaks, sizes = [], []
    for copies in (4, 16):
        source = H5Source(course_h5(tmp_path / f"{copies}.h5", course_data, copies=copies))
        sizes.append(source.n_examples * source.n_features)
        tracemalloc.start()
        try:
            result = fit(get_device("cpu"), cfg, source)
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert result.costs[-1][1] < result.costs[0][1]
    assert peaks[1] < 0.5 * sizes[1], (
        f"peak {peaks[1] / 1e6:.1f} MB for {sizes[1] / 1e6:.1f} MB of images"
    )
    # whether the reading thread's next batch (its uint8 rows and the float32 columns made
    # of them there) is already in memory at the moment of the peak is a matter of thread
    # timing: one batch either way (the small file alone peaks at 5.3-9.4 MB here)
    one_batch = cfg.batch_size * source.n_features * (1 + np.dtype(cfg.dtype).itemsize)
    assert peaks[1] - peaks[0] < one_batch + 0.05 * (sizes[1] - sizes[0]), peaks


def test_csv_read_in_blocks_equals_the_h5(tmp_path, course_data, monkeypatch):
    from gpucat.data import inputs

    _, test = course_data
    header = ",".join([*map(str, range(12288)), "y"])
    rows = [
        ",".join(map(str, [*img.reshape(-1).tolist(), int(y)]))
        for img, y in zip(test.images, test.Y[0])
    ]
    (tmp_path / "t.csv").write_text(
        header + "\n" + "\n".join(rows[:20]) + "\n\n" + "\n".join(rows[20:]) + "\n"
    )
    monkeypatch.setattr(inputs, "CSV_BLOCK", 7)
    ds = inputs.load_csv(tmp_path / "t.csv")
    assert ds.rows.dtype == np.uint8
    np.testing.assert_array_equal(ds.rows, test.rows)
    np.testing.assert_array_equal(ds.Y, test.Y)
    assert ds.names[19:21] == ["t.csv:row21", "t.csv:row23"]  # line numbers, past the blank line


# --- gpucat prepare ------------------------------------------------------------------------


def photo_folder(root, course_data, n=24):
    """n course images saved as 96x96 PNG and JPEG files under cat/ and non-cat/."""
    train, _ = course_data
    for k in range(n):
        sub = root / ("cat" if train.Y[0, k] else "non-cat")
        sub.mkdir(parents=True, exist_ok=True)
        im = Image.fromarray(train.images[k]).resize((96, 96))
        im.save(sub / (f"{k:03d}.png" if k % 2 else f"{k:03d}.jpg"))
    return root


def test_prepare_writes_what_the_folder_reads(tmp_path, course_data):
    folder = photo_folder(tmp_path / "photos", course_data)
    out = tmp_path / "prepared.h5"
    assert prepare(folder, out, jobs=2, progress=False) == 24
    one = tmp_path / "one.h5"
    prepare(folder, one, jobs=1, progress=False)
    direct = load_folder(folder)
    for ds in (load_input(out), load_input(one, stream=True)):
        rows, y = ds.read(np.arange(24))
        np.testing.assert_array_equal(
            rows, direct.rows
        )  # the same decoding, in either process count
        np.testing.assert_array_equal(y, direct.labels())
        assert ds.names == direct.names
    with h5py.File(out) as f:
        assert f["train_set_x"].chunks is None and f["train_set_x"].dtype == np.uint8
    assert H5Source(out).storage[0] == "plain"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.h5", "photos", "prepared.h5"]


@pytest.mark.parametrize("layout", ["gzip + shuffle", "chunks cutting images"])
def test_prepare_rewrites_an_h5_into_the_fastest_layout(tmp_path, course_data, layout, capsys):
    """`gpucat prepare old.h5 --out fast.h5`: the same images, labels and names, contiguous
    and memory-mapped, with a progress bar."""
    old = course_h5(tmp_path / "old.h5", course_data, copies=2, layout=layout)
    with h5py.File(old, "a") as f:
        f.create_dataset("names", data=[f"img{k}" for k in range(418)], dtype=h5py.string_dtype())
    assert prepare(old, tmp_path / "fast.h5", progress=True) == 418
    bar = capsys.readouterr().err
    assert "prepare old.h5" in bar and "418/418" in bar
    fast, before = H5Source(tmp_path / "fast.h5"), load_h5(old)
    assert fast.storage[0] == "plain" and fast.chunk_rows == 1
    np.testing.assert_array_equal(fast.read(np.arange(418))[0], before.rows)
    np.testing.assert_array_equal(fast.labels(), before.labels())
    assert fast.names == before.names == [f"img{k}" for k in range(418)]


def test_prepare_stops_on_a_broken_image_and_leaves_nothing(tmp_path, course_data, capsys):
    from gpucat.cli import main

    folder = photo_folder(tmp_path / "photos", course_data, n=6)
    (folder / "cat" / "zz.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    assert main(["prepare", str(folder), "--out", str(tmp_path / "x.h5"), "--jobs", "2"]) == 2
    err = capsys.readouterr().err
    assert "zz.png" in err and "not a readable image" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos"]  # no file, no temporary
    assert main(["prepare", str(tmp_path / "nowhere"), "--out", str(tmp_path / "y.h5")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_train_on_a_prepared_file_equals_training_on_the_folder(tmp_path, course_data):
    folder = photo_folder(tmp_path / "photos", course_data)
    out = run_gpucat("prepare", str(folder), "--out", str(tmp_path / "p.h5"))
    assert out.returncode == 0 and "Prepared 24 images" in out.stdout, out.stderr
    common = [
        "--device",
        "cpu",
        "--dtype",
        "float64",
        "--iterations",
        "10",
        "--batch-size",
        "8",
        "--layers",
        "12288,4,1",
        "--json",
    ]
    docs = []
    for path in (folder, tmp_path / "p.h5"):
        r = run_gpucat("train", "--train", str(path), *common)
        assert r.returncode == 0, r.stderr
        docs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    assert rel_err([c for _, c in docs[1]["costs"]], [c for _, c in docs[0]["costs"]]) <= 1e-12


def test_training_shows_a_progress_bar_on_a_terminal_only(tmp_path):
    """Under a pseudo-terminal: a tqdm bar with the cost; with --json, or piped, none."""
    import fcntl
    import pty
    import struct
    import termios

    code = "from gpucat.cli import main; import sys; sys.exit(main(sys.argv[1:]))"
    args = [
        "train",
        "--device",
        "cpu",
        "--iterations",
        "300",
        "--log-every",
        "100",
        "--layers",
        "12288,3,1",
    ]
    env = {**os.environ, "GPUCAT_DATA_DIR": str(data_dir()), "COLUMNS": "120"}

    def on_terminal(*extra):
        out = bytearray()

        def read(fd):
            data = os.read(fd, 65536)
            out.extend(data)
            return data

        pid, fd = pty.fork()
        if pid == 0:
            os.execve(sys.executable, [sys.executable, "-c", code, *args, *extra], env)
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a real size
        try:
            while True:
                try:
                    read(fd)
                except OSError:
                    break
        finally:
            os.waitpid(pid, 0)
        return out.decode(errors="replace")

    shown = on_terminal()
    assert "training:" in shown and "cost 0." in shown and ("it/s" in shown or "s/it" in shown)
    assert "Cost after iteration 299" in shown
    assert "training:" not in on_terminal("--json")
    piped = run_gpucat(*args)
    assert piped.returncode == 0 and "training:" not in piped.stdout + piped.stderr


def test_streaming_needs_uint8_images(tmp_path):
    with h5py.File(tmp_path / "f.h5", "w") as f:
        f["train_set_x"] = np.zeros((3, 64, 64, 3), np.float32)
        f["train_set_y"] = np.array([0, 1, 0])
    with pytest.raises(GpucatError, match="streaming needs uint8 images"):
        H5Source(tmp_path / "f.h5")
    assert load_input(tmp_path / "f.h5", stream=True).rows.dtype == np.float32  # read whole


def test_a_damaged_or_truncated_file_is_one_message(tmp_path, course_data):
    """A gzip chunk overwritten with garbage, a contiguous file cut short: a GpucatError that
    names the file, raised where the training thread sees it."""
    path = course_h5(tmp_path / "g.h5", course_data, layout="gzip, 16 a chunk")
    with h5py.File(path) as f:
        where = []
        f["train_set_x"].id.chunk_iter(lambda info: where.append(info.byte_offset))
    with open(path, "r+b") as f:
        f.seek(where[3] + 40)
        f.write(b"\xff" * 200)
    source = H5Source(path)
    with pytest.raises(GpucatError, match="g.h5: images 48-63 cannot be read"):
        source.read(np.arange(40, 60))
    cut = course_h5(tmp_path / "c.h5", course_data, layout="contiguous")
    os.truncate(cut, os.path.getsize(cut) - 100_000)
    with pytest.raises(GpucatError, match="c.h5.*truncated"):
        H5Source(cut)


def test_a_large_plain_file_is_read_and_shuffled_in_blocks(tmp_path, course_data, monkeypatch):
    """Above BLOCKED_FROM images a contiguous file is read 64 adjacent images at a time (one
    call each, in order on the disk) and shuffled a block at a time; read whole, the file
    keeps that layout, so streamed and in-memory runs still agree."""
    monkeypatch.setattr(h5, "BLOCKED_FROM", 300)
    monkeypatch.setattr(streaming, "memory_available", lambda: 2**20)  # the file is larger
    path = course_h5(tmp_path / "c.h5", course_data, copies=2, layout="contiguous")
    import fcntl  # POSIX, as os.preadv is

    real_read, reads, refuse = os.preadv, [], [False]

    def read(fd, buffers, at):  # the O_DIRECT reads, or a device that refuses them
        if fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0):
            if refuse[0]:
                raise OSError(22, "Invalid argument")
            reads.append((at, memoryview(buffers[0]).nbytes))
        return real_read(fd, buffers, at)

    monkeypatch.setattr(os, "preadv", read)
    lazy, whole = H5Source(path), load_h5(path)
    assert lazy.storage[0] == "plain" and lazy.chunk_rows == whole.chunk_rows == 64
    idx = np.random.default_rng(1).integers(0, 418, 300)
    np.testing.assert_array_equal(lazy.read(idx)[0], whole.rows[idx])
    if lazy._direct is not False:  # where the file system takes O_DIRECT: each block by it
        assert len(reads) == 1 + 7 and all(at % 4096 == n % 4096 == 0 for at, n in reads)
    refuse[0] = True
    cached = H5Source(path)
    np.testing.assert_array_equal(cached.read(idx)[0], whole.rows[idx])  # the page cache's
    assert cached._direct is False
    cfg = TrainConfig(
        layers=(12288, 4, 1), iterations=12, batch_size=50, log_every=4, dtype="float64"
    )
    a, b = fit(get_device("cpu"), cfg, lazy), fit(get_device("cpu"), cfg, whole)
    assert rel_err([c for _, c in a.costs], [c for _, c in b.costs]) <= 1e-12
    cpu = get_device("cpu")
    for (W, c), (W0, c0) in zip(params_to_host(cpu, a.params), params_to_host(cpu, b.params)):
        assert rel_err(W, W0) <= 1e-12 and rel_err(c, c0) <= 1e-12


@pytest.mark.parametrize(
    "layout, blocked", [("contiguous", False), ("7 images a chunk", False), ("contiguous", True)]
)
def test_short_reads_go_on_from_where_they_stopped(
    tmp_path, course_data, monkeypatch, layout, blocked
):
    """os.preadv may return fewer bytes than asked (a signal, a network file system,
    O_DIRECT at the file's end): every read path, image by image and in O_DIRECT blocks,
    must go on from where the last call stopped. A stand-in preadv returns at most 1000
    bytes a call (three aligned pages through O_DIRECT)."""
    import fcntl  # POSIX, as os.preadv is

    if blocked:
        monkeypatch.setattr(h5, "BLOCKED_FROM", 300)
        monkeypatch.setattr(streaming, "memory_available", lambda: 2**20)  # O_DIRECT blocks
    path = course_h5(tmp_path / "c.h5", course_data, copies=2, layout=layout)
    real_read, calls = os.preadv, []

    def short(fd, buffers, at):
        direct = fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0)
        view = memoryview(buffers[0]).cast("B")
        calls.append(bool(direct))
        return real_read(fd, [view[: 3 * 4096 if direct else 1000]], at)

    monkeypatch.setattr(os, "preadv", short)
    lazy, whole = H5Source(path), load_h5(path)
    assert lazy.storage[0] == "plain"
    idx = np.random.default_rng(2).integers(0, 418, 250)
    np.testing.assert_array_equal(lazy.read(idx)[0], whole.rows[idx])
    assert len(calls) > 250 * (12288 // 1000 if not any(calls) else 1)  # reads were cut short


@pytest.mark.parametrize("available, direct", [(2**20, True), (2**40, False)])
def test_o_direct_is_chosen_by_the_files_size_against_the_memory(
    tmp_path, course_data, monkeypatch, available, direct
):
    """A file larger than half the memory available is read past the page cache (O_DIRECT,
    where the file system takes it); one that fits is read through the cache, where a second
    epoch finds it. A stand-in figure plays the memory."""
    import fcntl

    monkeypatch.setattr(h5, "BLOCKED_FROM", 300)
    monkeypatch.setattr(streaming, "memory_available", lambda: available)
    path = course_h5(tmp_path / "c.h5", course_data, copies=2, layout="contiguous")
    real_read, flags = os.preadv, []

    def read(fd, buffers, at):
        flags.append(bool(fcntl.fcntl(fd, fcntl.F_GETFL) & getattr(os, "O_DIRECT", 0)))
        return real_read(fd, buffers, at)

    monkeypatch.setattr(os, "preadv", read)
    lazy, whole = H5Source(path), load_h5(path)
    assert lazy.direct is direct and lazy.chunk_rows == 64
    idx = np.arange(0, 418, 3)
    np.testing.assert_array_equal(lazy.read(idx)[0], whole.rows[idx])
    if not direct:
        assert flags and not any(flags)
    elif lazy._direct is not False:  # the file system took O_DIRECT: every block through it
        assert any(flags)


def test_the_source_protocols_defaults(course_data):
    """A source in memory gets the streamed source's extras as defaults: read whole (one
    example a chunk), not streamed, nothing to read ahead or keep, names SOURCE[k]; a source
    must say how it reads."""
    train, _ = course_data
    assert isinstance(train, Source) and issubclass(H5Source, Source)
    assert (train.chunk_rows, train.streams, train.divisor) == (1, False, 255.0)
    assert train.will_need(np.arange(3)) is None and train.keep_chunks(10) is None
    assert train.name(4) == "train_catvnoncat.h5[4]"

    class Bare(Source):
        n, n_features, source = 3, 2, "bare"

    with pytest.raises(NotImplementedError):
        Bare().read(np.arange(2))
    with pytest.raises(NotImplementedError):
        Bare().labels()


def test_closing_a_source_lets_go_of_its_threads_and_files(tmp_path, course_data):
    """close() ends the reading threads and closes the descriptors (as leaving a ``with``
    block does); a later read opens them again and reads the same images."""
    import threading

    path = course_h5(tmp_path / "c.h5", course_data, layout="gzip, 16 a chunk")
    idx = np.array([200, 3, 17])
    before = set(threading.enumerate())
    with H5Source(path) as source:
        first = source.read(idx)[0]
        readers = [t for t in set(threading.enumerate()) - before if "gpucat-chunks" in t.name]
        assert readers
    assert not any(t.is_alive() for t in readers)
    np.testing.assert_array_equal(source.read(idx)[0], first)
    source.close()
    plain = H5Source(course_h5(tmp_path / "p.h5", course_data, layout="contiguous"))
    plain.read(idx)
    fd = plain._fd
    plain.close()
    with pytest.raises(OSError):
        os.fstat(fd)
    np.testing.assert_array_equal(plain.images[3], course_data[0].images[3])
    assert type(plain.images) is type(source.images)  # one class, not one made per access
