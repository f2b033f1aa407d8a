#!/usr/bin/env bash
# The GPU check in one command, for a machine with an NVIDIA GPU and no package registry:
#
#     bash scripts/gpu_check.sh OUTDIR
#
# 1. a venv over the system's packages (CuPy, PyTorch, h5py, ...), plus the wheels in .whl/
#    (fetched beforehand by scripts/gpu_wheels.sh), with gpucat installed editable;
# 2. the whole test suite with GPUCAT_REQUIRE_GPU=1, under which a skipped CuPy parameter
#    is a failure;
# 3. scripts/compare_devices.py --json (NumPy and CuPy, both dtypes, the same start);
# 4. the reference recipe on the GPU in both dtypes with every solver, beside PyTorch CUDA
#    eager and replayed as a CUDA graph: medians of 3 in one process (benchmark.py recipe);
# 5. the GPU rows of the sweep (benchmark.py sweep --devices gpu).
#
# It writes at most 8 files to OUTDIR (env.txt, tests.log, compare_devices.json,
# recipe.json, gpu_sweep.json, gpu_sweep.csv, gpu_sweep.png, summary.txt), prints the
# summary last, and ends within about 6 minutes on an H100 (each step has its own limit).
set -uo pipefail
out="$(mkdir -p "${1:?usage: bash scripts/gpu_check.sh OUTDIR}" && cd "$1" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PYTHONUNBUFFERED=1
t0=$(date +%s)
step() { echo "== $1 ($(( $(date +%s) - t0 )) s)"; }

step "environment"
venv="${GPUCAT_GPU_VENV:-/tmp/gpucat-gpu-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv --system-site-packages "$venv"
py="$venv/bin/python"
if ls .whl/*.whl >/dev/null 2>&1; then
  "$py" -m pip install -q --no-index --no-deps --no-cache-dir .whl/*.whl
fi
"$py" -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null
export PATH="$venv/bin:$PATH"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1
  "$py" - <<'PY'
import importlib
for name in ("numpy", "cupy", "torch", "h5py", "mpi4py", "array_api_strict", "pooch", "sklearn"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as e:
        print(name, "MISSING", type(e).__name__, e)
try:
    import cupy
    print("CUDA runtime", cupy.cuda.runtime.runtimeGetVersion(), "driver", cupy.cuda.runtime.driverGetVersion())
except Exception as e:
    print("cupy runtime: ", e)
from gpucat.backend import get_backend
print("gpucat gpu backend:", get_backend("gpu").label)
PY
} >"$out/env.txt" 2>&1
cat "$out/env.txt"

step "tests (GPUCAT_REQUIRE_GPU=1)"
# Four test processes when pytest-xdist is there (the GPU image has it), each with at most
# a quarter of the cores for BLAS: unbounded, the processes' BLAS threads oversubscribe the
# CPU (seen on 2 cores: 11.5 minutes instead of 1.5).
parallel=()
if "$py" -c "import xdist" 2>/dev/null; then
  parallel=(-n 4)
  threads=$(( $(nproc) / 4 > 0 ? $(nproc) / 4 : 1 ))
  export OMP_NUM_THREADS=$threads OPENBLAS_NUM_THREADS=$threads MKL_NUM_THREADS=$threads
fi
GPUCAT_REQUIRE_GPU=1 timeout 210 "$py" -m pytest -q -ra -p no:cacheprovider --durations=15 \
  "${parallel[@]}" >"$out/tests.log" 2>&1
echo "pytest exit code $?" >>"$out/tests.log"
tail -n 25 "$out/tests.log"

unset OMP_NUM_THREADS OPENBLAS_NUM_THREADS MKL_NUM_THREADS

step "compare_devices"
timeout 30 "$py" scripts/compare_devices.py --json >"$out/compare.out" 2>&1
tail -n 1 "$out/compare.out" >"$out/compare_devices.json"
head -n -1 "$out/compare.out"; rm -f "$out/compare.out"

step "reference recipe, GPU against PyTorch CUDA"
timeout 70 "$py" scripts/benchmark.py recipe --devices gpu --runs 3 --out "$out/recipe.json"

step "GPU sweep"
timeout 40 "$py" scripts/benchmark.py sweep --devices gpu --repeats 5 --out "$out/gpu_sweep" \
  >/dev/null

step "summary"
"$py" scripts/gpu_summary.py "$out" | tee "$out/summary.txt"
verdict=$?
step "done"
exit "$verdict"
