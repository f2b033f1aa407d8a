"""PyTorch baseline of the reference recipe (same data, same initial weights).

The measurements' yardstick (recipe.py, sweep.py, floor.py): nn.Linear layers, ReLU, BCEWithLogitsLoss, plain
SGD, full batch. ``graph=True`` (CUDA only) captures the whole training step (forward, loss,
backward, SGD update) once as a CUDA graph and replays it: PyTorch's fastest way to run
many small steps, and the strongest GPU anchor.
"""

from __future__ import annotations

import time


def build(X, Y, layers, lr: float, dtype: str, device: str = "cpu", seed: int = 1):
    """The reference network in PyTorch with gpucat's initial weights: (model, X, Y, loss, SGD)."""
    import torch

    from gpucat.nn.network import init_params

    tdtype = getattr(torch, dtype)
    Xt = torch.as_tensor(X.T, dtype=tdtype, device=device).contiguous()  # (m, n_x)
    Yt = torch.as_tensor(Y.T, dtype=tdtype, device=device).contiguous()
    mods = []
    for W, b in init_params(list(layers), seed):
        lin = torch.nn.Linear(W.shape[1], W.shape[0], dtype=tdtype, device=device)
        with torch.no_grad():
            lin.weight.copy_(torch.as_tensor(W))
            lin.bias.copy_(torch.as_tensor(b.ravel()))
        mods += [lin, torch.nn.ReLU()]
    model = torch.nn.Sequential(*mods[:-1])
    return model, Xt, Yt, torch.nn.BCEWithLogitsLoss(), torch.optim.SGD(model.parameters(), lr=lr)


def make_step(model, Xt, Yt, loss_fn, opt, graph: bool):
    """step() runs one training iteration and returns the loss tensor (computed before the
    update). With ``graph`` the step is captured as a CUDA graph after three warm-up steps on
    a side stream; the parameters are put back to where they started before capturing, so
    the replayed run follows the same trajectory as the eager one."""
    import torch

    def eager():
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(Xt), Yt)
        loss.backward()
        opt.step()
        return loss

    if not graph:
        return eager
    start = [p.detach().clone() for p in model.parameters()]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):  # warm-up: allocations and cuBLAS handles outside the capture
            eager()
    torch.cuda.current_stream().wait_stream(side)
    g = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)  # backward allocates .grad inside the graph's pool
    with torch.cuda.graph(g):
        static_loss = loss_fn(model(Xt), Yt)
        static_loss.backward()
        opt.step()
    with torch.no_grad():
        for p, p0 in zip(model.parameters(), start):
            p.copy_(p0)  # in place: the graph keeps reading and writing these same tensors

    def replay():
        g.replay()
        return static_loss

    return replay


def train_torch(X, Y, layers, lr, iterations, dtype, device="cpu", graph=False, log_every=100):
    """A whole run, like `gpucat train --json`: training seconds (device synchronized), the
    costs at the log points and the training accuracy."""
    import torch

    if graph and not device.startswith("cuda"):
        raise ValueError("CUDA graphs need device='cuda'")
    model, Xt, Yt, loss_fn, opt = build(X, Y, layers, lr, dtype, device)
    step = make_step(model, Xt, Yt, loss_fn, opt, graph)
    costs = []
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for i in range(iterations):
        loss = step()
        if i % log_every == 0 or i == iterations - 1:
            costs.append([i, float(loss)])  # host sync at log points, as gpucat does
    sync()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        acc = float(((model(Xt) > 0) == (Yt > 0.5)).double().mean())
    return {
        "backend": f"torch-{torch.__version__}" + ("-cudagraph" if graph else ""),
        "device": device,
        "dtype": dtype,
        "iterations": iterations,
        "seconds": seconds,
        "costs": costs,
        "train_accuracy": acc,
        "ms_per_iteration": 1000 * seconds / iterations,
    }


def time_torch(X, Y, sizes, dtype, repeats, device="cpu", graph=False) -> dict:
    """PyTorch's full-batch step on the same data in memory, eager or replayed as a CUDA
    graph: a row of ms per iteration, timed as gpucat's sweep times its own step."""
    import torch

    from gpucat.frontends.sweep import timed

    step = make_step(*build(X, Y, sizes, 0.0075, dtype, device), graph=graph)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    return {
        "impl": f"torch-{device}",
        "solver": "cuda-graph" if graph else "eager",
        "ms_per_iteration": 1000 * timed(step, sync, repeats, warmup=2),
        "device": device,
    }
