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
from conftest import data_dir, rel_err

from gpucat import backend as backend_mod
from gpucat.distributed import shard_bounds
from gpucat.errors import GpucatError
from gpucat.models import load_model
from gpucat.train import TrainConfig, fit, params_to_host


def mpiexec() -> str:
    exe = Path(sys.executable).parent / "mpiexec"
    found = str(exe) if exe.exists() else shutil.which("mpiexec")
    if not found:
        pytest.fail("mpi4py is installed but no mpiexec was found: pip install mpich")
    return found


def run_mpi(n: int, *args: str, data: Path | None = None):
    env = {**os.environ, "GPUCAT_DATA_DIR": str(data or data_dir())}
    cmd = [mpiexec(), "-n", str(n), sys.executable, "-m", "gpucat", "train", "--distributed", *args]
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


def single_process(course_data, **options):
    train, _ = course_data
    cpu = backend_mod.get_backend("cpu")
    cfg = TrainConfig(dtype="float64", iterations=50, solver="direct", log_every=10, **options)
    r = fit(cpu, cfg, train.X, train.Y)
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


def test_more_processes_than_examples_via_mpiexec(tmp_path):
    d = tmp_path / "tiny"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name, m in (("train_catvnoncat.h5", 2), ("test_catvnoncat.h5", 2)):
        with h5py.File(d / name, "w") as f:
            prefix = name.split("_")[0]
            f[f"{prefix}_set_x"] = rng.integers(0, 256, (m, 64, 64, 3), dtype=np.uint8)
            f[f"{prefix}_set_y"] = np.array([0, 1])
    out = run_mpi(3, "--iterations", "2", data=d)
    assert out.returncode != 0
    assert (
        "3 processes but only 2 training examples" in out.stderr and "Traceback" not in out.stderr
    )


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
