"""Model files: gpucat's safetensors and the original program's JSON (model.py), and the
network exported as ONNX (export.py)."""
