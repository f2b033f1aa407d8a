#!/usr/bin/env python3
"""gpucat's own sweep (gpucat.sweep_devices, as `gpucat compare --sweep` runs it: the
training step over data sizes against each device's peak) with PyTorch eager's step timed
beside each of its sizes when torch is installed (its rows under "torch"): OUT.json and
OUT.png.

    python benchmarks/sweep.py --out DIR/NAME [--examples 209,2000] [--widths 20,100]
"""

from __future__ import annotations

import json
from pathlib import Path

import gpucat
from gpucat.frontends.plots import plot_sweep

from _common import int_list, parser, restart_unpinned, selected_devices, synthetic, torch_devices


def main() -> None:
    p = parser(__doc__)
    p.add_argument("--repeats", type=int, default=5, help="iterations timed at each size")
    p.add_argument("--examples", type=int_list, default=None)
    p.add_argument("--widths", type=int_list, default=None)
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR/NAME",
        help="where the results go: NAME.json and .png in DIR (nothing is written into "
        "the repository unless you name it)",
    )
    p.add_argument("--devices", default="all", choices=("cpu", "gpu", "all"))
    args = p.parse_args()
    restart_unpinned()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    result = gpucat.sweep_devices(
        examples=args.examples,
        widths=args.widths,
        iterations=args.repeats,
        devices=selected_devices(args.devices),
        on_row=lambda row: print(json.dumps(row), flush=True),
    )
    result["torch"] = []
    sizes = dict.fromkeys((r["examples"], r["width"], r["dtype"]) for r in result["rows"])
    for m, width, dtype in sizes if torch_devices(args.devices) else ():
        from torch_baseline import time_torch

        X, Y = synthetic(m)
        for dev, graph in torch_devices(args.devices):
            r = time_torch(X, Y, [12288, width, 7, 5, 1], dtype, args.repeats, dev, graph)
            result["torch"].append({"examples": m, "width": width, "dtype": dtype, **r})
            print(json.dumps(result["torch"][-1]), flush=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    plot_sweep(out.with_suffix(".png"), result)


if __name__ == "__main__":
    main()
