"""gpucat: a hand-written L-layer cat classifier that runs the same code on CuPy and NumPy."""

__version__ = "0.1.0"
