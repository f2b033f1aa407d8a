#!/usr/bin/env bash
# Download, where pip can reach PyPI, the wheels that checks/gpu_check.sh installs on a GPU
# machine without a package registry (x86-64 Linux; GPU_PYTHON_VERSION, default 3.12, must be
# the machine's python3, and is written to DIR/PYTHON_VERSION, which gpu_check.sh compares
# with its venv's): what the suite imports that such a machine lacks (pooch and platformdirs,
# array-api-strict, sybil, threadpoolctl, zlib-ng), mpi4py with MPICH (the pair from PyPI, so that
# the venv's mpiexec and mpi4py speak the same MPI, whatever MPI the machine's mpi4py was
# built for). gpucat itself runs from the tree there: nothing is built.
# Usage: bash checks/gpu_wheels.sh [DIR]   (default: .whl/)
set -euo pipefail
dest="${1:-$(cd "$(dirname "$0")/.." && pwd)/.whl}"
py="${GPU_PYTHON_VERSION:-3.12}"
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" \
  --implementation cp "${platforms[@]}" -d "$dest" \
  pooch platformdirs array-api-strict sybil threadpoolctl zlib-ng mpich mpi4py
echo "$py" >"$dest/PYTHON_VERSION"
ls -1 "$dest"
