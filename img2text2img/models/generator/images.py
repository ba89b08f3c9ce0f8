"""Tensors to PIL pictures, and pictures (or a tensor of them) to one PNG grid (`img2text2img.grids`)."""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from img2text2img import grids


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [0, 1] -> list of RGB PIL images."""
    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


def make_grid(images: Sequence | torch.Tensor, ncol: int | None = None, pad: int = 2, background: int = 255) -> Image.Image:
    """PIL images (or a [B, 3, H, W] tensor) -> one PIL image, `ncol` per row (default: near-square)."""
    return grids.make_grid(to_pil(images) if isinstance(images, torch.Tensor) else images, ncol, pad, background)


def save_grid(images: Sequence | torch.Tensor, path: str | Path, ncol: int | None = None, scale: int = 1) -> Path:
    """Write images (or a tensor of them) as one PNG, atomically; `scale` enlarges with nearest neighbour."""
    return grids.save_grid(to_pil(images) if isinstance(images, torch.Tensor) else images, path, ncol, scale)
