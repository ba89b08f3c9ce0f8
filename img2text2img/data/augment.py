"""Training-time augmentation that keeps captions true.

Flipping or rotating a picture changes what "to the left of" means, so every geometric op that changes directions
also rewrites the direction phrases of the caption (exact for the shapes set's phrases; for free text, left/right
words under a flip); tags name what is in a picture, not where, so they stay true under every op. All random draws come from the `random.Random` passed in, so augmentation is reproducible per (seed, epoch, index).
"""
from __future__ import annotations

import random
import re
from dataclasses import dataclass

from PIL import Image
from torchvision.transforms.v2 import functional as TF

# Direction phrases -> compass codes. Longest phrases first so "to the left of" wins over "left".
_PHRASES = {
    "to the left of": "L", "to the right of": "R", "above": "U", "below": "D",
    "on the left": "L", "on the right": "R", "at the top": "U", "at the bottom": "D",
    "in the top left": "UL", "in the top right": "UR", "in the bottom left": "DL", "in the bottom right": "DR",
}
_REL = {"L": "to the left of", "R": "to the right of", "U": "above", "D": "below"}
_LONE = {"L": "on the left", "R": "on the right", "U": "at the top", "D": "at the bottom",
         "UL": "in the top left", "UR": "in the top right", "DL": "in the bottom left", "DR": "in the bottom right"}
_CCW = {"L": "D", "D": "R", "R": "U", "U": "L"}  # where a direction goes when the image turns 90 deg counter-clockwise
_HFLIP = {"L": "R", "R": "L", "U": "U", "D": "D"}
_PATTERN = re.compile(r"\b(" + "|".join(sorted(map(re.escape, _PHRASES), key=len, reverse=True)) + r")\b")


def _map_code(code: str, step: dict[str, str]) -> str:
    out = "".join(step[c] for c in code)
    if len(out) == 2:  # corners are named vertical-first: "top left"
        v = [c for c in out if c in "UD"]
        h = [c for c in out if c in "LR"]
        out = v[0] + h[0]
    return out


def rewrite_directions(caption: str, op: str, k: int = 1) -> str:
    """Rewrite direction phrases for `op` = "hflip" or "rot90" (k quarter turns counter-clockwise)."""
    step = _HFLIP if op == "hflip" else _CCW
    turns = 1 if op == "hflip" else k % 4

    done: list[str] = []

    def sub(m: re.Match) -> str:
        phrase = m.group(1)
        code = _PHRASES[phrase]
        for _ in range(turns):
            code = _map_code(code, step)
        done.append((_REL if phrase in _REL.values() else _LONE)[code])
        return f"\x00{len(done) - 1}\x00"  # placeholder, so the word swap below cannot touch rewritten phrases

    out = _PATTERN.sub(sub, caption)
    if op == "hflip":  # free text: any other left/right word swaps too
        out = re.sub(r"\b(left|right)\b", lambda m: "right" if m.group(1) == "left" else "left", out)
    return re.sub("\x00(\\d+)\x00", lambda m: done[int(m.group(1))], out)


@dataclass
class AugmentConfig:
    rot90: bool = False  # random quarter turns 0/90/180/270 (caption directions rewritten)
    hflip: bool = False  # horizontal flip with p=0.5 (left/right rewritten)
    rotation: float = 0.0  # small rotation, max degrees either way (directions kept)
    shear: float = 0.0  # max shear degrees
    zoom: float = 0.0  # max relative zoom in/out, e.g. 0.1

    @property
    def enabled(self) -> bool:
        return bool(self.rot90 or self.hflip or self.rotation or self.shear or self.zoom)


def augment(img: Image.Image, caption: str, cfg: AugmentConfig, rng: random.Random) -> tuple[Image.Image, str]:
    """Apply the configured ops to one image and keep its caption true."""
    if cfg.hflip and rng.random() < 0.5:
        img = TF.horizontal_flip(img)
        caption = rewrite_directions(caption, "hflip")
    if cfg.rot90:
        k = rng.randrange(4)
        if k:
            img = img.rotate(90 * k, expand=True)
            caption = rewrite_directions(caption, "rot90", k)
    if cfg.rotation or cfg.shear or cfg.zoom:
        angle = rng.uniform(-cfg.rotation, cfg.rotation)
        shear = rng.uniform(-cfg.shear, cfg.shear)
        scale = rng.uniform(1 - cfg.zoom, 1 + cfg.zoom)
        fill = img.getpixel((0, 0))
        img = TF.affine(img, angle=angle, translate=[0, 0], scale=scale, shear=[shear, 0.0], fill=list(fill))
    return img, caption
