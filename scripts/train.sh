#!/usr/bin/env bash
# Set up the virtual environment and train the reference recipe (arguments go to `gpucat train`).
source "$(dirname "$0")/_venv.sh"
exec gpucat train "$@"
