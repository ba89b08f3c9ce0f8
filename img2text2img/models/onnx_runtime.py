"""Where `from img2text2img.models.onnx_runtime import ...` keeps working: the ONNX path is `models/encoders/onnx.py`."""
from img2text2img.models.encoders.onnx import (
    BACKEND_ENV,
    BACKENDS,
    OnnxEncoder,
    backend_choice,
    onnx_available,
    uses_onnx,
)

__all__ = ["BACKENDS", "BACKEND_ENV", "OnnxEncoder", "backend_choice", "onnx_available", "uses_onnx"]
