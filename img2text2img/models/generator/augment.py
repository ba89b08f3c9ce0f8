"""DiffAugment (Zhao et al. 2020): random colour, translation and cutout applied to every picture the GAN's
discriminator sees, real and drawn alike, through differentiable ops so the generator learns through them.

With a few thousand photos the discriminator otherwise memorises the training set and its gradient stops telling
the generator anything; augmenting only the real pictures would teach the generator to draw the augmentations.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from img2text2img.errors import I2TError

POLICIES = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """'color,translation,cutout' -> its parts; '' or 'none' -> () (no augmentation)."""
    parts = tuple(p.strip() for p in policy.split(",") if p.strip() and p.strip() != "none")
    bad = [p for p in parts if p not in POLICIES]
    if bad:
        raise I2TError(f"unknown DiffAugment part {bad[0]!r}; choose from: {', '.join(POLICIES)}")
    return parts


def rand(n: int, generator: torch.Generator | None, device) -> torch.Tensor:
    """n uniforms in [0, 1) drawn on the CPU (so a seed gives the same augmentation on any device)."""
    return torch.rand(n, generator=generator).to(device)


def color(x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
    """Brightness +-0.5, saturation x[0, 2], contrast x[0.5, 1.5], per picture (images in [0, 1])."""
    b, dev = x.shape[0], x.device
    x = x + (rand(b, g, dev) - 0.5).view(b, 1, 1, 1).to(x.dtype)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (rand(b, g, dev) * 2).view(b, 1, 1, 1).to(x.dtype) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (rand(b, g, dev) + 0.5).view(b, 1, 1, 1).to(x.dtype) + mean


def translation(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.125) -> torch.Tensor:
    """Shift each picture by up to `ratio` of its side, zero-filled (a gather, so gradients reach every pixel)."""
    b, _, h, w = x.shape
    sh, sw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    dy = (rand(b, g, x.device) * (2 * sh + 1)).long() - sh
    dx = (rand(b, g, x.device) * (2 * sw + 1)).long() - sw
    ys = (torch.arange(h, device=x.device)[None, :] + dy[:, None]).clamp(-1, h)  # B x H, -1 / h = padding
    xs = (torch.arange(w, device=x.device)[None, :] + dx[:, None]).clamp(-1, w)
    padded = F.pad(x, [1, 1, 1, 1])  # B x C x H+2 x W+2
    rows = padded[torch.arange(b, device=x.device)[:, None], :, ys + 1]  # B x H x C x W+2
    out = rows.gather(3, (xs + 1)[:, None, None, :].expand(-1, h, x.shape[1], -1))  # B x H x C x W
    return out.permute(0, 2, 1, 3)


def cutout(x: torch.Tensor, g: torch.Generator | None, ratio: float = 0.5) -> torch.Tensor:
    """Zero one square of half the side per picture, at a random place."""
    b, _, h, w = x.shape
    ch, cw = int(h * ratio + 0.5), int(w * ratio + 0.5)
    cy = (rand(b, g, x.device) * (h + 1 - ch % 2)).long()
    cx = (rand(b, g, x.device) * (w + 1 - cw % 2)).long()
    yy = torch.arange(h, device=x.device)[None, :, None]
    xx = torch.arange(w, device=x.device)[None, None, :]
    y0, x0 = (cy - ch // 2)[:, None, None], (cx - cw // 2)[:, None, None]
    keep = ~((yy >= y0) & (yy < y0 + ch) & (xx >= x0) & (xx < x0 + cw))  # B x H x W
    return x * keep[:, None].to(x.dtype)


OPS = {"color": color, "translation": translation, "cutout": cutout}


def diff_augment(x: torch.Tensor, policy: str | tuple[str, ...] = POLICIES,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Images [B, 3, H, W] in [0, 1] -> augmented images (differentiable in x). The same `generator` state gives
    the same augmentation, so seeded calls on real and drawn pictures transform them identically."""
    for name in parse_policy(policy) if isinstance(policy, str) else policy:
        x = OPS[name](x, generator)
    return x
