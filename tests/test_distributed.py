"""Data-parallel training over MPI: the same parameters on 1 or N processes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import mpi4py  # noqa: F401  (a test dependency: a missing MPI is a failure, not a skip)
import numpy as np
import pytest

from gpucat import backends
from gpucat.config import TrainConfig
from gpucat.errors import GpucatError
from gpucat.modelfiles.model import load_model
from gpucat.nn.network import params_to_host
from gpucat.training.distributed import shard_bounds
from gpucat.training.loop import fit

from conftest import CUPY, RTOL, STANDIN, data_dir, rel_err, standin_gpu


def mpiexec() -> str:
    exe = Path(sys.executable).parent / "mpiexec"
    found = str(exe) if exe.exists() else shutil.which("mpiexec")
    if not found:
        pytest.fail("mpi4py is installed but no mpiexec was found: pip install mpich")
    return found


def run_mpi(n: int, *args: str, data: Path | None = None):
    """`mpiexec -n N gpucat train --distributed ARGS` on the CPU (where a single process gives
    the same sums in the same order: equal to 1e-12); the GPU has its own test below."""
    env = {**os.environ, "GPUCAT_DATA_DIR": str(data or data_dir())}
    cmd = [mpiexec(), "-n", str(n), sys.executable, "-m", "gpucat", "train", "--distributed"]
    cmd += ["--device", "cpu", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.parametrize("m, size", [(209, 2), (209, 3), (10, 4), (7, 7)])
def test_shards_are_contiguous_and_differ_by_at_most_one(m, size):
    bounds = [shard_bounds(m, size, r) for r in range(size)]
    assert bounds[0][0] == 0 and bounds[-1][1] == m
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
    lengths = [b - a for a, b in bounds]
    assert max(lengths) - min(lengths) <= 1 and min(lengths) >= 1


def test_more_processes_than_examples_is_an_error():
    with pytest.raises(GpucatError, match="3 processes but only 2 training examples"):
        shard_bounds(2, 3, 0)
    assert [shard_bounds(2, 3, r, allow_empty=True) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]


def test_cuda_awareness_is_the_mpi_librarys_own_answer(monkeypatch):
    """mpi4py has no Query_cuda_support: the answer comes from the MPI library loaded into
    the process (MPIX_Query_cuda_support, through ctypes); the PyPI MPICH is built without
    CUDA, so it says no. GPUCAT_MPI_CUDA_AWARE overrides it either way."""
    from mpi4py import MPI  # noqa: F401  (loads the MPI library)

    from gpucat.training import distributed

    monkeypatch.delenv("GPUCAT_MPI_CUDA_AWARE", raising=False)
    libraries = distributed._mpi_libraries()
    assert libraries and all("libmpi" in p for p in libraries)
    import ctypes

    assert hasattr(ctypes.CDLL(libraries[0]), "MPIX_Query_cuda_support")
    assert distributed.mpi_cuda_aware() is False
    monkeypatch.setenv("GPUCAT_MPI_CUDA_AWARE", "1")
    assert distributed.mpi_cuda_aware() is True
    monkeypatch.setenv("GPUCAT_MPI_CUDA_AWARE", "0")
    assert distributed.mpi_cuda_aware() is False


def mpi_check(*args: str) -> dict:
    """checks/mpi_check.py's JSON (it exits non-zero when the check fails)."""
    script = Path(__file__).resolve().parent.parent / "checks" / "mpi_check.py"
    env = {**os.environ, "GPUCAT_DATA_DIR": str(data_dir())}
    out = subprocess.run(
        [sys.executable, str(script), *args], capture_output=True, text=True, env=env, timeout=300
    )
    assert out.returncode == 0, out.stdout + out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_mpiexec_on_one_gpu_equals_one_process(tmp_path):
    """Two ranks sharing the one GPU (their sums staged through pinned host memory, or passed
    as device buffers to a CUDA-aware MPI) against one process on that GPU, float64, 50
    iterations: equal to 1e-10 (checks/mpi_check.py, which gpu_check.sh runs too). Without
    a GPU, each rank runs the CuPy stand-in, its sums staged through pinned host memory."""
    if CUPY == "cupy":
        doc = mpi_check("--device", "gpu", "--processes", "2")
        assert doc["processes"] == 2 and doc["device"].startswith("GPU")
        assert max(doc["cost_rel_err"], doc["param_rel_err"]) <= 1e-10
        return
    options = dict(dtype="float64", solver="direct", iterations=50, log_every=10)
    for doc in ranks_and_one(tmp_path, options, "gpu", GPUCAT_MPI_CUDA_AWARE="0"):
        assert doc["device"].startswith("GPU 0 (CuPy stand-in")
        assert doc["how"] == "staged through pinned host memory"
        mine, one = doc["mine"], doc["one"]
        assert rel_err([c for _, c in mine["costs"]], [c for _, c in one["costs"]]) <= 1e-10
        assert rel_err(mine["W"], one["W"]) <= 1e-10


