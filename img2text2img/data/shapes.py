"""A synthetic caption dataset the project makes itself: coloured shapes on a plain background, each image with five
true captions.

It exists so that every model can be trained and checked in seconds on a CPU with exact ground truth: a caption names
colours, shapes, sizes and left/right/above/below relations that can be verified from the pixels. Shapes sit in the
cells of a 3x3 grid (with a little jitter) so that relations are unambiguous.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

from img2text2img import locations
from img2text2img.config import check_number, check_seed
from img2text2img.io import atomic_folder

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (35, 70, 230),
    "yellow": (240, 220, 30),
    "purple": (140, 40, 180),
    "orange": (245, 140, 20),
    "pink": (250, 130, 200),
    "cyan": (40, 210, 220),
}
BACKGROUNDS: dict[str, tuple[int, int, int]] = {"gray": (128, 128, 128), "black": (15, 15, 15), "white": (245, 245, 245)}
SHAPES = ("circle", "square", "triangle", "star", "diamond", "cross")
SIZES = {"large": 0.36, "small": 0.2}  # shape extent as a fraction of the image side
CELL_NAMES = {  # (column, row) -> where a lone shape is
    (0, 0): "in the top left", (1, 0): "at the top", (2, 0): "in the top right",
    (0, 1): "on the left", (1, 1): "in the center", (2, 1): "on the right",
    (0, 2): "in the bottom left", (1, 2): "at the bottom", (2, 2): "in the bottom right",
}


@dataclass(frozen=True)
class ShapeSpec:
    shape: str
    colour: str
    size: str
    col: int  # grid column 0..2 (left to right)
    row: int  # grid row 0..2 (top to bottom)
    dx: float = 0.0  # jitter inside the cell, fraction of a cell
    dy: float = 0.0

    def phrase(self) -> str:
        return f"{self.size} {self.colour} {self.shape}"

    def centre(self, size: int) -> tuple[float, float]:
        cell = size / 3
        return ((self.col + 0.5 + self.dx) * cell, (self.row + 0.5 + self.dy) * cell)


def relation(a: ShapeSpec, b: ShapeSpec) -> str:
    """Where `a` is relative to `b`, by the axis on which they differ most (cells never coincide)."""
    dc, dr = a.col - b.col, a.row - b.row
    if abs(dc) >= abs(dr):
        return "to the left of" if dc < 0 else "to the right of"
    return "above" if dr < 0 else "below"


INVERSE = {"to the left of": "to the right of", "to the right of": "to the left of", "above": "below", "below": "above"}


def sample_scene(rng: random.Random) -> tuple[str, list[ShapeSpec]]:
    n = rng.choice((1, 1, 2, 2, 2, 3))
    background = rng.choice(list(BACKGROUNDS))
    cells = rng.sample([(c, r) for c in range(3) for r in range(3)], n)
    if n == 2:  # keep the pair's relation unambiguous: not diagonal-equal offsets
        while abs(cells[0][0] - cells[1][0]) == abs(cells[0][1] - cells[1][1]):
            cells = rng.sample([(c, r) for c in range(3) for r in range(3)], 2)
    specs = []
    for c, r in cells:
        size = rng.choice(list(SIZES)) if n < 3 else "small"
        specs.append(ShapeSpec(rng.choice(SHAPES), rng.choice(list(COLOURS)), size, c, r,
                               rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)))
    return background, specs


def captions_for(background: str, specs: list[ShapeSpec], rng: random.Random) -> list[str]:
    """Five different true sentences about the scene."""
    if len(specs) == 1:
        s = specs[0]
        where = CELL_NAMES[(s.col, s.row)]
        caps = [
            f"a {s.phrase()} {where}",
            f"a {s.phrase()} on a {background} background",
            f"there is a {s.phrase()} {where}",
            f"a {s.colour} {s.shape} that is {s.size}",
            f"one {s.phrase()} {where} on {background}",
        ]
    elif len(specs) == 2:
        a, b = specs
        rel = relation(a, b)
        caps = [
            f"a {a.phrase()} {rel} a {b.phrase()}",
            f"a {b.phrase()} {INVERSE[rel]} a {a.phrase()}",
            f"a {a.phrase()} and a {b.phrase()}",
            f"there is a {a.phrase()} {rel} a {b.phrase()}",
            f"two shapes on {background} : a {a.phrase()} and a {b.phrase()}",
        ]
    else:
        a, b, c = specs
        caps = [
            f"a {a.phrase()} , a {b.phrase()} and a {c.phrase()}",
            f"three shapes : a {a.colour} {a.shape} , a {b.colour} {b.shape} and a {c.colour} {c.shape}",
            f"a {c.phrase()} , a {a.phrase()} and a {b.phrase()}",
            f"a {a.phrase()} {relation(a, b)} a {b.phrase()} and a {c.phrase()}",
            f"three small shapes on a {background} background",
        ]
    return caps


def _polygon(shape: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    if shape == "square":
        r *= 0.85
        return [(cx - r, cy - r), (cx + r, cy - r), (cx + r, cy + r), (cx - r, cy + r)]
    if shape == "triangle":
        return [(cx + r * math.cos(math.radians(a)), cy - r * math.sin(math.radians(a))) for a in (90, 210, 330)]
    if shape == "diamond":
        return [(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)]
    if shape == "star":
        pts = []
        for k in range(10):
            rr = r if k % 2 == 0 else r * 0.45
            a = math.radians(90 + 36 * k)
            pts.append((cx + rr * math.cos(a), cy - rr * math.sin(a)))
        return pts
    if shape == "cross":
        t = r * 0.38
        return [(cx - t, cy - r), (cx + t, cy - r), (cx + t, cy - t), (cx + r, cy - t), (cx + r, cy + t), (cx + t, cy + t),
                (cx + t, cy + r), (cx - t, cy + r), (cx - t, cy + t), (cx - r, cy + t), (cx - r, cy - t), (cx - t, cy - t)]
    raise ValueError(shape)


def render(background: str, specs: list[ShapeSpec], size: int = 64, supersample: int = 4) -> Image.Image:
    """Draw the scene at `supersample`x and downscale, so edges are smooth but shape interiors keep exact colours."""
    S = size * supersample
    im = Image.new("RGB", (S, S), BACKGROUNDS[background])
    d = ImageDraw.Draw(im)
    for s in specs:
        cx, cy = s.centre(S)
        r = SIZES[s.size] * S / 2
        if s.shape == "circle":
            d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=COLOURS[s.colour])
        else:
            d.polygon(_polygon(s.shape, cx, cy, r), fill=COLOURS[s.colour])
    return im.resize((size, size), Image.Resampling.BOX) if supersample > 1 else im


def scene(index: int, seed: int) -> tuple[str, list[ShapeSpec], list[str]]:
    """The scene and captions of image `index` for `seed`: each image has its own RNG, so any subset is reproducible."""
    rng = random.Random(seed * 1_000_003 + index)
    background, specs = sample_scene(rng)
    return background, specs, captions_for(background, specs, rng)


def generate_shapes(out: str | Path, n: int = 5000, size: int = 64, seed: int = 0, progress: bool = False) -> Path:
    """Write the dataset (images/, captions.tsv, tags.tsv, splits/ 80/10/10) into `out`, atomically."""
    out = Path(out)
    check_number("n", n, 1, None, integer=True)
    check_number("size", size, 16, 1024, integer=True)
    check_seed(seed)
    with atomic_folder(out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "splits").mkdir()
        rows, tag_rows, names = ["image\tcaption_index\tcaption"], ["image\ttags"], []
        it = range(n)
        if progress:
            from rich.progress import track

            it = track(it, description="drawing shapes")
        for i in it:
            background, specs, caps = scene(i, seed)
            name = f"shape_{i:06d}.png"
            render(background, specs, size).save(tmp / "images" / name, optimize=False, compress_level=1)
            names.append(name)
            rows += [f"{name}\t{k}\t{c}" for k, c in enumerate(caps)]
            tags = []
            for s in specs:
                for t in (s.colour, s.shape, s.size):
                    if t not in tags:
                        tags.append(t)
            tag_rows.append(f"{name}\t{' '.join(tags)}")
        (tmp / "captions.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        (tmp / "tags.tsv").write_text("\n".join(tag_rows) + "\n", encoding="utf-8")
        n_train, n_val = int(n * 0.8), int(n * 0.1)
        for split, part in (("train", names[:n_train]), ("val", names[n_train:n_train + n_val]), ("test", names[n_train + n_val:])):
            (tmp / "splits" / f"{split}.txt").write_text("".join(f"{x}\n" for x in part), encoding="utf-8")
        (tmp / "README.md").write_text(f"{README_MARK} n={n} size={size} seed={seed}, made by `i2t data shapes`.\n")
    return out


README_MARK = "Synthetic shapes:"


def is_shapes_dataset(path: str | Path) -> bool:
    """Whether `path` holds a set `generate_shapes` wrote (the only folder `i2t data shapes --force` may replace)."""
    readme = Path(path) / "README.md"
    return readme.is_file() and (Path(path) / "captions.tsv").is_file() and \
        readme.read_text(encoding="utf-8", errors="replace").startswith(README_MARK)


def ensure_shapes(n: int = 5000, size: int = 64, seed: int = 0, out: str | Path | None = None) -> Path:
    """The shapes set for these settings, generated into the cache the first time it is asked for."""
    target = Path(out) if out is not None else locations.cache_dir() / f"shapes-n{n}-s{size}-seed{seed}"
    if not (target / "captions.tsv").exists():
        generate_shapes(target, n=n, size=size, seed=seed)
    return target


# ---------------------------------------------------------------------------------------------------------------
# Captions back to pictures: the rule-based "perfect generator" that bounds what any learned one can reach


_WHERE = {v: k for k, v in CELL_NAMES.items()}
_RELATIONS = ("to the left of", "to the right of", "above", "below")


def scene_from_caption(text: str, rng: random.Random) -> tuple[str, list[ShapeSpec]]:
    """A scene that makes `text` true, with whatever the caption leaves open (place, size, background, the shapes of
    "three small shapes on ...") drawn at random as `sample_scene` would draw it.

    It knows the drawing rules exactly, so the round trip through it is the ceiling for a learned generator: a
    caption such as "a red circle that is large" does not say where the circle is, and the references of the real
    photo do, so even a perfect drawing of the sentence cannot always be read back as the photo's captions."""
    words = text.lower().split()
    joined = " ".join(words)
    background = next((w for w in words if w in BACKGROUNDS), None) or rng.choice(list(BACKGROUNDS))
    mentions: list[dict] = []
    for i, w in enumerate(words):
        if w in SHAPES and i > 0 and words[i - 1] in COLOURS:
            size = words[i - 2] if i > 1 and words[i - 2] in SIZES else None
            if size is None and words[i + 1:i + 3] == ["that", "is"] and i + 3 < len(words) and words[i + 3] in SIZES:
                size = words[i + 3]
            mentions.append({"shape": w, "colour": words[i - 1], "size": size})
    count = {"two": 2, "three": 3}.get(words[0], 0) if words else 0
    n = max(len(mentions), count, 1)
    while len(mentions) < n:
        mentions.append({"shape": rng.choice(SHAPES), "colour": rng.choice(list(COLOURS)), "size": None})
    mentions = mentions[:3]
    n = len(mentions)
    where = next((_WHERE[p] for p in sorted(_WHERE, key=len, reverse=True) if p in joined), None) if n == 1 else None
    rel = next((r for r in _RELATIONS if f" {r} " in f" {joined} "), None) if n >= 2 else None
    all_cells = [(c, r) for c in range(3) for r in range(3)]
    for _ in range(1000):
        cells = [where] if where else rng.sample(all_cells, n)
        if n == 2 and abs(cells[0][0] - cells[1][0]) == abs(cells[0][1] - cells[1][1]):
            continue
        probe = [ShapeSpec("circle", "red", "small", c, r) for c, r in cells]
        if rel and relation(probe[0], probe[1]) != rel:
            continue
        break
    specs = []
    for m, (c, r) in zip(mentions, cells):
        size = "small" if n == 3 else (m["size"] or rng.choice(list(SIZES)))
        specs.append(ShapeSpec(m["shape"], m["colour"], size, c, r, rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)))
    return background, specs


def draw_caption(text: str, seed: int = 0, size: int = 64) -> Image.Image:
    """`scene_from_caption` rendered: what a perfect shapes generator would draw for `text`."""
    background, specs = scene_from_caption(text, random.Random(seed))
    return render(background, specs, size)
