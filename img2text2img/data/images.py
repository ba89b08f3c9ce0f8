"""Reading user images robustly: any mode Pillow knows becomes RGB, EXIF rotation is applied, and every way a file
can be bad becomes a one-line `I2TError` instead of a traceback.

The cost of one image is bounded before its pixels are decoded: the area (Pillow's bomb guard, made explicit) and the
aspect ratio, because the encoders resize the short side to ~256 pixels and a 20000x1 strip would become gigabytes.
"""
from __future__ import annotations

import errno
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from img2text2img.errors import I2TError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".bmp", ".webp", ".tif", ".tiff"}
MAX_PIXELS = 89_478_485  # Pillow's own default bomb limit (~ 9459 x 9459), made explicit so errors can name it
MAX_ASPECT = 50  # long side / short side: a panorama is ~10, a strip past this is no photo and explodes when resized


def check_image_size(width: int, height: int, where: str = "image") -> None:
    """Refuse, before decoding, a picture whose pixels or resized copy would cost more than a few hundred MB."""
    if width < 1 or height < 1:
        raise I2TError(f"{where}: {width}x{height} image has no pixels")
    if width * height > MAX_PIXELS:
        raise I2TError(f"{where}: {width}x{height} image is larger than the {MAX_PIXELS:,}-pixel limit "
                       "(decompression bomb guard)")
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise I2TError(f"{where}: {width}x{height} image is too elongated (aspect ratio above {MAX_ASPECT}:1; "
                       "resizing it for the model would take gigabytes); crop it first")


def load_image(path: str | Path, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Open an image file as an RGB PIL image (first frame of animations; alpha composited on `background`)."""
    path = Path(path)
    try:
        os.stat(path)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise I2TError(f"{path}: symbolic link loop") from None
        if path.is_symlink():
            raise I2TError(f"{path}: dangling symbolic link (its target {os.readlink(path)} is missing)") from None
        if e.errno == errno.ENOENT:
            raise I2TError(f"image not found: {path}") from None
        raise I2TError(f"{path}: cannot read ({e.strerror or e})") from None
    if path.is_dir():
        raise I2TError(f"{path} is a folder, not an image")
    if not path.is_file():
        raise I2TError(f"{path} is not a regular file (a pipe or a device?)")
    if path.stat().st_size == 0:
        raise I2TError(f"{path}: empty file (0 bytes)")
    return decode_image(path, str(path), background, not_an_image="not an image file Pillow can read")


def decode_image(source, where: str, background: tuple[int, int, int] = (255, 255, 255),
                 not_an_image: str = "not an image file Pillow can read") -> Image.Image:
    """A file path or a binary stream -> RGB image (first frame, EXIF rotation applied), its size checked before the
    pixels are decoded; every failure is one I2TError naming `where`. Files and uploads both decode through it."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(source) as im:
                check_image_size(*im.size, where=where)
                im.seek(0)
                im.load()
                return to_rgb(ImageOps.exif_transpose(im), background)
    except I2TError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise I2TError(f"{where}: image is larger than the {MAX_PIXELS:,}-pixel limit (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise I2TError(f"{where}: {not_an_image}") from None
    except PermissionError:
        raise I2TError(f"{where}: permission denied") from None
    except MemoryError:
        raise I2TError(f"{where}: not enough memory to decode this image") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure on one image is that image's failure, never the batch's
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise I2TError(f"{where}: broken or truncated image ({msg[:200]})") from None


def to_rgb(im: Image.Image, background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    """Any Pillow mode -> 8-bit RGB, as the CLI reads files: transparency is flattened onto `background`; 16-bit
    integers are scaled by their type's range (0..65535), other wide ranges (32-bit, float) by the values' range."""
    if not isinstance(im, Image.Image):
        raise I2TError(f"expected a PIL image or an image path, got {type(im).__name__}")
    if im.mode == "RGB":
        return im
    if im.mode.startswith("I;16"):
        im = _grey8(np.asarray(im, dtype=np.float32), 0.0, 65535.0)
    elif im.mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float32)  # float32 keeps a 9459^2 picture within a few hundred MB
        finite = a[np.isfinite(a)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if im.mode == "F" and lo >= 0 and hi <= 1:  # the usual float convention: 0 black, 1 white
            lo, hi = 0.0, 1.0
        elif lo >= 0 and hi <= 255:  # already 8-bit values held wide (L converted to I or F)
            lo, hi = 0.0, 255.0
        elif im.mode == "I" and lo >= 0 and hi <= 65535:  # how Pillow opens 16-bit PNG and TIFF files
            lo, hi = 0.0, 65535.0
        im = _grey8(np.nan_to_num(a, nan=lo, posinf=hi, neginf=lo), lo, hi)
    if im.mode in ("La", "RGBa"):
        im = im.convert("RGBA") if im.mode == "RGBa" else Image.merge("LA", im.split()).convert("RGBA")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (*background, 255))
        im = Image.alpha_composite(bg, im)
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as e:
        raise I2TError(f"image mode {im.mode} cannot be converted to RGB ({e})") from None


def _grey8(a: np.ndarray, lo: float, hi: float) -> Image.Image:
    scale = 255.0 / (hi - lo) if hi > lo else 0.0  # Python floats: a range as wide as float32's own cannot overflow
    with np.errstate(over="ignore", invalid="ignore"):
        g = a * np.float32(scale) - np.float32(lo * scale)
    return Image.fromarray(np.nan_to_num(g, nan=0.0).clip(0, 255).round().astype(np.uint8), "L")


def prepare_image(im: Image.Image) -> Image.Image:
    """An image handed to a model in memory (the Python API) checked and converted like a file the CLI reads."""
    if not isinstance(im, Image.Image):
        raise I2TError(f"expected a PIL image or an image path, got {type(im).__name__}")
    check_image_size(*im.size)
    return to_rgb(im)


def read_images(images) -> list[Image.Image]:
    """What the Python API accepts as images (paths, PIL images of any mode) as RGB PIL images."""
    return [load_image(im) if isinstance(im, (str, Path)) else prepare_image(im) for im in images]


def list_images(paths: list[str | Path]) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Expand files and folders into image files (sorted); return (images, [(path, reason)] for skipped entries).

    Broken symbolic links, link loops and pipes with an image suffix are returned as images, so that loading them
    reports the failure: a run over a folder must not drop silently a file the user expects. Subfolders are not
    entered."""
    found: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for p in map(Path, paths):
        if p.is_dir():
            try:
                entries = sorted(p.iterdir())
            except OSError as e:
                skipped.append((p, f"cannot list folder ({e.strerror or e})"))
                continue
            for q in entries:
                if q.suffix.lower() in IMAGE_SUFFIXES and (q.is_symlink() or not q.is_dir()):
                    found.append(q)  # regular files, and the links and pipes that will fail loudly
                elif q.is_file():
                    skipped.append((q, "not an image file type"))
        elif p.exists() or p.is_symlink():
            found.append(p)
        else:
            skipped.append((p, "not found"))
    return found, skipped
