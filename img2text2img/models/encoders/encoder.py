"""The `Encoder` module every model sits on, and `create_encoder(name)` that builds one from the registry.

Why one module for all CNNs: captioner, tagger and the feature cache should not care which network they use; they
see `forward(images) -> (pooled [B, D], grid [B, N, D])`, a preprocessing transform, and an identity for caches.
"""
from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.models.encoders.base import EncoderSpec, Features, encoder_spec, pooled_and_grid, state_sha256
from img2text2img.models.encoders.int8 import QuantizedEncoder, quantize_trunk
from img2text2img.models.encoders.onnx import OnnxEncoder, backend_choice, uses_onnx
from img2text2img.models.encoders.weights import resolve_weights


def first_line(e: BaseException) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


class Encoder(nn.Module):
    """A frozen-by-default CNN trunk. forward(images [B,3,S,S]) -> (pooled [B, D], grid [B, N, D]).

    `pooled` is the global average of `grid` (what the ImageNet head sees); `grid` keeps the h*w positions of the
    last feature map in row-major order, for attention decoders. Frozen parts stay in eval mode (BatchNorm running
    statistics never move) even when the surrounding model calls `.train()`.
    """

    def __init__(self, spec: EncoderSpec, model: nn.Module, weights_sha256: str | None = None,
                 weights_source: str | None = None, trainable_blocks: int = 0, keep_head: bool = False):
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.num_features = spec.num_features
        self.preprocess = spec.preprocess
        self.weights_sha256 = weights_sha256
        self.weights_source = weights_source  # where the weights came from (a path, a package, "download", None)
        self.has_head = keep_head
        if not keep_head:
            for attr in spec.head_modules:
                setattr(model, attr, nn.Identity())
        self.model = model
        self.cached_grid_hw: tuple[int, int] | None = None
        self.set_trainable_blocks(trainable_blocks)

    @property
    def blocks(self) -> list[nn.Module]:
        return self.spec.blocks(self.model)

    def set_trainable_blocks(self, n: int) -> None:
        """Freeze everything, then unfreeze the last `n` blocks (n=0: fully frozen; n >= len(blocks): all)."""
        if n < 0:
            raise I2TError(f"trainable_blocks must be >= 0, got {n}")
        self.trainable_blocks = n
        self.model.requires_grad_(False)
        blocks = self.blocks
        self.trainable = blocks[len(blocks) - min(n, len(blocks)):] if n else []
        for b in self.trainable:
            b.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        self.model.eval()  # frozen BatchNorm keeps its ImageNet statistics
        for b in self.trainable:
            b.train(mode)
        return self

    def transform(self) -> Callable:
        """PIL.Image -> FloatTensor [3, S, S] with this encoder's preprocessing."""
        return self.preprocess.transform()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] -> fmap [B, D, h, w]."""
        return self.spec.features(self.model, images)

    def forward(self, images: torch.Tensor) -> Features:
        return pooled_and_grid(self.feature_map(images))

    def for_bulk_inference(self, example: torch.Tensor, backend: str | None = None) -> Callable[[torch.Tensor], Features]:
        """A fast frozen copy of this encoder for encoding many images on the CPU, with the same outputs (~1e-5).

        `backend` (default: `$I2T_ENCODER_BACKEND`, else "auto"): "onnx" runs the trunk in ONNX Runtime; "torch"
        freezes a TorchScript trace (BatchNorm folded, conv + activation fused); "auto" is ONNX Runtime when it is
        installed and exports, else TorchScript. Only a frozen encoder in eval mode on the CPU is converted (a trace
        must not capture training behaviour); anything else, or a conversion that fails, returns `self`. `example`
        is one batch of input; the result accepts any batch size.
        """
        choice = backend_choice(backend)
        if self.training or self.trainable_blocks or example.device.type != "cpu":
            return self
        if uses_onnx(choice):
            try:
                return OnnxEncoder(self, example)
            except Exception as e:  # noqa: BLE001 - an exporter or runtime failure: TorchScript is still correct
                if choice == "onnx":
                    warnings.warn(f"ONNX Runtime for {self.name} failed ({first_line(e)}); using TorchScript",
                                  stacklevel=2)
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer warnings about python-side shape arithmetic
                traced = torch.jit.trace(self, example[:2].clone(), check_trace=False)
                return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        except Exception:  # noqa: BLE001 - an exotic user-built trunk that does not trace: the plain module is right
            return self

    def quantized_for_inference(self, calibration: torch.Tensor) -> Callable[[torch.Tensor], Features]:
        """An int8 copy of this encoder for bulk CPU inference (opt-in), else the `for_bulk_inference` fp32 one.

        Post-training static quantization (`encoders.int8`) calibrated on `calibration` [N, 3, S, S] (already
        preprocessed real images; the same images in the same order give the same model). Features move a little,
        so captions can change: never the default. The result only accepts S x S images. When quantization is not
        possible it warns and returns the fp32 path.
        """
        if self.training or self.trainable_blocks or calibration.device.type != "cpu":
            warnings.warn(f"int8 {self.name}: only a frozen encoder in eval mode on the CPU is quantized; using fp32",
                          stacklevel=2)
            return self.for_bulk_inference(calibration)
        try:
            trunk = quantize_trunk(self.model, self.spec.features, calibration)
        except Exception as e:  # noqa: BLE001 - FX tracing / quantization fails in many ways on foreign trunks
            warnings.warn(f"int8 quantization of {self.name} failed ({first_line(e)}); using fp32", stacklevel=2)
            return self.for_bulk_inference(calibration)
        return QuantizedEncoder(trunk, (int(calibration.shape[-2]), int(calibration.shape[-1])))

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, 1000]; only for an encoder built with `keep_head=True` (checks weights/preprocessing)."""
        if not self.has_head or self.spec.head is None:
            raise I2TError(f"encoder {self.name} was built without its classifier head (use keep_head=True)")
        return self.spec.head(self.model, self.feature_map(images))

    @property
    def grid_hw(self) -> tuple[int, int]:
        """(h, w) of the feature map for this encoder's input size (one dry run, remembered)."""
        if self.cached_grid_hw is None:
            p = next(self.model.parameters())
            with torch.no_grad(), evaluating(self):
                fmap = self.feature_map(torch.zeros(1, 3, self.preprocess.image_size, self.preprocess.image_size,
                                                    device=p.device, dtype=p.dtype))
            self.cached_grid_hw = (int(fmap.shape[2]), int(fmap.shape[3]))
        return self.cached_grid_hw

    def fingerprint(self) -> str:
        """The weights' identity for caches: the file sha256 while frozen, else a hash of the current tensors
        (random init, or blocks being fine-tuned)."""
        if self.weights_sha256 is not None and self.trainable_blocks == 0:
            return self.weights_sha256
        return "state:" + state_sha256(self.model.state_dict())

    def describe(self) -> dict[str, Any]:
        """JSON-able identity: what a feature cache or a checkpoint config records about this encoder."""
        return {"name": self.name, "constructor": self.spec.constructor, "num_features": self.num_features,
                "weights_sha256": self.weights_sha256, "preprocess": self.preprocess.to_dict()}


def create_encoder(
    name: str = "mobilenet_v2",
    *,
    pretrained: bool = True,
    weights: str | Path | None = None,
    allow_download: bool = False,
    trainable_blocks: int = 0,
    keep_head: bool = False,
) -> Encoder:
    """Build an encoder by registry name.

    pretrained=False gives random init (no file needed). `weights` is an explicit state-dict file (.safetensors or
    a torchvision-style .pth); otherwise the file is found as `encoders.weights` describes. `keep_head=True` keeps
    the ImageNet classifier for `Encoder.classify`.
    """
    spec = encoder_spec(name)
    if weights is not None:
        pretrained = True
    if not pretrained or (weights is None and spec.random_init):  # small_cnn
        return Encoder(spec, spec.build(True), None, None, trainable_blocks, keep_head)
    model = spec.build(False)
    state, sha, where = resolve_weights(spec, weights, allow_download, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "state dict mismatch"
        detail = " ".join(str(e).split())[:300]
        raise I2TError(f"{where}: weights do not match {spec.constructor} ({first} {detail})") from None
    if spec.prepare is not None:
        spec.prepare(model)
    return Encoder(spec, model, sha, where, trainable_blocks, keep_head)
