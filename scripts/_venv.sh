# Sourced by train.sh and test.sh: make (once) and enter the project's virtual environment.
#
# GPUCAT_BASE_EXTRAS (set by the caller: plot or test) are installed, and where an NVIDIA
# driver answers (`nvidia-smi`), the CuPy build for its CUDA major version with the CUDA
# libraries it needs (the cuda12 or cuda13 extra: CuPy's [ctk]), so that training uses the
# GPU and the tests cover both devices. GPUCAT_EXTRAS replaces the whole choice,
# GPUCAT_VENV picks another folder, GPUCAT_DRY_RUN=1 prints the install and stops.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GPUCAT_VENV:-$root/.venv}"

source "$root/scripts/_gpu_extra.sh"

if [ -n "${GPUCAT_EXTRAS:-}" ]; then
  extras="$GPUCAT_EXTRAS"
else
  gpu="$(gpu_extra)"
  extras="${GPUCAT_BASE_EXTRAS:-test}${gpu:+,$gpu}"
fi
if [ "${GPUCAT_DRY_RUN:-0}" = 1 ]; then
  echo "would install: python -m pip install -e '$root[$extras]' into $venv"
  exit 0
fi
stamp="$venv/.gpucat-installed-$extras"
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  echo "gpucat: installing gpucat[$extras] into $venv (once)" >&2
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[$extras]"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$root"
