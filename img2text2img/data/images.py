"""Reading user images robustly: any mode Pillow knows becomes RGB, EXIF rotation is applied, and every way a file
can be bad becomes a one-line `I2TError` instead of a traceback."""
from __future__ import annotations

import warnings
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

from img2text2img.errors import I2TError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
MAX_PIXELS = 89_478_485  # Pillow's own default bomb limit (~ 9459 x 9459), made explicit so errors can name it


def load_image(path: str | Path, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Open an image file as an RGB PIL image (first frame of animations; alpha composited on `background`)."""
    path = Path(path)
    if not path.exists():
        raise I2TError(f"image not found: {path}")
    if path.is_dir():
        raise I2TError(f"{path} is a folder, not an image")
    if path.stat().st_size == 0:
        raise I2TError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise I2TError(f"{path}: {w}x{h} image is larger than the {MAX_PIXELS:,}-pixel limit (decompression bomb guard)")
                im.seek(0)
                im.load()
                im = ImageOps.exif_transpose(im)
                return to_rgb(im, background)
    except I2TError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise I2TError(f"{path}: image is larger than the {MAX_PIXELS:,}-pixel limit (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise I2TError(f"{path}: not an image file Pillow can read") from None
    except (OSError, SyntaxError, ValueError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise I2TError(f"{path}: broken or truncated image ({msg})") from None


def to_rgb(im: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB; transparency is flattened onto `background`."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit grey: scale to 8 bits by the value range rather than clipping at 255.
        import numpy as np

        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if a.max() > 255 else 255.0
        im = Image.fromarray((a / hi * 255.0).clip(0, 255).astype("uint8"), "L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (*background, 255))
        im = Image.alpha_composite(bg, im)
    return im.convert("RGB")


def list_images(paths: list[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders into image files (sorted); return (images, [(path, reason)] for skipped entries)."""
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            for q in sorted(p.iterdir()):
                if q.is_file() and q.suffix.lower() in IMAGE_SUFFIXES:
                    found.append(q)
                elif q.is_file():
                    skipped.append((q, "not an image file type"))
        elif p.exists():
            found.append(p)
        else:
            skipped.append((p, "not found"))
    return found, skipped
