"""A frozen encoder run by ONNX Runtime: the default bulk-inference path for images on the CPU.

Why: the default encoders are mostly depthwise convolutions, which ONNX Runtime's CPU kernels run much faster than
PyTorch's (docs/BENCHMARKS.md), and the encoder is most of the time of batched captioning. The trunk is exported in
memory once per process (nothing written, nothing downloaded), so no `.onnx` file has to be kept in step with the
weights. `backend_choice` says which path a call takes.
"""
from __future__ import annotations

import io
import os
import warnings

import torch
from torch import nn

from img2text2img.errors import I2TError
from img2text2img.models.encoders.base import Features, pooled_and_grid

BACKENDS = ("auto", "onnx", "torch")
BACKEND_ENV = "I2T_ENCODER_BACKEND"


def backend_choice(backend: str | None = None) -> str:
    """The bulk-inference backend to use: `backend` if given, else the `I2T_ENCODER_BACKEND` setting, else "auto"
    (ONNX Runtime when it is installed, TorchScript otherwise)."""
    choice = (backend or os.environ.get(BACKEND_ENV) or "auto").strip().lower()
    if choice not in BACKENDS:
        raise I2TError(f"encoder backend {choice!r} is not one of {', '.join(BACKENDS)} (set by {BACKEND_ENV})")
    return choice


def uses_onnx(backend: str | None = None) -> bool:
    """Whether bulk inference with this backend choice runs in ONNX Runtime (what "auto" resolves to here)."""
    choice = backend_choice(backend)
    return choice == "onnx" or (choice == "auto" and onnx_available())


def onnx_available() -> bool:
    try:
        import onnx  # noqa: F401  - the exporter needs it
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


class _FeatureMap(nn.Module):
    """What gets exported: images -> feature map, the part of `Encoder.forward` that holds the weights."""

    def __init__(self, encoder: nn.Module):
        super().__init__()
        self.encoder = encoder

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder.feature_map(images)


class OnnxEncoder:
    """images [B, 3, H, W] -> (pooled [B, D], grid [B, N, D]), the same outputs as `Encoder.forward` (to ~1e-5), for
    any batch size and image size; runs with the torch thread count in force when it was built."""

    def __init__(self, encoder: nn.Module, example: torch.Tensor, threads: int | None = None):
        import onnxruntime as ort

        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")  # the exporter's deprecation and tracer warnings
            torch.onnx.export(_FeatureMap(encoder).eval(), (example[:1].detach().clone(),), buf,
                              input_names=["images"], output_names=["fmap"], opset_version=17, dynamo=False,
                              dynamic_axes={"images": {0: "batch", 2: "height", 3: "width"},
                                            "fmap": {0: "batch", 2: "h", 3: "w"}})
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads or torch.get_num_threads())
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only: the optimizer's notes are not for users
        # ORT's worker threads may spin between its operators (faster), but must stop when a run ends: spinning on,
        # they take the cores from the torch decoder that runs next
        options.add_session_config_entry("session.force_spinning_stop", "1")
        self.session = ort.InferenceSession(buf.getvalue(), options, providers=["CPUExecutionProvider"])

    def __call__(self, images: torch.Tensor) -> Features:
        x = images.detach().to("cpu", torch.float32).contiguous().numpy()
        return pooled_and_grid(torch.from_numpy(self.session.run(["fmap"], {"images": x})[0]))
