#!/usr/bin/env bash
# The GPU check in one command, for a machine with an NVIDIA GPU and no package registry:
#
#     bash checks/gpu_wheels.sh          # beforehand, where PyPI is reachable: .whl/
#     bash checks/gpu_check.sh OUTDIR    # on the GPU machine, with .whl/ beside the code
#
# The whole run ends within GPUCAT_CHECK_BUDGET seconds (default 480: 8 minutes): each step
# runs under the smaller of its own limit and the time left before the deadline (less what
# the summary needs), and a step with no time left is recorded as such, not run. Each step
# writes its own file in OUTDIR as it goes; the summary is written by an exit trap, so it is
# there even when a step fails, runs out of time or the script is killed:
#   env.json      gpucat info --json, after a venv over the machine's packages (those of
#                 the python3 found, a virtual environment itself or not) plus the wheels in
#                 .whl/, with this tree on its path; the requirements are checked first, one
#                 line each
#   tests.log     the suite with GPUCAT_REQUIRE_GPU=1 (a skipped CuPy test fails), in
#                 parallel (pytest-xdist), BLAS threads capped per worker
#   compare.json  gpucat compare: NumPy and CuPy from the same start, both dtypes, every
#                 iteration's cost of the 2500
#   mpi.json      mpiexec -n 2 on the one GPU against one process (float64)
#   recipe.json   every solver on the GPU beside PyTorch CUDA eager and a CUDA graph
#   sweep.json    gpucat compare --sweep: the step's time from 209 to 100,000 examples on
#                 every device, against each one's peak, and where the GPU starts to pay
#   steps.log     everything each step printed, with its limit and time
#   summary.txt   PASS/FAIL per acceptance check (checks/gpu_summary.py)
# GPUCAT_CHECK_DRY_RUN=1 prints each step's limit and their sum, runs nothing but the
# summary, and exits 0 when the limits fit the budget; GPUCAT_CHECK_STEPS="environment tests"
# runs only the steps named (environment, tests, compare, mpi, recipe, sweep). Exit status:
# the summary's.
set -uo pipefail
out="$(mkdir -p "${1:?usage: bash checks/gpu_check.sh OUTDIR}" && cd "$1" && pwd)"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export PYTHONUNBUFFERED=1
budget="${GPUCAT_CHECK_BUDGET:-480}"
dry="${GPUCAT_CHECK_DRY_RUN:-0}"
SUMMARY_S=15 # kept back for the summary
t0=$(date +%s)
deadline=$((t0 + budget - SUMMARY_S))
log="$out/steps.log"
: >"$log"
py="${GPUCAT_GPU_VENV:-/tmp/gpucat-gpu-venv}/bin/python"
planned=0

summary() {
  trap - EXIT INT TERM
  echo "== summary ($(($(date +%s) - t0)) s)" | tee -a "$log"
  local summarize=("$py")
  [ -x "$py" ] || summarize=(python3)
  # (PYTHONPATH: the summary reads gpucat.compare from this tree even if the install failed)
  PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" timeout "$SUMMARY_S" "${summarize[@]}" \
    checks/gpu_summary.py "$out" | tee "$out/summary.txt"
  local verdict=${PIPESTATUS[0]}
  [ -s "$out/summary.txt" ] || echo "FAIL: the summary could not be written" >"$out/summary.txt"
  echo "== done ($(($(date +%s) - t0)) s)" | tee -a "$log"
  if [ "$dry" = 1 ]; then
    echo "planned: $planned s of steps + $SUMMARY_S s summary within a budget of $budget s"
    [ $((planned + SUMMARY_S)) -le "$budget" ] && exit 0 || exit 1
  fi
  exit "$verdict"
}
trap summary EXIT
trap 'echo "   (stopped by a signal)" | tee -a "$log"; exit 1' INT TERM

