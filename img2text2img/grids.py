"""Pictures to one PNG grid, with PIL alone: the torch generators and the torch-free runtime write grids alike."""
from __future__ import annotations

import io
import math
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from img2text2img.errors import I2TError
from img2text2img.io import write_bytes_atomic


def make_grid(images: Sequence[Image.Image], ncol: int | None = None, pad: int = 2,
              background: int = 255) -> Image.Image:
    """Pictures -> one picture, `ncol` per row (default: near-square)."""
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


def save_grid(images: Sequence[Image.Image], path: str | Path, ncol: int | None = None, scale: int = 1) -> Path:
    """Write pictures as one PNG (a single picture as itself), atomically; `scale` enlarges with nearest
    neighbour."""
    grid = make_grid(images, ncol)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
    return path
