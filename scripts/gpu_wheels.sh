#!/usr/bin/env bash
# Download, where pip can reach PyPI, the wheels that scripts/gpu_check.sh installs on a GPU
# machine without a package registry (Python 3.12, x86-64 Linux): what the test extra needs
# beyond NumPy, CuPy, h5py, pytest, safetensors, Pillow, tqdm, matplotlib, scikit-learn and
# mpi4py, which such a machine is expected to hold. Usage: bash scripts/gpu_wheels.sh [DIR]
set -euo pipefail
dest="${1:-$(cd "$(dirname "$0")/.." && pwd)/.whl}"
py="${GPU_PYTHON_VERSION:-3.12}"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
  --implementation cp "${platforms[@]}" -d "$dest" \
  pooch platformdirs array-api-strict threadpoolctl mpich
ls -1 "$dest"
