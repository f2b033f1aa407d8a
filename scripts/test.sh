#!/usr/bin/env bash
# Set up the virtual environment with the test extras and run the test suite with pytest
# (arguments go to pytest). On a machine with an NVIDIA driver the setup adds CuPy, and the
# tests run on both devices. The tests read the course data from GPUCAT_DATA_DIR, else data/.
GPUCAT_BASE_EXTRAS=test
source "$(dirname "$0")/_venv.sh"
exec python -m pytest "$@"
