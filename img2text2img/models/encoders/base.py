"""The encoder contract every path shares: images [B, 3, S, S] -> (pooled [B, D], grid [B, N, D]).

What an encoder is (`EncoderSpec`: how to build the ImageNet classifier, run its feature trunk, find its blocks and
weight files, and prepare its images) lives here, below the fast paths (int8, ONNX) and the `Encoder` module that use
it, so that none of them has to import another to agree on the contract.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from img2text2img.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)

Features = tuple[torch.Tensor, torch.Tensor]  # (pooled [B, D], grid [B, N, D])


def pooled_and_grid(fmap: torch.Tensor) -> Features:
    """A feature map [B, D, h, w] as every encoder path returns it: (pooled [B, D], grid [B, h*w, D])."""
    return fmap.mean(dim=(2, 3)), fmap.flatten(2).transpose(1, 2)


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """A content hash of weights that did not come from a file we can hash (a download, a fine-tuned trunk)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


@dataclass(frozen=True)
class Preprocess:
    """How an encoder's images must be prepared: resize the shorter side to `resize_size`, center-crop `image_size`,
    scale to [0, 1], normalise with `mean` / `std`. Travels with the encoder so nobody re-types these numbers."""

    image_size: int  # S: the side of the square crop fed to the network
    resize_size: int  # shorter side after resizing, before the center crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bilinear" | "bicubic" | "nearest"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def transform(self) -> Callable:
        """A callable PIL.Image (RGB) -> FloatTensor [3, S, S], normalised."""
        return PilTransform(self)


PIL_RESAMPLE = {"bilinear": 2, "bicubic": 3, "nearest": 0}  # PIL's codes, as torchvision maps its modes


class PilTransform:
    """torchvision's Resize(shorter side) + CenterCrop + ToTensor + Normalize on a PIL image, step for step (the same
    numbers), without importing torchvision: that import alone is seconds of every inference command's start-up."""

    def __init__(self, p: Preprocess):
        self.resize, self.size, self.resample = p.resize_size, p.image_size, PIL_RESAMPLE[p.interpolation]
        self.mean = np.asarray(p.mean, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(p.std, np.float32).reshape(-1, 1, 1)

    def __call__(self, im) -> torch.Tensor:
        w, h = im.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize, int(self.resize * long / short)
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        if size != (w, h):
            im = im.resize(size, self.resample)
        c = self.size
        if c > im.width or c > im.height:  # torchvision pads with zeros, the odd pixel on the right / bottom
            canvas = Image.new(im.mode, (max(c, im.width), max(c, im.height)))
            canvas.paste(im, (max(0, (c - im.width) // 2), max(0, (c - im.height) // 2)))
            im = canvas
        top, left = round((im.height - c) / 2.0), round((im.width - c) / 2.0)  # torchvision's rounding
        im = im.crop((left, top, left + c, top + c))
        # in numpy, not torch: a few small elementwise ops per image, which torch spreads over its threads and a busy
        # machine makes wait for each other (most of the cost of a folder); float32 either way, the same numbers
        x = np.asarray(im, np.uint8).reshape(c, c, -1).transpose(2, 0, 1).astype(np.float32) / np.float32(255)
        return torch.from_numpy(np.ascontiguousarray((x - self.mean) / self.std))


def imagenet_preprocess(size: int = 224, resize: int = 256, interp: str = "bilinear", half: bool = False) -> Preprocess:
    return Preprocess(size, resize, HALF if half else IMAGENET_MEAN, HALF if half else IMAGENET_STD, interp)


@dataclass(frozen=True)
class WeightSource:
    """One file that holds an encoder's weights: its file name, expected sha256 and, for a file shipped inside a pip
    package, the package's module and the path within it. `convert` maps foreign key names onto the constructor's."""

    filename: str
    sha256: str | None = None
    package: str | None = None  # importable module name of a weights package
    package_path: str | None = None  # path of the file inside that package
    convert: Callable[[dict, nn.Module], dict] | None = None


@dataclass(frozen=True)
class EncoderSpec:
    """Everything the registry knows about one encoder."""

    name: str
    constructor: str  # e.g. "torchvision.mobilenet_v2" or "timm.tf_efficientnet_lite0"
    num_features: int  # D
    preprocess: Preprocess
    build: Callable[[bool], nn.Module]  # build(init_weights) -> full classifier (head included)
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, images [B,3,S,S]) -> fmap [B, D, h, w]
    head: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None  # (model, fmap) -> ImageNet logits [B, 1000]
    blocks: Callable[[nn.Module], list[nn.Module]]  # feature-path blocks, input side first
    head_modules: tuple[str, ...] = ()  # attribute names dropped when the classifier head is not kept
    sources: tuple[WeightSource, ...] = ()  # accepted weight files, preferred first
    download: Callable[[], tuple[dict, str]] | None = None  # opt-in: () -> (state_dict, sha256)
    quality: str = ""  # one line for `i2t encoders`
    prepare: Callable[[nn.Module], None] | None = None  # after loading: e.g. hide auxiliary classifiers

    @property
    def default_file(self) -> str | None:
        return self.sources[0].filename if self.sources else None

    @property
    def random_init(self) -> bool:
        """Built without any weight file (small_cnn): nothing to find, nothing to check."""
        return not self.sources and self.download is None


# name -> a builder of its spec; `backbones.py` registers every encoder with `@ENCODERS.register(name)`
ENCODERS: Registry[Callable[[], EncoderSpec]] = Registry("encoder")


def list_encoders() -> list[str]:
    return ENCODERS.names()


def encoder_spec(name: str) -> EncoderSpec:
    return ENCODERS.get(name)()
