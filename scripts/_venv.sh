# Sourced by train.sh and test.sh: make (once) and enter the project's virtual environment.
# GPUCAT_VENV picks another folder; GPUCAT_EXTRAS the pip extras to install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${GPUCAT_VENV:-$root/.venv}"
extras="${GPUCAT_EXTRAS:-test}"
stamp="$venv/.gpucat-installed-$extras"
if [ ! -x "$venv/bin/python" ]; then
  "${PYTHON:-python3}" -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ]; then
  "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$root[$extras]"
  touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
cd "$root"
