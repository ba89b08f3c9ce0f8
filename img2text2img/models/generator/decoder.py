"""The convolutional pieces of the pixel / vae / gan generators: the upsampling image decoder, the down-sampling
stack (the VAE's image encoder, the GAN's discriminator trunk) and the matching-aware discriminator."""
from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from img2text2img.models.generator.config import GeneratorConfig
from img2text2img.models.generator.text import TextEncoder


class ImageDecoder(nn.Module):
    """Vector [B, D] -> image [B, 3, S, S] in [0, 1].

    dense -> C0 x 4 x 4 -> (2x transposed conv, BN, ReLU) per stage up to S/2 -> 3x3 conv to 3*4 channels ->
    pixel shuffle to S. The last, most expensive doubling is a free reshuffle of channels into pixels, which keeps
    edges sharp (unlike a bilinear upsample) at a quarter of the cost of a full-resolution conv stage.

    With `film`, each stage's BatchNorm output is scaled and shifted per channel by the conditioning vector
    (x * (1 + gamma(v)) + beta(v)), so words like "red" reach every layer directly instead of only through the
    4x4 map."""

    def __init__(self, in_dim: int, channels: Sequence[int], film: bool = False):
        super().__init__()
        c0 = channels[0]
        self.fc = nn.Sequential(nn.Linear(in_dim, c0 * 16))  # a Sequential so checkpoints keep the key "fc.0"
        self.c0 = c0
        # A stride-2 4x4 transposed conv upsamples and mixes in one op: 16 MACs per input pixel and channel pair,
        # against 36 for nearest-upsample + 3x3 conv; on a CPU that difference is the training budget.
        self.ups = nn.ModuleList(nn.ConvTranspose2d(ci, co, 4, stride=2, padding=1, bias=False)
                                 for ci, co in pairwise(channels))
        self.norms = nn.ModuleList(nn.BatchNorm2d(co) for co in channels[1:])
        self.films = nn.ModuleList(nn.Linear(in_dim, 2 * co) for co in channels[1:]) if film else None
        if film:  # a fresh FiLM is the identity
            for f in self.films:
                nn.init.zeros_(f.weight)
                nn.init.zeros_(f.bias)
        self.to_rgb = nn.Conv2d(channels[-1], 3 * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(v)).view(v.shape[0], self.c0, 4, 4)  # B x C0 x 4 x 4
        for i, (up, norm) in enumerate(zip(self.ups, self.norms)):
            x = norm(up(x))  # B x C_i x 2s x 2s
            if self.films is not None:
                gamma, beta = self.films[i](v)[:, :, None, None].chunk(2, dim=1)
                x = x * (1 + gamma) + beta
            x = F.relu(x)
        return torch.sigmoid(self.shuffle(self.to_rgb(x)))  # B x 3 x S x S


def down_stack(channels: Sequence[int], spectral: bool) -> nn.Sequential:
    """Image [B, 3, 64, 64] -> [B, C_last, 4, 4] with stride-2 4x4 convs (one per halving)."""
    wrap = nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)
    layers, cin = [], 3
    for i, cout in enumerate(channels):
        layers.append(wrap(nn.Conv2d(cin, cout, 4, stride=2, padding=1)))
        if not spectral and i > 0:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        cin = cout
    return nn.Sequential(*layers)


class Discriminator(nn.Module):
    """(image [B, 3, 64, 64], ids [B, T]) -> score [B]; its own text encoder so it cannot pull the generator's."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.text = TextEncoder(cfg.vocab_size, cfg.embed_dim, cfg.text_hidden, cfg.text_layers, cfg.dropout)
        self.features = down_stack(cfg.enc_channels, spectral=True)
        c = cfg.enc_channels[-1]
        self.side = cfg.image_size // 2 ** len(cfg.enc_channels)
        self.text_proj = nn.Linear(self.text.out_dim, 128)
        self.joint = nn.Sequential(sn(nn.Conv2d(c + 128, c, 1)), nn.LeakyReLU(0.2, inplace=True))
        self.out = sn(nn.Linear(c * self.side * self.side, 1))

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.score(images, self.sentence(ids))

    def sentence(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] -> the discriminator's sentence vectors [B, 128] (split out so the gradient penalty can
        differentiate with respect to them, as DF-GAN's matching-aware penalty does)."""
        return self.text_proj(self.text(ids))

    def score(self, images: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        """(images [B, 3, 64, 64] in [0, 1], sentence vectors [B, 128]) -> scores [B]."""
        f = self.features(images * 2 - 1)  # B x C x s x s
        t = sentence[:, :, None, None].expand(-1, -1, f.shape[2], f.shape[3])
        return self.out(self.joint(torch.cat([f, t], 1)).flatten(1)).squeeze(1)  # B
