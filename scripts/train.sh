#!/usr/bin/env bash
# Set up the virtual environment and train the reference recipe (arguments go to `gpucat train`).
GPUCAT_EXTRAS="${GPUCAT_EXTRAS:-plot}"  # training needs no test tools; matplotlib for --plot
source "$(dirname "$0")/_venv.sh"
exec gpucat train "$@"
