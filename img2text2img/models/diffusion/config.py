"""What a diffusion generator's network is (`DiffusionConfig`), how it draws (`DiffusionSettings`), and the named
presets of both sizes: the photo model and the tiny one the tests train in seconds."""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import ClassVar

from img2text2img.config import option
from img2text2img.errors import I2TError
from img2text2img.registry import Registry


@dataclass
class DiffusionConfig:
    """The network only: text encoder, autoencoder and latent denoiser sizes."""

    kind: str = "diffusion"  # what `load_model` dispatches generator checkpoints on
    vocab_size: int = 0
    max_tokens: int = 40  # words of a prompt that are read
    image_size: int = 64
    # text encoder (the project's LSTM TextEncoder): per-word states feed the denoiser's cross-attention
    embed_dim: int = 128
    text_hidden: int = 256
    text_layers: int = 1
    # autoencoder: one level per entry, each after the first halves the side (64 -> 16 with three levels)
    ae_channels: tuple[int, ...] = (16, 32, 128)
    ae_blocks: int = 1  # residual blocks per level
    latent_channels: int = 4
    # denoiser UNet over the latent: one level per entry, halving the side after each but the last
    unet_channels: tuple[int, ...] = (64, 96, 128)
    unet_blocks: int = 1  # residual blocks per level on the way down (one more on the way up)
    attention_levels: tuple[int, ...] = (1, 2)  # levels with self- and cross-attention (the middle always has it)
    heads: int = 4
    time_dim: int = 256

    REMOVED: ClassVar[dict] = {}

    def __post_init__(self):
        if self.kind != "diffusion":
            raise I2TError(f"DiffusionConfig: kind must be 'diffusion', got {self.kind!r}")
        self.ae_channels, self.unet_channels = tuple(self.ae_channels), tuple(self.unet_channels)
        self.attention_levels = tuple(self.attention_levels)
        for c in (*self.ae_channels, *self.unet_channels):
            if c % 8:
                raise I2TError(f"DiffusionConfig: channel counts must be multiples of 8 (GroupNorm), got {c}")
        if self.image_size % self.downsample:
            raise I2TError(f"DiffusionConfig: image_size {self.image_size} is not a multiple of {self.downsample}")
        if self.latent_side % 2 ** (len(self.unet_channels) - 1):
            raise I2TError(f"DiffusionConfig: a {self.latent_side}px latent cannot be halved "
                           f"{len(self.unet_channels) - 1} times")
        if any(not 0 <= lv < len(self.unet_channels) for lv in self.attention_levels):
            raise I2TError(f"DiffusionConfig: attention_levels {self.attention_levels} name levels that do not exist")

    @property
    def downsample(self) -> int:
        return 2 ** (len(self.ae_channels) - 1)

    @property
    def latent_side(self) -> int:
        return self.image_size // self.downsample


@dataclass
class DiffusionSettings:
    """How a diffusion generator draws; saved in the checkpoint's `inference` block, changeable per call."""

    steps: int = option(25, "DDIM denoising steps: fewer is faster, more is finer", min=1, max=1000)
    guidance: float = option(3.0, "classifier-free guidance scale (1 = none; higher follows the prompt more)",
                             min=0.0)


PRESETS: Registry = Registry("diffusion preset")


@PRESETS.register("diffusion")
def diffusion_photo(**overrides) -> DiffusionConfig:
    """The Flickr8k photo model: 0.9M-parameter autoencoder, 5.4M-parameter UNet."""
    return DiffusionConfig(**overrides)


@PRESETS.register("diffusion-tiny")
def diffusion_tiny(**overrides) -> DiffusionConfig:
    """32x32 pictures and a few thousand parameters per part: what the tests train in seconds."""
    base = DiffusionConfig(image_size=32, embed_dim=16, text_hidden=16, ae_channels=(16, 16, 32), ae_blocks=1,
                           unet_channels=(16, 32), unet_blocks=1, attention_levels=(1,), heads=2, time_dim=32)
    return replace(base, **overrides)


def diffusion_config(name: str = "diffusion", **overrides) -> DiffusionConfig:
    return PRESETS.get(name)(**overrides)