# step KEY NAME LIMIT_S CMD...: run CMD under min(LIMIT_S, time left), its output in
# steps.log; a step whose KEY GPUCAT_CHECK_STEPS leaves out is not run
step() {
  local key=$1 name=$2 limit=$3
  shift 3
  if [ -n "${GPUCAT_CHECK_STEPS:-}" ] && [[ " $GPUCAT_CHECK_STEPS " != *" $key "* ]]; then
    echo "== $name (not selected)" | tee -a "$log"
    return 0
  fi
  planned=$((planned + limit))
  local left=$((deadline - $(date +%s)))
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit} s, at $(($(date +%s) - t0)) s)" | tee -a "$log"
  if [ "$dry" = 1 ]; then
    return 0
  fi
  if [ "$limit" -le 0 ]; then
    echo "   (not run: no time left before the deadline)" | tee -a "$log"
    return 0
  fi
  timeout "$limit" bash -c '"$@"' step "$@" 2>&1 | tee -a "$log" # functions run exported
  local rc=${PIPESTATUS[0]}
  [ "$rc" = 0 ] || echo "   (exit code $rc$([ "$rc" = 124 ] && echo ': out of time'))" | tee -a "$log"
}

environment() {
  local venv site
  venv="$(dirname "$(dirname "$py")")"
  if [ ! -x "$py" ]; then
    python3 -m venv --system-site-packages "$venv" || return 1
    site="$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')" || return 1
    # python3 may be a virtual environment itself (machine images ship PyTorch so), whose
    # packages --system-site-packages leaves out: it gives the base interpreter's. A .pth
    # file puts every package folder python3 sees after the venv's own; another, this tree.
    python3 -c 'import sys; print("\n".join(p for p in sys.path if p.endswith(("site-packages", "dist-packages"))))' \
      >"$site/machine-packages.pth" || return 1
    echo "$root" >"$site/gpucat-tree.pth"
  fi
  local want have
  want="$(cat .whl/PYTHON_VERSION 2>/dev/null || echo)"
  have="$("$py" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ -n "$want" ] && [ "$want" != "$have" ]; then
    echo "gpu_check: .whl/ holds wheels for Python $want, this venv runs $have:" \
      "run GPU_PYTHON_VERSION=$have bash checks/gpu_wheels.sh where PyPI is reachable"
    return 1
  fi
  if ls .whl/*.whl >/dev/null 2>&1; then
    "$py" -m pip install -q --no-index --no-deps --no-cache-dir .whl/*.whl || return 1
  fi
  source scripts/_gpu_extra.sh
  "$py" checks/check_requirements.py test $(gpu_extra)
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$py" -m gpucat info --json >"$out/env.json"
  "$py" -m gpucat info
}

tests() {
  # One pytest-xdist worker per two cores (at most 8), each with two BLAS threads: unbounded,
  # the workers' BLAS threads oversubscribe the CPU (seen on 2 cores: 11.5 minutes, not 1.5).
  local parallel=()
  if "$py" -c "import xdist" 2>/dev/null; then
    local workers=$(($(nproc) / 2))
    workers=$((workers > 8 ? 8 : (workers < 1 ? 1 : workers)))
    parallel=(-n "$workers")
  fi
  # -m "not installed": the wheel-in-a-fresh-venv tests need a package index (CI runs them)
  OMP_NUM_THREADS=2 OPENBLAS_NUM_THREADS=2 MKL_NUM_THREADS=2 GPUCAT_REQUIRE_GPU=1 \
    "$py" -m pytest -q -ra -p no:cacheprovider --durations=15 -m "not installed" \
    "${parallel[@]}" >"$out/tests.log" 2>&1
  local rc=$?
  echo "pytest exit code $rc" >>"$out/tests.log"
  tail -n 25 "$out/tests.log"
  return $rc
}

export -f environment tests
export py out
step environment "environment" 75 environment
step tests "tests (GPUCAT_REQUIRE_GPU=1)" 180 tests
step compare "gpucat compare (every iteration's cost)" 45 \
  "$py" -m gpucat compare --log-every 1 --json-out "$out/compare.json"
step mpi "mpiexec -n 2 on the GPU against one process" 45 \
  "$py" checks/mpi_check.py --device gpu --processes 2 --out "$out/mpi.json"
step recipe "reference recipe, every solver against PyTorch CUDA" 70 \
  "$py" benchmarks/recipe.py --devices gpu --runs 3 --out "$out/recipe.json"
step sweep "gpucat compare --sweep (every device)" 50 \
  "$py" -m gpucat compare --sweep --examples 209,2000,20000,100000 --json-out "$out/sweep.json"
