"""The autoencoder: 64x64 RGB pictures <-> a small latent (16x16x4 for the photo preset) the denoiser works in.

Denoising a 16x16x4 latent costs a 48th of denoising 64x64 pixels, which is what makes diffusion trainable on a
CPU (latent diffusion, Rombach et al. 2022). Latents are shifted and scaled per channel to zero mean and unit
variance (`latent_mean` / `latent_std`, fitted after the autoencoder is trained), the scale the noise schedule
assumes.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from img2text2img.models.diffusion.layers import ResBlock, norm


class Autoencoder(nn.Module):
    def __init__(self, channels: Sequence[int], latent_channels: int, blocks: int = 1):
        super().__init__()
        c = list(channels)
        self.conv_in = nn.Conv2d(3, c[0], 3, padding=1)
        down: list[nn.Module] = []
        for i, co in enumerate(c):
            ci = c[max(i - 1, 0)]
            if i:
                down.append(nn.Conv2d(ci, ci, 3, stride=2, padding=1))  # halve the side
            down += [ResBlock(ci if j == 0 else co, co) for j in range(blocks)]
        self.down = nn.Sequential(*down)
        self.enc_out = nn.Sequential(norm(c[-1]), nn.SiLU(), nn.Conv2d(c[-1], latent_channels, 3, padding=1))
        self.dec_in = nn.Conv2d(latent_channels, c[-1], 3, padding=1)
        up: list[nn.Module] = []
        for i in reversed(range(len(c))):
            up += [ResBlock(c[i], c[i]) for _ in range(blocks + 1)]
            if i:  # double the side, narrowing to the next level's width first-thing (convs at 2x side cost 4x)
                up += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c[i], c[i - 1], 3, padding=1)]
        self.up = nn.Sequential(*up)
        self.dec_out = nn.Sequential(norm(c[0]), nn.SiLU(), nn.Conv2d(c[0], 3, 3, padding=1))
        self.register_buffer("latent_mean", torch.zeros(latent_channels))
        self.register_buffer("latent_std", torch.ones(latent_channels))

    def encode_raw(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] in [0, 1] -> latents [B, C, S/f, S/f] before normalisation."""
        return self.enc_out(self.down(self.conv_in(images * 2 - 1)))

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents -> pictures in [-1, 1] (unclamped: the L1 loss sees overshoot)."""
        return self.dec_out(self.up(self.dec_in(z)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Reconstruction in [-1, 1], for training."""
        return self.decode_raw(self.encode_raw(images))

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images in [0, 1] -> latents with unit variance per channel."""
        return (self.encode_raw(images) - self.latent_mean[:, None, None]) / self.latent_std[:, None, None]

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Unit-variance latents -> pictures [B, 3, S, S] in [0, 1]."""
        raw = z * self.latent_std[:, None, None] + self.latent_mean[:, None, None]
        return ((self.decode_raw(raw) + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def fit_latent_scale(self, raw: torch.Tensor) -> None:
        """Set the per-channel shift and scale from raw latents [N, C, h, w] of training pictures."""
        self.latent_mean.copy_(raw.mean(dim=(0, 2, 3)))
        self.latent_std.copy_(raw.std(dim=(0, 2, 3)).clamp(min=1e-4))


def reconstruction_l1(recon: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Mean absolute error of a reconstruction in [-1, 1] against pictures in [0, 1]."""
    return F.l1_loss(recon, images * 2 - 1)
