"""gpucat: a hand-written L-layer cat classifier that runs the same code on CuPy and NumPy."""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``gpucat.CatClassifier`` without importing the estimator (or scikit-learn) up front."""
    if name == "CatClassifier":
        from gpucat.estimator import CatClassifier

        return CatClassifier
    raise AttributeError(f"module 'gpucat' has no attribute {name!r}")
