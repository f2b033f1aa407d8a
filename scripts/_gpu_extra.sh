# Sourced by _venv.sh and gpu_check.sh: gpu_extra prints the gpucat extra for this machine's
# NVIDIA driver (cuda12 / cuda13), or nothing for the CPU (with the reason on stderr).
gpu_extra() {
  command -v nvidia-smi >/dev/null 2>&1 || return 0
  local major
  major="$(nvidia-smi 2>/dev/null | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\)\..*/\1/p' | head -n 1)"
  if [ -z "$major" ]; then
    echo "gpucat: nvidia-smi gave no CUDA version (is the driver loaded?); setting up for the CPU" >&2
  elif [ "$major" -ge 13 ]; then
    echo cuda13
  elif [ "$major" -eq 12 ]; then
    echo cuda12
  else
    echo "gpucat: the NVIDIA driver supports CUDA $major, CuPy 14 needs 12 or newer;" \
      "setting up for the CPU (update the driver to train on the GPU)" >&2
  fi
}
