#!/usr/bin/env bash
# The GPU check in one command, for a machine with an NVIDIA GPU and no package registry:
#
#     bash scripts/gpu_wheels.sh          # beforehand, where PyPI is reachable: .whl/
#     bash scripts/gpu_check.sh OUTDIR    # on the GPU machine, with .whl/ beside the code
#
# Each step writes its own file in OUTDIR as it goes, so a step that fails or runs out of
# time leaves what it had, and the later steps still run:
#   env.json             gpucat info --json, after a venv over the machine's packages plus
#                        the wheels in .whl/ (gpucat built with setuptools from .whl/, not
#                        the machine's); the requirements are checked first, one line each
#   tests.log            the whole suite with GPUCAT_REQUIRE_GPU=1 (a skipped CuPy test
#                        fails), in parallel (pytest-xdist), BLAS threads capped per worker
#   compare_devices.json NumPy and CuPy from the same start, both dtypes, every iteration's
#                        cost of the 2500
#   mpi.json             mpiexec -n 2 on the one GPU against one process (float64)
#   recipe.json          every solver on the GPU beside PyTorch CUDA eager and CUDA graph,
#                        then each solver replayed as a CUDA graph (GPUCAT_CUDA_GRAPH=1)
#   sweep.json           the GPU rows of the sweep (benchmark.py plot-sweep draws them)
#   steps.log            everything each step printed
#   summary.txt          PASS/FAIL per acceptance check (scripts/gpu_summary.py), printed last
# Ends within about 7 minutes on an H100; exit status: the summary's.
set -uo pipefail
out="$(mkdir -p "${1:?usage: bash scripts/gpu_check.sh OUTDIR}" && cd "$1" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
log="$out/steps.log"
: >"$log"
step() { echo "== $1 ($(($(date +%s) - t0)) s)" | tee -a "$log"; }
# run LIMIT_S CMD...: one step's command with its time limit, its output appended to steps.log
run() {
  local limit=$1
  shift
  timeout "$limit" "$@" 2>&1 | tee -a "$log"
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || echo "   (exit code $rc$([ "$rc" = 124 ] && echo ': out of time'))" | tee -a "$log"
}

step "environment"
venv="${GPUCAT_GPU_VENV:-/tmp/gpucat-gpu-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
py="$venv/bin/python"
if ls .whl/*.whl >/dev/null 2>&1; then
  run 120 "$py" -m pip install -q --no-index --no-deps --no-cache-dir .whl/*.whl
fi
# build isolation with --find-links: setuptools comes from .whl/, never from the machine
run 120 "$py" -m pip install -q --no-index --find-links .whl --no-deps -e .
export PATH="$venv/bin:$PATH"
run 30 "$py" scripts/check_requirements.py test cuda13
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee -a "$log"
timeout 60 "$py" -m gpucat info --json >"$out/env.json" 2>>"$log"
run 60 "$py" -m gpucat info

step "tests (GPUCAT_REQUIRE_GPU=1)"
# One pytest-xdist worker per two cores (at most 8), each with two BLAS threads: unbounded,
# the workers' BLAS threads oversubscribe the CPU (seen on 2 cores: 11.5 minutes, not 1.5).
parallel=()
if "$py" -c "import xdist" 2>/dev/null; then
  workers=$(($(nproc) / 2))
  workers=$((workers > 8 ? 8 : (workers < 1 ? 1 : workers)))
  parallel=(-n "$workers")
  export OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2
fi
GPUCAT_REQUIRE_GPU=1 timeout 240 "$py" -m pytest -q -ra -p no:cacheprovider --durations=15 \
  "${parallel[@]}" >"$out/tests.log" 2>&1
echo "pytest exit code $?" >>"$out/tests.log"
tail -n 25 "$out/tests.log" | tee -a "$log"
unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS

step "compare_devices (every iteration's cost)"
run 90 "$py" scripts/compare_devices.py --log-every 1 --json-out "$out/compare_devices.json"

step "mpiexec -n 2 on the GPU against one process"
run 90 "$py" scripts/mpi_check.py --device gpu --processes 2 --out "$out/mpi.json"

step "reference recipe, every solver against PyTorch CUDA"
run 100 "$py" scripts/benchmark.py recipe --devices gpu --runs 3 --out "$out/recipe.json"

step "GPU sweep"
run 60 "$py" scripts/benchmark.py sweep --devices gpu --repeats 5 --json-only --out "$out/sweep"

step "summary"
"$py" scripts/gpu_summary.py "$out" | tee "$out/summary.txt"
verdict=${PIPESTATUS[0]}
step "done"
exit "$verdict"
