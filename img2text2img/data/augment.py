"""Training-time augmentation that keeps captions true.

Flipping or rotating a picture changes what "to the left of" means. `augment` rewrites the direction phrases of the
caption it is given (exact for the shapes set's phrases; for free text, left/right words under a flip); the trainers
instead skip, per picture-caption pair, an op the caption would not survive (`for_caption`: no mirror when it names
left or right, no quarter turn when it names any direction), so a caption's words never change under it. Tags name
what is in a picture, not where, so they stay true under every op. All random draws come from the `random.Random`
passed in, so augmentation is reproducible per (seed, epoch, index).

`--augment flip,rot90,rotate,shear,zoom` (`parse_augment`) is the one option of every trainer; `rotate=20` and the
like set a strength.
"""
from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms.v2 import functional as TF

from img2text2img.errors import I2TError

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

    @property
    def spec(self) -> str:
        """The `--augment` text that gives this config back."""
        parts = (["flip"] if self.hflip else []) + (["rot90"] if self.rot90 else [])
        for op, field in (("rotate", "rotation"), ("shear", "shear"), ("zoom", "zoom")):
            if getattr(self, field):
                value = getattr(self, field)
                parts.append(op if value == DEFAULT_STRENGTH[op] else f"{op}={value:g}")
        return ",".join(parts)


# strengths when --augment names an op without one: mild enough that a photo still shows what its caption says
DEFAULT_STRENGTH = {"rotate": 15.0, "shear": 10.0, "zoom": 0.1}
AUGMENT_OPS = ("flip", "rot90", "rotate", "shear", "zoom")
AUGMENT_HELP = ("Augment training pictures, comma-separated: flip (mirror half the time), rot90 (turn by 0/90/180/270), "
                "rotate[=15 degrees], shear[=10 degrees], zoom[=0.1]; a caption naming left/right is never mirrored, "
                "one naming any direction never turned. Trains from images, not cached features: slower.")
LIMITS = {"rotate": 180.0, "shear": 45.0, "zoom": 0.9}


def parse_augment(spec: str | None) -> AugmentConfig:
    """"flip,rot90,rotate=20,zoom" -> AugmentConfig; "" or "none" -> nothing."""
    cfg = AugmentConfig()
    for part in (spec or "").replace(" ", "").split(","):
        if part in ("", "none"):
            continue
        op, _, value = part.partition("=")
        if op not in AUGMENT_OPS:
            raise I2TError(f"--augment: unknown op {op!r}; choose from {', '.join(AUGMENT_OPS)}")
        if op in ("flip", "rot90"):
            if value:
                raise I2TError(f"--augment: {op} takes no strength")
            cfg = replace(cfg, **{"hflip" if op == "flip" else "rot90": True})
            continue
        try:
            strength = float(value) if value else DEFAULT_STRENGTH[op]
        except ValueError:
            raise I2TError(f"--augment: {op}={value!r} is not a number") from None
        if not 0 < strength <= LIMITS[op]:
            raise I2TError(f"--augment: {op} must be above 0 and at most {LIMITS[op]:g}, not {strength:g}")
        cfg = replace(cfg, **{"rotation" if op == "rotate" else op: strength})
    return cfg


_LEFT_RIGHT = re.compile(r"\b(left|right)\b", re.IGNORECASE)
_DIRECTION = re.compile(r"\b(left|right|top|bottom|above|below|over|under|beneath|upside)\b", re.IGNORECASE)


def for_caption(cfg: AugmentConfig, caption: str) -> AugmentConfig:
    """The ops of `cfg` that keep `caption` true of the changed picture as it stands: no mirror when it names left
    or right, no quarter turn when it names any direction."""
    if cfg.hflip and _LEFT_RIGHT.search(caption):
        cfg = replace(cfg, hflip=False)
    if cfg.rot90 and _DIRECTION.search(caption):
        cfg = replace(cfg, rot90=False)
    return cfg


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


class AugmentedPairs(Dataset):
    """Picture-caption pairs whose picture is augmented afresh each time it is drawn (seeded by seed, epoch and
    index, so a resumed run sees the same pictures): item -> (image row, caption ids, pixels [3, S, S])."""

    def __init__(self, images: Sequence[Image.Image], pairs: Sequence[tuple[int, list[int]]], texts: Sequence[str],
                 transform: Callable, cfg: AugmentConfig, seed: int = 0):
        if len(pairs) != len(texts):
            raise ValueError(f"{len(pairs)} pairs for {len(texts)} caption texts")
        self.images, self.pairs, self.texts, self.transform = list(images), list(pairs), list(texts), transform
        self.cfg, self.seed, self.epoch = cfg, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, i: int) -> tuple[int, list[int], object]:
        row, ids = self.pairs[i]
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 1_000_003 + i)
        im, _ = augment(self.images[row], self.texts[i], for_caption(self.cfg, self.texts[i]), rng)
        return row, ids, self.transform(im)
