"""ONNX export: a trained network as a standard graph that onnxruntime, PyTorch and others run.

    gpucat export --model cat.safetensors --out cat.onnx [--input images|features]

``images`` (the default) takes raw pictures, uint8 (N, 64, 64, 3) in height-width-channel
order, and does gpucat's preprocessing inside the graph (flatten, divide by 255);
``features`` takes the 12,288 normalized values per image, float (N, 12288). The output
``p_cat`` (N, 1) is P(cat). The layers are Gemm (X @ Wᵀ + b), ReLU in hidden layers,
Sigmoid at the end: the same function as gpucat's forward pass.
"""

from __future__ import annotations

import os

import numpy as np

from gpucat import __version__
from gpucat.data.dataset import IMAGE_SHAPE, N_FEATURES
from gpucat.errors import GpucatError
from gpucat.files import atomic_write
from gpucat.modelfiles.model import Model

OPSET = 17
INPUTS = ("images", "features")


def _onnx():
    try:
        import onnx
    except ImportError:
        raise GpucatError(
            "ONNX export needs the onnx package, which is not installed: "
            "pip install 'gpucat[onnx]' (or pip install onnx)."
        ) from None
    return onnx


def to_onnx(model: Model, inputs: str = "images", dtype: str = "float32"):
    """The model as an onnx.ModelProto (checked by onnx.checker)."""
    onnx = _onnx()
    from onnx import TensorProto, helper, numpy_helper

    if inputs not in INPUTS:
        raise GpucatError(f"--input must be one of {', '.join(INPUTS)}, got {inputs!r}.")
    ftype = {"float32": TensorProto.FLOAT, "float64": TensorProto.DOUBLE}[dtype]
    nodes, inits = [], []
    if inputs == "images":
        graph_input = helper.make_tensor_value_info(
            "images", TensorProto.UINT8, ["N", *IMAGE_SHAPE]
        )
        inits += [
            numpy_helper.from_array(np.array([-1, N_FEATURES], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(np.array(255.0, dtype=dtype), "full_scale"),
        ]
        nodes += [
            helper.make_node("Reshape", ["images", "flat_shape"], ["pixels"]),
            helper.make_node("Cast", ["pixels"], ["pixels_f"], to=ftype),
            helper.make_node("Div", ["pixels_f", "full_scale"], ["A0"]),
        ]
    else:
        graph_input = helper.make_tensor_value_info("features", ftype, ["N", N_FEATURES])
        nodes.append(helper.make_node("Identity", ["features"], ["A0"]))
    last = len(model.params)
    for l, (W, b) in enumerate(model.params, start=1):
        inits += [
            numpy_helper.from_array(np.asarray(W, dtype=dtype), f"W{l}"),
            numpy_helper.from_array(np.asarray(b, dtype=dtype).reshape(-1), f"b{l}"),
        ]
        nodes.append(helper.make_node("Gemm", [f"A{l - 1}", f"W{l}", f"b{l}"], [f"Z{l}"], transB=1))
        act = "Sigmoid" if l == last else "Relu"
        nodes.append(helper.make_node(act, [f"Z{l}"], ["p_cat" if l == last else f"A{l}"]))
    output = helper.make_tensor_value_info("p_cat", ftype, ["N", 1])
    graph = helper.make_graph(nodes, "gpucat", [graph_input], [output], inits)
    proto = helper.make_model(
        graph,
        producer_name="gpucat",
        producer_version=__version__,
        opset_imports=[helper.make_opsetid("", OPSET)],
        doc_string=(
            "P(cat) for 64x64 RGB images: "
            + (
                "uint8 (N, 64, 64, 3), height-width-channel, divided by 255 inside."
                if inputs == "images"
                else "float (N, 12288): pixels flattened height-width-channel, divided by 255."
            )
        ),
    )
    proto.ir_version = min(proto.ir_version, 9)  # readable by older onnxruntime releases too
    onnx.checker.check_model(proto)
    return proto


def export_onnx(
    model: Model, path: str | os.PathLike, inputs: str = "images", dtype: str = "float32"
) -> None:
    """Write the model to ``path`` as ONNX, atomically."""
    atomic_write(path, to_onnx(model, inputs, dtype).SerializeToString())
