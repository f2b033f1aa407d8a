"""`gpucat export`: a trained model as an ONNX graph."""

from __future__ import annotations

import argparse

from gpucat.config import DTYPES
from gpucat.files import check_writable


def add(sub) -> None:
    x = sub.add_parser("export", help="write a trained model as an ONNX graph")
    x.set_defaults(run=run)
    x.add_argument("--model", required=True, help="a .safetensors or original-program JSON model")
    x.add_argument("--out", required=True, help="the .onnx file to write")
    x.add_argument(
        "--input",
        choices=("images", "features"),
        default="images",
        help="images: raw uint8 (N, 64, 64, 3); features: normalized float (N, 12288)",
    )
    x.add_argument(
        "--dtype", choices=DTYPES, default="float32", help="the graph's type (default: float32)"
    )


def run(args: argparse.Namespace) -> None:
    from gpucat.modelfiles.export import export_onnx
    from gpucat.modelfiles.model import load_model

    check_writable(args.out)
    model = load_model(args.model)
    export_onnx(model, args.out, args.input, args.dtype)
    sizes = "-".join(map(str, model.layer_sizes))
    print(f"Saved {args.model} ({sizes}) as ONNX to {args.out}: input {args.input}, {args.dtype}")
