"""Uploaded photo bytes -> an RGB PIL image, with the same bounds as files the CLI reads (`data.images`): the size is
checked before the pixels are decoded, so a decompression bomb costs nothing, and every failure is one `I2TError`."""
from __future__ import annotations

import io

from PIL import Image

from img2text2img.data.images import decode_image
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
    return decode_image(io.BytesIO(data), name, not_an_image="not an image (Pillow cannot read it; send a JPEG, PNG, WebP, GIF, BMP or TIFF)")
