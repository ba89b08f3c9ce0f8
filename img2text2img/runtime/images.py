"""Images prepared exactly as an encoder's `Preprocess.transform()` does with torchvision, in PIL + numpy:
resize the shorter side (PIL's own filter, as torchvision calls it on PIL images), center-crop, scale to [0, 1],
normalise, channels first. Thread-safe, so folders can be decoded and prepared in a pool (PIL releases the GIL)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image

FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC,
           "nearest": Image.Resampling.NEAREST}


class Prepare:
    """`preprocess` is the dict an encoder's `Preprocess.to_dict()` gives (saved in the manifest)."""

    def __init__(self, preprocess: dict):
        self.size = int(preprocess["image_size"])
        self.resize = int(preprocess["resize_size"])
        self.filter = FILTERS[preprocess.get("interpolation", "bilinear")]
        self.mean = np.asarray(preprocess["mean"], dtype=np.float32)[:, None, None]
        self.std = np.asarray(preprocess["std"], dtype=np.float32)[:, None, None]

    def __call__(self, image: Image.Image) -> np.ndarray:
        """An RGB PIL image -> float32 [3, S, S]."""
        image = image.convert("RGB") if image.mode != "RGB" else image
        w, h = image.size
        short, long = (w, h) if w <= h else (h, w)
        new_short, new_long = self.resize, int(self.resize * long / short)  # torchvision's arithmetic
        size = (new_short, new_long) if w <= h else (new_long, new_short)
        if size != (w, h):
            image = image.resize(size, self.filter)
        w, h = image.size
        s = self.size
        if w < s or h < s:  # torchvision pads a too-small image with zeros before cropping
            canvas = Image.new("RGB", (max(w, s), max(h, s)))
            canvas.paste(image, ((max(w, s) - w) // 2, (max(h, s) - h) // 2))
            image, (w, h) = canvas, canvas.size
        top, left = round((h - s) / 2.0), round((w - s) / 2.0)  # as torchvision's center_crop
        image = image.crop((left, top, left + s, top + s))
        x = np.asarray(image, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
        return (x.transpose(2, 0, 1) - self.mean) / self.std

    def batch(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.ascontiguousarray(np.stack([self(im) for im in images]).astype(np.float32))
