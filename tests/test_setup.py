"""The README's two commands choose what to install from the machine: a stand-in
`nvidia-smi` on the PATH plays each kind of NVIDIA driver (GPUCAT_DRY_RUN prints the install
instead of doing it)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SMI = """#!/bin/sh
cat <<'TXT'
+-----------------------------------------------------------------------------------------+
| NVIDIA-SMI 580.159.04             Driver Version: 580.159.04     CUDA Version: {cuda}     |
|-----------------------------------------+------------------------+----------------------+
TXT
"""


def setup_choice(
    tmp_path: Path, script: str, cuda: str | None, **env: str
) -> subprocess.CompletedProcess:
    """Run scripts/SCRIPT in dry-run mode with (or without) a driver reporting CUDA ``cuda``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    if cuda is not None:
        smi.write_text(SMI.format(cuda=cuda))
        smi.chmod(0o755)
    path = f"{bin_dir}:/usr/bin:/bin"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("GPUCAT_")}
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / script)],
        capture_output=True,
        text=True,
        env={**clean, "PATH": path, "GPUCAT_DRY_RUN": "1", **env},
        check=True,
    )


@pytest.mark.parametrize(
    "script, cuda, extras",
    [
        ("test.sh", None, "test"),
        ("test.sh", "12.4", "test,cuda12"),
        ("test.sh", "13.0", "test,cuda13"),
        ("train.sh", "12.8", "plot,cuda12"),
        ("train.sh", "13.1", "plot,cuda13"),
        ("train.sh", None, "plot"),
    ],
)
def test_setup_installs_the_cupy_for_the_driver(tmp_path, script, cuda, extras):
    out = setup_choice(tmp_path, script, cuda)
    assert f"[{extras}]'" in out.stdout


def test_an_old_driver_gets_the_cpu_setup_and_a_reason(tmp_path):
    out = setup_choice(tmp_path, "test.sh", "11.8")
    assert "[test]'" in out.stdout
    assert "supports CUDA 11, CuPy 14 needs 12 or newer" in out.stderr


def test_gpucat_extras_overrides_the_choice(tmp_path):
    out = setup_choice(tmp_path, "test.sh", "13.0", GPUCAT_EXTRAS="test,cuda12")
    assert "[test,cuda12]'" in out.stdout


def test_the_extras_bring_cupy_14_with_the_cuda_libraries():
    """What the extras name: CuPy 14+ (xp.astype) with its [ctk] extra (NVRTC, cuBLAS)."""
    import tomllib

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert extras["cuda12"] == ["cupy-cuda12x[ctk]>=14"]
    assert extras["cuda13"] == ["cupy-cuda13x[ctk]>=14"]