def test_mpi_check_script_on_the_cpu():
    """The same script on the CPU, where the ranks' sums come out as one process's."""
    doc = mpi_check("--device", "cpu", "--iterations", "20")
    assert doc["processes"] == 2 and doc["reduce"] == "host memory (NumPy)"
    assert max(doc["cost_rel_err"], doc["param_rel_err"]) <= 1e-12 and doc["passed"]


def single_process(course_data, **options):
    train, _ = course_data
    cpu = backends.get_device("cpu")
    cfg = TrainConfig(dtype="float64", iterations=50, solver="direct", log_every=10, **options)
    r = fit(cpu, cfg, train)
    return r, params_to_host(cpu, r.params)


@pytest.mark.parametrize(
    "n, options",
    [
        (2, {}),  # 209 = 105 + 104: not divisible
        (3, {"optimizer": "adam", "learning_rate": 0.001, "l2": 0.3, "keep_prob": 0.9}),
        # mini-batches of 64: 209 = 3 x 64 + 17, so each epoch ends on a short batch
        (2, {"batch_size": 64, "optimizer": "momentum", "lr_decay": 0.3, "keep_prob": 0.8}),
        (3, {"batch_size": 50, "l2": 0.5}),
        # held-out validation (the best parameters come back), mirrored copies, early stopping
        (
            2,
            {
                "validation": 0.25,
                "flip": True,
                "batch_size": 40,
                "optimizer": "adam",
                "learning_rate": 0.003,
            },
        ),
        (
            3,
            {
                "validation": 0.3,
                "patience": 1,
                "optimizer": "adam",
                "learning_rate": 0.02,
                "batch_size": 32,
            },
        ),
    ],
)
def test_mpiexec_equals_single_process(tmp_path, course_data, n, options):
    flags = [
        f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in options.items()
    ]
    out = run_mpi(
        n,
        "--dtype",
        "float64",
        "--iterations",
        "50",
        "--log-every",
        "10",
        "--out",
        str(tmp_path / "dist.safetensors"),
        "--json",
        *flags,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["processes"] == n and "host memory" in doc["reduce"]
    assert out.stdout.count("Cost after iteration 0") == 1  # rank 0 alone logs
    ref, ref_params = single_process(course_data, **options)
    assert rel_err([c for _, c in doc["costs"]], [c for _, c in ref.costs]) <= 1e-12
    assert [i for i, _ in doc["validation_costs"]] == [i for i, _ in ref.val_costs]
    if ref.val_costs:
        assert (
            rel_err([c for _, c in doc["validation_costs"]], [c for _, c in ref.val_costs]) <= 1e-12
        )
    assert doc["best_iteration"] == ref.best_iteration and doc["stopped_early"] == ref.stopped_early
    assert doc["iterations_done"] == ref.iterations_done
    for (W, b), (W0, b0) in zip(load_model(tmp_path / "dist.safetensors").params, ref_params):
        assert rel_err(W, W0) <= 1e-12 and rel_err(b, b0) <= 1e-12


def small_h5(path, m=12, seed=0):
    """A course-layout h5 of m random images, half of them cats."""
    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f["train_set_x"] = rng.integers(0, 256, (m, 64, 64, 3), dtype=np.uint8)
        f["train_set_y"] = np.arange(m) % 2
    return path


SMALL_LAYERS = "12288,4,3,1"


@pytest.mark.parametrize(
    "options",
    [
        # 12 examples with 10 % held out: 2 validation images for 3 ranks, so rank 2 holds none
        {"validation": 0.1, "log_every": 2, "optimizer": "adam", "learning_rate": 0.01},
        # 4 examples per rank, batches of 5: every rank holds fewer than a batch, and some
        # batches have no example on some rank
        {"batch_size": 5, "keep_prob": 0.7, "l2": 0.2, "log_every": 3},
        # validation, flips and early stopping on mini-batches of the mirrored set
        {
            "validation": 0.25,
            "flip": True,
            "batch_size": 7,
            "patience": 2,
            "log_every": 2,
            "optimizer": "momentum",
            "lr_decay": 0.2,
            "learning_rate": 0.05,
        },
    ],
)
def test_corner_cases_on_three_ranks_equal_one_process(tmp_path, options):
    data = small_h5(tmp_path / "small.h5")
    flags = [
        f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in options.items()
    ]
    out = run_mpi(
        3,
        "--train",
        str(data),
        "--dtype",
        "float64",
        "--layers",
        SMALL_LAYERS,
        "--iterations",
        "20",
        "--out",
        str(tmp_path / "dist.safetensors"),
        "--json",
        *flags,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    from gpucat.data.inputs import load_input

    cfg = TrainConfig(dtype="float64", layers=(12288, 4, 3, 1), iterations=20, **options)
    ref = fit(backends.get_device("cpu"), cfg, load_input(data))
    assert all(np.isfinite(c) for _, c in doc["validation_costs"])
    assert rel_err([c for _, c in doc["costs"]], [c for _, c in ref.costs]) <= 1e-10
    assert [i for i, _ in doc["validation_costs"]] == [i for i, _ in ref.val_costs]
    if ref.val_costs:
        assert (
            rel_err([c for _, c in doc["validation_costs"]], [c for _, c in ref.val_costs]) <= 1e-10
        )
    assert (doc["best_iteration"], doc["stopped_early"], doc["iterations_done"]) == (
        ref.best_iteration,
        ref.stopped_early,
        ref.iterations_done,
    )
    for (W, b), (W0, b0) in zip(
        load_model(tmp_path / "dist.safetensors").params,
        params_to_host(backends.get_device("cpu"), ref.params),
    ):
        assert rel_err(W, W0) <= 1e-10 and rel_err(b, b0) <= 1e-10


@pytest.mark.parametrize(
    "args, message",
    [
        (["--layers", "100,5,1"], "12288 features per example"),
        (["--train", "TINY", "--iterations", "2"], "3 processes but only 2 training examples"),
        (["--train", "TINY", "--validation", "0.5"], "leaves an empty training or validation set"),
    ],
)
def test_distributed_errors_are_the_single_process_errors(tmp_path, args, message):
    tiny = str(small_h5(tmp_path / "tiny.h5", m=2))
    args = [tiny if a == "TINY" else a for a in args]
    out = run_mpi(3, *args)
    assert out.returncode != 0 and "Traceback" not in out.stderr
    # each rank says it (mpiexec may interleave what several ranks write at once)
    assert out.stderr.startswith("gpucat: error:") and message in out.stderr, out.stderr
    if "3 processes" not in message:  # one process says the same
        single = subprocess.run(
            [sys.executable, "-m", "gpucat", "train", *args], capture_output=True, text=True
        )
        assert single.returncode == 2 and message in single.stderr


def test_dead_layer_and_nan_checks_count_every_rank(tmp_path):
    """inference.dead_layers and inference.score on 3 ranks give the single-process answers: a layer
    counts as dead only when it is dead on every rank's examples."""
    script = tmp_path / "checks.py"
    script.write_text(
        "import json, numpy as np\n"
        "from gpucat.training.distributed import setup\n"
        "from gpucat.nn.network import init_params\n"
        "from gpucat.training.reducers import LOCAL\n"
        "from gpucat.data.course import load_course_data\n"
        "from gpucat.nn.inference import dead_layers, score\n"
        "from gpucat.nn.network import params_to_device\n"
        "reducer, cpu, _ = setup('cpu')\n"
        "train, _ = load_course_data()\n"
        "host = init_params([12288, 5, 4, 1], 1)\n"
        "host[1] = (host[1][0], np.full((4, 1), -100.0))  # layer 2 can never fire\n"
        "# layer 1 fires for the brightest image only, so it is alive on one rank alone\n"
        "W1 = np.full((5, 12288), 1.0 / 12288)\n"
        "b1 = np.full((5, 1), -np.sort(train.X.sum(axis=0) / 12288)[-2] - 1e-9)\n"
        "host[0] = (W1, b1)\n"
        "nan = [(np.full_like(W, np.nan), b) for W, b in host]\n"
        "out = {}\n"
        "for name, red in (('mine', reducer), ('local', LOCAL)):\n"
        "    p = params_to_device(cpu, host, 'float64')\n"
        "    out[name] = [dead_layers(cpu, p, train, 'float64', red),\n"
        "                 score(cpu, p, train, 'float64', red),\n"
        "                 score(cpu, params_to_device(cpu, nan, 'float64'), train, 'float64', red)]\n"
        "# one file per rank: lines printed by several ranks at once can interleave\n"
        "open(f'rank{reducer.rank}.json', 'w').write(json.dumps(out))\n"
    )
    env = {**os.environ, "GPUCAT_DATA_DIR": str(data_dir())}
    out = subprocess.run(
        [mpiexec(), "-n", "3", sys.executable, str(script)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    docs = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(3)]
    assert len(docs) == 3 and all(d["mine"] == docs[0]["mine"] for d in docs)  # every rank
    assert docs[0]["mine"] == docs[0]["local"]  # ... says what one process says
    dead, (correct, n, bad), (_, _, nan_bad) = docs[0]["mine"]
    assert dead == [2] and n == 209 and bad == 0 and nan_bad == 209


def test_missing_mpi4py_is_a_clear_message():
    code = (
        "import sys; sys.modules['mpi4py'] = None\n"
        "from gpucat.cli import main; sys.exit(main(['train', '--distributed', '--iterations', '1']))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**os.environ, "GPUCAT_DATA_DIR": str(data_dir())},
    )
    assert (
        out.returncode == 2
        and "pip install 'gpucat[mpi]'" in out.stderr
        and "Traceback" not in out.stderr
    )


def test_distributed_resume_is_bit_identical(tmp_path):
    """2 ranks, stopped at 20 of 40 iterations (checkpoints every 10), resumed on 2 ranks: the
    same parameters, bit for bit, as 2 ranks running all 40 iterations."""
    common = [
        "--dtype",
        "float64",
        "--layers",
        "12288,6,4,1",
        "--optimizer",
        "adam",
        "--learning-rate",
        "0.002",
        "--batch-size",
        "48",
        "--keep-prob",
        "0.9",
        "--validation",
        "0.2",
        "--log-every",
        "10",
    ]
    ck = str(tmp_path / "ck.safetensors")
    a = run_mpi(2, *common, "--iterations", "20", "--checkpoint", ck, "--checkpoint-every", "10")
    assert a.returncode == 0, a.stderr[-2000:]
    b = run_mpi(
        2, "--resume", ck, "--iterations", "40", "--out", str(tmp_path / "resumed.safetensors")
    )
    assert b.returncode == 0, b.stderr[-2000:]
    assert "Cost after iteration 39" in b.stdout and "Cost after iteration 0:" not in b.stdout
    c = run_mpi(2, *common, "--iterations", "40", "--out", str(tmp_path / "whole.safetensors"))
    assert c.returncode == 0, c.stderr[-2000:]
    for (W, b_), (W0, b0) in zip(
        load_model(tmp_path / "resumed.safetensors").params,
        load_model(tmp_path / "whole.safetensors").params,
    ):
        np.testing.assert_array_equal(W, W0)
        np.testing.assert_array_equal(b_, b0)


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize(
    "options",
    [
        {"solver": "gram"},
        {"solver": "gram", "optimizer": "momentum", "l2": 0.5, "batch_size": 60, "keep_prob": 0.9},
        # 205 of 209: a rank's whole block often falls inside a shuffled batch, out of order
        {"solver": "gram", "batch_size": 205},
    ],
)
def test_gram_on_several_ranks_equals_one_process(tmp_path, course_data, n, options):
    """The Gram solver over MPI: each rank forms its columns of Z1 from its columns of G, the
    ranks' dZ1 are summed into the one C; equal to one process to 1e-12."""
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in options.items()]
    common = ["--dtype", "float64", "--layers", "12288,6,4,1", "--iterations", "30"]
    out = run_mpi(n, *common, *flags, "--out", str(tmp_path / "d.safetensors"), "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    doc = json.loads(out.stdout.strip().splitlines()[-1])
    assert doc["solver"] == "gram" and doc["processes"] == n
    train, _ = course_data
    cpu = backends.get_device("cpu")
    config = TrainConfig(dtype="float64", layers=(12288, 6, 4, 1), iterations=30, **options)
    one = fit(cpu, config, train)
    assert rel_err([c for _, c in doc["costs"]], [c for _, c in one.costs]) <= 1e-12
    for (W, b), (W0, b0) in zip(
        load_model(tmp_path / "d.safetensors").params, params_to_host(cpu, one.params)
    ):
        assert rel_err(W, W0) <= 1e-12 and rel_err(b, b0) <= 1e-12


RANKS = """
import json, sys
from gpucat.data.course import load_course_data
from gpucat.training.distributed import setup
from gpucat.nn.network import params_to_host
from gpucat.training.reducers import LOCAL
from gpucat.config import TrainConfig
from gpucat.training.loop import fit

reducer, device, _ = setup(sys.argv[2])
train, _ = load_course_data()
config = TrainConfig(**json.loads(sys.argv[1]))
out = {"device": device.label, "how": reducer.how}
for name, red in (("mine", reducer), ("one", LOCAL)):
    result = fit(device, config, train, reducer=red)
    out[name] = {"solver": result.solver, "costs": result.costs,
                 "W": [W.tolist() for W, _ in params_to_host(device, result.params)][-1]}
open(f"rank{reducer.rank}.json", "w").write(json.dumps(out))
"""


def ranks_and_one(tmp_path, options: dict, device: str, **env) -> list[dict]:
    """Each of two ranks' record of a run on both ranks ("mine") and of the same run on it
    alone ("one"); on the CPU or the GPU, which is the CuPy stand-in where none is usable."""
    script = tmp_path / "ranks.py"
    script.write_text((STANDIN if device == "gpu" and CUPY != "cupy" else "") + RANKS)
    out = subprocess.run(
        [mpiexec(), "-n", "2", sys.executable, str(script), json.dumps(options), device],
        capture_output=True,
        text=True,
        env={**os.environ, "GPUCAT_DATA_DIR": str(data_dir()), **env},
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]


@pytest.mark.parametrize("optimizer", ["momentum", "gd"])  # the Gram solver's optimizers
def test_gram_in_float32_on_two_ranks_hands_each_step_its_parameters_dtype(tmp_path, optimizer):
    """The Gram solver reduces the float32 gradients together with its float64 sums; each
    must come back in its own dtype, or CuPy's update kernels refuse the mix (TypeError: on
    the GPU, or on the CuPy stand-in, whose kernels type their arguments as CuPy's do). Two
    ranks equal one process to float32 rounding."""
    options = dict(
        dtype="float32", solver="gram", optimizer=optimizer, layers=[12288, 6, 4, 1],
        iterations=20,
    )  # fmt: skip
    for doc in ranks_and_one(tmp_path, options, "gpu", GPUCAT_MPI_CUDA_AWARE="0"):
        assert doc["mine"]["solver"] == doc["one"]["solver"] == "gram"
        mine, one = doc["mine"]["costs"], doc["one"]["costs"]
        assert rel_err([c for _, c in mine], [c for _, c in one]) <= RTOL["float32"]
        assert rel_err(doc["mine"]["W"], doc["one"]["W"]) <= RTOL["float32"]


def test_staging_buffers_are_kept_per_dtype_and_size(monkeypatch):
    """Staged through pinned host memory, a float32 sum after a float64 one of the same
    length must not reuse the float64 buffer (CuPy's get(out=) raises TypeError): one pinned
    buffer for each, kept."""
    import types

    from gpucat.training.distributed import MPIReducer

    gpu = standin_gpu(monkeypatch)
    monkeypatch.setenv("GPUCAT_MPI_CUDA_AWARE", "0")
    comm = types.SimpleNamespace(
        Get_rank=lambda: 0, Get_size=lambda: 2, Allreduce=lambda _, buf, op: buf.__imul__(2)
    )
    reducer = MPIReducer(comm, gpu)
    assert reducer.how == "staged through pinned host memory"
    pinned = gpu.xp.get_default_pinned_memory_pool()
    for dtype in ("float64", "float32", "float64"):
        got = reducer._allreduce(gpu.asarray(np.arange(6, dtype=dtype)))
        assert got.dtype == dtype and gpu.to_host(got).tolist() == [2.0 * k for k in range(6)]
    assert pinned.bytes_in_use == 2 * 512  # two staging buffers, one a dtype, kept
