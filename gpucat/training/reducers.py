"""The reducer seam: how sums cross processes.

The trainer computes gradients, losses and counts as *sums* over the examples it holds; a
reducer adds those sums up over every process of the run. On one process that is the
identity (``LocalReducer``); data-parallel training over MPI passes an ``MPIReducer``
(distributed.py) into the same ``fit``, the way PyTorch's DDP wraps a model instead of
replacing the training loop. Means are taken only after the reduction, with global counts.
"""

from __future__ import annotations

from typing import Any


class LocalReducer:
    """One process: every sum is already the total."""

    rank, size = 0, 1
    how = "one process"

    @property
    def is_root(self) -> bool:
        """The process that logs, saves and writes checkpoints."""
        return self.rank == 0

    def block(self, n: int, allow_empty: bool = False) -> tuple[int, int]:
        """This process's contiguous block [start, stop) of n examples (here: all of them)."""
        return 0, n

    def sum_arrays(self, arrays: list[Any]) -> list[Any]:
        """Element-wise sums of device arrays over all processes (here: the arrays)."""
        return arrays

    def sum_scalars(self, *values: float) -> list[float]:
        """Sums of host numbers over all processes (here: the numbers)."""
        return [float(v) for v in values]


LOCAL = LocalReducer()
