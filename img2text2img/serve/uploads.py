"""Uploaded photo bytes -> an RGB PIL image, with the same bounds as files the CLI reads (`data.images`): the size is
checked before the pixels are decoded, so a decompression bomb costs nothing, and every failure is one `I2TError`."""
from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from img2text2img.data.images import MAX_PIXELS, check_image_size, to_rgb
from img2text2img.errors import I2TError

MAX_UPLOAD_BYTES = 10 * 1024 * 1024  # a phone photo is 2-6 MB; past this the page shrinks it before sending


class UploadTooLarge(I2TError):
    """An upload over MAX_UPLOAD_BYTES (HTTP 413, where other bad uploads are 400)."""


def decode_upload(data: bytes, name: str = "upload") -> Image.Image:
    """Photo bytes (any format Pillow reads) -> RGB image: first frame, EXIF rotation applied, alpha on white."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise UploadTooLarge(f"{name}: {len(data):,} bytes is over the {MAX_UPLOAD_BYTES // (1024 * 1024)} MB upload "
                             "limit")
    if not data:
        raise I2TError(f"{name}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                check_image_size(*im.size, where=name)
                im.seek(0)
                im.load()
                return to_rgb(ImageOps.exif_transpose(im))
    except I2TError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise I2TError(f"{name}: image is larger than the {MAX_PIXELS:,}-pixel limit (decompression bomb guard)") from None
    except UnidentifiedImageError:
        raise I2TError(f"{name}: not an image (Pillow cannot read it; send a JPEG, PNG, WebP, GIF, BMP or TIFF)") from None
    except MemoryError:
        raise I2TError(f"{name}: not enough memory to decode this image") from None
    except Exception as e:  # noqa: BLE001 - any decoder failure on one upload is that upload's 400, never a 500
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise I2TError(f"{name}: broken or truncated image ({msg[:200]})") from None
