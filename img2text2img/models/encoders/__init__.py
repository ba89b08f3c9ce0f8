"""Image encoders: ImageNet CNNs (torchvision / timm) as `images -> (pooled [B, D], grid [B, N, D])` extractors.

base.py      the contract: EncoderSpec, Preprocess, the ENCODERS registry, pooled_and_grid
backbones.py the networks, registered by name (mobilenet_v2, efficientnet_lite0, ..., small_cnn)
weights.py   finding and verifying local weight files (never a download unless asked)
encoder.py   the Encoder module and create_encoder
int8.py, onnx.py  the opt-in int8 and the default ONNX Runtime paths for bulk CPU inference
"""
from img2text2img.models.encoders import backbones  # noqa: F401  - registers the encoders
from img2text2img.models.encoders.backbones import SmallCNN
from img2text2img.models.encoders.base import (
    ENCODERS,
    HALF,
    IMAGENET_MEAN,
    IMAGENET_STD,
    EncoderSpec,
    Features,
    Preprocess,
    WeightSource,
    encoder_spec,
    list_encoders,
    pooled_and_grid,
)
from img2text2img.models.encoders.encoder import Encoder, create_encoder
from img2text2img.models.encoders.weights import read_state_dict, resolve_weights, weight_dirs

__all__ = ["ENCODERS", "HALF", "IMAGENET_MEAN", "IMAGENET_STD", "Encoder", "EncoderSpec", "Features", "Preprocess",
           "SmallCNN", "WeightSource", "create_encoder", "encoder_spec", "list_encoders", "pooled_and_grid",
           "read_state_dict", "resolve_weights", "weight_dirs"]
