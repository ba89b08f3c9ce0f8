"""What a latent GAN's network is (`LatentGANConfig`) and its named presets; it draws with the generators'
`DrawSettings` (temperature, guidance)."""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from img2text2img.errors import I2TError
from img2text2img.registry import Registry

JUDGES = ("latent", "pixel")


@dataclass
class LatentGANConfig:
    """Text encoder, a generator of autoencoder latents, its discriminator, and the frozen autoencoder's sizes."""

    kind: str = "latent-gan"  # what `load_model` dispatches generator checkpoints on
    vocab_size: int = 0
    max_tokens: int = 40
    image_size: int = 64
    embed_dim: int = 64
    text_hidden: int = 128  # the sentence vector is 2 * text_hidden (last state + mean)
    text_layers: int = 1
    z_dim: int = 64
    g_channels: tuple[int, ...] = (128, 64, 32)  # generator widths at 4 px, then one per doubling up to the latent
    d_channels: tuple[int, ...] = (48, 96, 192)  # discriminator widths, one per halving down to 4 px
    judge: str = "latent"  # what the discriminator sees: the latent, or the picture the frozen decoder makes of it
    # the frozen autoencoder (models.diffusion.autoencoder), as the diffusion run that trained it had it
    ae_channels: tuple[int, ...] = (16, 32, 128)
    ae_blocks: int = 1
    latent_channels: int = 4

    REMOVED: ClassVar[dict] = {}

    def __post_init__(self) -> None:
        self.g_channels, self.d_channels = tuple(self.g_channels), tuple(self.d_channels)
        self.ae_channels = tuple(self.ae_channels)
        if self.kind != "latent-gan":
            raise I2TError(f"LatentGANConfig: kind must be 'latent-gan', got {self.kind!r}")
        if self.z_dim <= 0:
            raise I2TError("a latent GAN needs z_dim > 0")
        if self.judge not in JUDGES:
            raise I2TError(f"judge must be one of {', '.join(JUDGES)}, not {self.judge!r}")
        n_up = int(math.log2(max(self.latent_side // 4, 1)))
        if 4 * 2**n_up != self.latent_side or len(self.g_channels) != n_up + 1:
            raise I2TError(f"a {self.latent_side}px latent needs {n_up + 1} generator widths (4 px doubling up)")
        side = (self.latent_side if self.judge == "latent" else self.image_size) // 2 ** len(self.d_channels)
        if side < 1:
            raise I2TError(f"{len(self.d_channels)} discriminator halvings leave nothing of a {self.judge}")

    @property
    def latent_side(self) -> int:
        return self.image_size // 2 ** (len(self.ae_channels) - 1)


PRESETS: Registry[Callable[..., LatentGANConfig]] = Registry("latent GAN preset")


@PRESETS.register("latent-gan")
def latent_gan(**kw) -> LatentGANConfig:
    """The Flickr8k model: its discriminator judges latents (a 16x16x4 latent costs a 48th of a 64x64 picture)."""
    return LatentGANConfig(**kw)


@PRESETS.register("latent-gan-pixel")
def latent_gan_pixel(**kw) -> LatentGANConfig:
    """The same generator against a discriminator of the decoded pictures (slower; texture-level gradients)."""
    return LatentGANConfig(**{"judge": "pixel", "d_channels": (16, 32, 64, 128), **kw})


@PRESETS.register("latent-gan-tiny")
def latent_gan_tiny(**kw) -> LatentGANConfig:
    """32x32 pictures, an 8x8 latent and a few thousand parameters per part: what the tests train in seconds."""
    base = LatentGANConfig(image_size=32, embed_dim=16, text_hidden=16, z_dim=8, g_channels=(32, 16),
                           d_channels=(16, 32), ae_channels=(16, 16, 32))
    return replace(base, **kw)


def latent_gan_config(name: str = "latent-gan", **overrides) -> LatentGANConfig:
    try:
        return PRESETS.get(name)(**overrides)
    except TypeError as e:
        raise I2TError(f"latent GAN preset {name!r}: {e}") from None


def latent_gan_presets() -> list[str]:
    return PRESETS.names()
