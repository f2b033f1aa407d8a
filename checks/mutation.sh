#!/usr/bin/env bash
# Mutation testing (docs/testing.md): set up the virtual environment with the test extras and
# mutmut, then run checks/mutation.py (arguments go to it).
GPUCAT_BASE_EXTRAS=test,mutation
source "$(dirname "$0")/../scripts/_venv.sh"
exec python checks/mutation.py "$@"
