"""PyTorch eager baseline of the reference recipe (same data, same initial weights).

Used by benchmark.py as the yardstick: nn.Linear layers, ReLU, BCEWithLogitsLoss, plain
SGD, full batch. Prints one JSON object like `gpucat train --json` (training seconds only).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def build(X, Y, layers, lr: float, dtype: str, device: str = "cpu", seed: int = 1):
    """The reference network in PyTorch with gpucat's initial weights: (model, X, Y, loss, SGD)."""
    import torch

    from gpucat.network import init_params

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


def train_torch(
    X: np.ndarray,
    Y: np.ndarray,
    layers,
    lr: float,
    iterations: int,
    dtype: str,
    device: str = "cpu",
    seed: int = 1,
    log_every: int = 100,
) -> dict:
    import torch

    model, Xt, Yt, loss_fn, opt = build(X, Y, layers, lr, dtype, device, seed)
    costs = []
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    sync()
    start = time.perf_counter()
    for i in range(iterations):
        opt.zero_grad(set_to_none=True)
        loss = loss_fn(model(Xt), Yt)
        if i % log_every == 0 or i == iterations - 1:
            costs.append([i, float(loss)])  # host sync at log points, as gpucat does
        loss.backward()
        opt.step()
    sync()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        acc = float(((model(Xt) > 0) == (Yt > 0.5)).double().mean())
    return {
        "backend": f"torch-{torch.__version__}",
        "device": device,
        "dtype": dtype,
        "iterations": iterations,
        "seconds": seconds,
        "costs": costs,
        "train_accuracy": acc,
        "ms_per_iteration": 1000 * seconds / iterations,
    }


def main() -> None:
    from gpucat import data

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--iterations", type=int, default=2500)
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--data-dir", default=None)
    a = p.parse_args()
    train, _ = data.load_course_data(a.data_dir)
    print(
        json.dumps(
            train_torch(
                train.X, train.Y, (12288, 20, 7, 5, 1), 0.0075, a.iterations, a.dtype, a.device
            )
        )
    )


if __name__ == "__main__":
    main()
