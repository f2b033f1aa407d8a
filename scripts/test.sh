#!/usr/bin/env bash
# Set up the virtual environment with the test extras and run the test suite with pytest
# (arguments go to pytest). The tests read the course data from GPUCAT_DATA_DIR, else data/.
source "$(dirname "$0")/_venv.sh"
exec python -m pytest "$@"
