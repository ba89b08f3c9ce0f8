"""Tensors to PIL pictures, and pictures to one PNG grid (written atomically)."""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from img2text2img.errors import I2TError
from img2text2img.io import write_bytes_atomic


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """[B, 3, H, W] in [0, 1] -> list of RGB PIL images."""
    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


def make_grid(images: Sequence | torch.Tensor, ncol: int | None = None, pad: int = 2, background: int = 255) -> Image.Image:
    """PIL images (or a [B, 3, H, W] tensor) -> one PIL image, `ncol` per row (default: near-square)."""
    if isinstance(images, torch.Tensor):
        images = to_pil(images)
    images = list(images)
    if not images:
        raise I2TError("no images to put in a grid")
    if len(images) == 1:
        return images[0].copy()
    ncol = ncol or math.ceil(math.sqrt(len(images)))
    nrow = math.ceil(len(images) / ncol)
    w, h = images[0].size
    grid = Image.new("RGB", (ncol * w + (ncol + 1) * pad, nrow * h + (nrow + 1) * pad), (background,) * 3)
    for i, im in enumerate(images):
        r, c = divmod(i, ncol)
        grid.paste(im.convert("RGB"), (pad + c * (w + pad), pad + r * (h + pad)))
    return grid


def save_grid(images: Sequence | torch.Tensor, path: str | Path, ncol: int | None = None, scale: int = 1) -> Path:
    """Write images as one PNG (a single image as itself), atomically; `scale` enlarges with nearest neighbour."""
    grid = make_grid(images, ncol)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
    return path
