"""Data-parallel training over MPI (mpi4py): the same results on 1 or N processes.

There is no second trainer here. ``MPIReducer`` is the reducer seam of the one ``fit``
(train.py): each rank holds a contiguous block of the training positions (``shard_bounds``:
sizes differ by at most one), computes gradient and loss *sums* over its examples, and the
reducer adds them up over all ranks in one flat buffer per iteration (one Allreduce) before
the one division by the global count. Every rank then applies the same update and holds
the same parameters; scoring and validation are reduced the same way. Rank 0 logs, plots,
saves and writes checkpoints.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gpucat.backends import Device
from gpucat.errors import GpucatError
from gpucat.training.reducers import LocalReducer


def init_mpi():
    """MPI.COMM_WORLD, or a GpucatError saying what to install."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise GpucatError(
            f"--distributed needs mpi4py and an MPI runtime ({e}): pip install 'gpucat[mpi]' "
            "(mpi4py with MPICH from PyPI), or mpi4py built against your cluster's MPI."
        ) from None
    except RuntimeError as e:  # mpi4py imports but cannot load or start the MPI library
        raise GpucatError(f"--distributed: the MPI runtime failed to start ({e}).") from None
    return MPI.COMM_WORLD


def shard_bounds(m: int, size: int, rank: int, allow_empty: bool = False) -> tuple[int, int]:
    """Contiguous [start, stop) of rank's examples: the first m % size ranks get one more.

    Training needs an example on every rank (the error says so); scoring and validation
    (``allow_empty``) give the ranks past m an empty block."""
    if size > m and not allow_empty:
        raise GpucatError(
            f"--distributed: {size} processes but only {m} training examples; "
            f"run with at most {m} processes (mpiexec -n {m})."
        )
    base, extra = divmod(m, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def _mpi_libraries() -> list[str]:
    """Paths of the MPI libraries mapped into this process (Linux), e.g. libmpi.so.12."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            return sorted({ln.split()[-1] for ln in f if "libmpi" in ln.rsplit("/", 1)[-1]})
    except OSError:
        return []


def mpi_cuda_aware() -> bool:
    """Whether MPI may be handed device buffers: GPUCAT_MPI_CUDA_AWARE=1 or 0 when set, else
    the library's own answer, MPIX_Query_cuda_support() (Open MPI and MPICH both export it;
    mpi4py does not wrap it, so it is called through ctypes), else False: stage on the host."""
    said = os.environ.get("GPUCAT_MPI_CUDA_AWARE", "").strip().lower()
    if said:
        return said not in ("0", "false", "no", "off")
    import ctypes

    for path in _mpi_libraries():
        try:
            query = ctypes.CDLL(path).MPIX_Query_cuda_support
        except (OSError, AttributeError):
            continue
        query.restype, query.argtypes = ctypes.c_int, []
        return bool(query())
    return False


class MPIReducer(LocalReducer):
    """Sums over all ranks of a communicator. Device arrays travel in one flat buffer per
    dtype and call, reduced where the device lets MPI reach them (device.exchange): in place
    in host memory (NumPy), straight from device memory when MPI is CUDA-aware, else staged
    through (pinned) host memory."""

    def __init__(self, comm, device: Device):
        from mpi4py import MPI

        self.MPI, self.comm, self.device = MPI, comm, device
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        self._device_ok = mpi_cuda_aware()  # may MPI be handed device memory?
        self.how = device.exchange_route(self._device_ok)

    def block(self, n: int, allow_empty: bool = False) -> tuple[int, int]:
        return shard_bounds(n, self.size, self.rank, allow_empty)

    def sum_arrays(self, arrays: list[Any]) -> list[Any]:
        """One flat buffer, one Allreduce per dtype among the arrays: each sum comes back in
        its own array's dtype (a concatenation of mixed dtypes would promote them all, and
        hand CuPy's kernels float64 gradients for float32 parameters)."""
        xp = self.device.xp
        concat = getattr(xp, "concat", None) or xp.concatenate  # the array API name, or CuPy's
        out: list[Any] = [None] * len(arrays)
        for dtype in dict.fromkeys(a.dtype for a in arrays):  # in order of first appearance
            mine = [k for k, a in enumerate(arrays) if a.dtype == dtype]
            flat = self._allreduce(concat([xp.reshape(arrays[k], (-1,)) for k in mine]))
            at = 0
            for k in mine:
                n = int(np.prod(arrays[k].shape))
                out[k] = xp.reshape(flat[at : at + n], arrays[k].shape)
                at += n
        return out

    def sum_scalars(self, *values: float) -> list[float]:
        out = np.array(values, dtype=np.float64)
        self.comm.Allreduce(self.MPI.IN_PLACE, out, op=self.MPI.SUM)
        return out.tolist()

    def _allreduce(self, buf: Any) -> Any:
        MPI = self.MPI
        work = lambda b: self.comm.Allreduce(MPI.IN_PLACE, b, op=MPI.SUM)  # noqa: E731
        return self.device.exchange(buf, work, self._device_ok)


def ranks_on_node(comm) -> int:
    """How many of the run's processes share this one's node."""
    from mpi4py import MPI

    return comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()


def local_gpu_index(comm) -> int:
    """This rank's GPU on its node: the rank among the node's processes."""
    from mpi4py import MPI

    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_rank()
    return int(os.environ.get("GPUCAT_LOCAL_RANK", local))


def setup(device: str | None, on_fallback=None):
    """(MPIReducer, device, how the node is shared) for this rank: its own GPU with --device
    gpu/auto (one per rank, round-robin), else NumPy with the node's cores shared among its
    ranks (device.share_node)."""
    from gpucat.backends import get_device

    comm = init_mpi()
    chosen = get_device(device, local_gpu_index(comm), on_fallback if comm.rank == 0 else None)
    shared = chosen.share_node(ranks_on_node(comm))
    return MPIReducer(comm, chosen), chosen, shared
