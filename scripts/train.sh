#!/usr/bin/env bash
# Set up the virtual environment and train the reference recipe (arguments go to `gpucat
# train`). On a machine with an NVIDIA driver the setup adds CuPy and training uses the GPU.
GPUCAT_BASE_EXTRAS=plot  # training needs no test tools; matplotlib for --plot
source "$(dirname "$0")/_venv.sh"
exec gpucat train "$@"
