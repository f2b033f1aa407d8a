"""The backend shim: which device each request opens, without a GPU (a stand-in CuPy)."""

from __future__ import annotations

import sys
import types

import pytest

from gpucat import backend as backend_mod


class _Device:
    opened: list[int] = []

    def __init__(self, index):
        self.index = index
        _Device.opened.append(index)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def use(self):
        pass

    def synchronize(self):
        pass


def fake_cupy(count: int):
    """A `cupy` module whose driver sees `count` GPUs and records each Device opened."""
    _Device.opened = []
    runtime = types.SimpleNamespace(
        getDeviceCount=lambda: count, getDeviceProperties=lambda i: {"name": b"Fake GPU"}
    )
    zeros = lambda n: types.SimpleNamespace(  # noqa: E731
        sum=lambda: types.SimpleNamespace(get=lambda: 0.0)
    )
    return types.SimpleNamespace(
        cuda=types.SimpleNamespace(runtime=runtime, Device=_Device), zeros=zeros
    )


@pytest.fixture
def gpus(monkeypatch):
    def install(count):
        monkeypatch.setitem(sys.modules, "cupy", fake_cupy(count))
        backend_mod._cupy_backend.cache_clear()

    yield install
    backend_mod._cupy_backend.cache_clear()


def test_auto_on_a_rank_opens_only_that_ranks_gpu(gpus):
    """`--device auto` on data-parallel rank 2 must not open a context on GPU 0 first."""
    gpus(4)
    b = backend_mod.get_backend("auto", gpu_index=2)
    assert b.name == "cupy" and b.label == "GPU 2 (Fake GPU)"
    assert _Device.opened == [2]


def test_more_ranks_than_gpus_share_them_round_robin(gpus):
    gpus(2)
    assert backend_mod.get_backend("gpu", gpu_index=3).label == "GPU 1 (Fake GPU)"


@pytest.mark.parametrize("alias, name", [("numpy", "numpy"), ("cupy", "cupy"), ("CUDA", "cupy")])
def test_backend_names_select_their_backend(gpus, alias, name):
    gpus(1)
    b = backend_mod.get_backend(alias)
    assert b.name == name and backend_mod.get_backend(b.flag) is b
