"""The on-disk caption-dataset layout shared by Flickr8k and the generated shapes set:

    images/            one file per image
    captions.tsv       header `image<TAB>caption_index<TAB>caption`, several captions per image
    splits/{train,val,test}.txt   image file names, one per line
    tags.tsv           optional: `image<TAB>tag tag tag` (ordered)
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

from img2text2img import locations
from img2text2img.data.shapes import ensure_shapes
from img2text2img.errors import I2TError

SPLITS = ("train", "val", "test")


@dataclass
class CaptionDataset:
    """An image-caption corpus read from a folder; captions kept as raw strings (tokenise with `vocab.tokenize`)."""

    root: Path
    name: str
    captions: dict[str, list[str]]
    splits: dict[str, list[str]]
    tags: dict[str, list[str]] = field(default_factory=dict)

    def image_path(self, image: str) -> Path:
        return self.root / "images" / image

    def split(self, name: str) -> list[str]:
        if name not in self.splits:
            raise I2TError(f"dataset {self.name} has no split {name!r} (has: {', '.join(self.splits)})")
        return self.splits[name]

    @property
    def images(self) -> list[str]:
        return sorted(self.captions)

    def all_captions(self, split: str | None = None) -> list[str]:
        imgs = self.split(split) if split else self.images
        return [c for i in imgs for c in self.captions.get(i, [])]


def read_caption_folder(root: str | Path, name: str | None = None) -> CaptionDataset:
    """Read a folder in the layout above; a missing or malformed part is a one-line error naming the file."""
    root = Path(root)
    tsv = root / "captions.tsv"
    if not tsv.exists():
        raise I2TError(f"{root}: not a caption dataset (no captions.tsv)")
    captions: dict[str, list[tuple[int, str]]] = {}
    with open(tsv, encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:3]] != ["image", "caption_index", "caption"]:
            raise I2TError(f"{tsv}: expected header image<TAB>caption_index<TAB>caption")
        for n, row in enumerate(reader, start=2):
            if not row:
                continue
            if len(row) < 3:
                raise I2TError(f"{tsv}:{n}: expected 3 tab-separated columns")
            captions.setdefault(row[0], []).append((int(row[1]), row[2].strip()))
    caps = {k: [c for _, c in sorted(v)] for k, v in captions.items()}
    splits = {}
    for s in SPLITS:
        p = root / "splits" / f"{s}.txt"
        if p.exists():
            splits[s] = [ln.strip() for ln in p.read_text(encoding="utf-8").splitlines() if ln.strip()]
    tags = {}
    if (root / "tags.tsv").exists():
        for ln in (root / "tags.tsv").read_text(encoding="utf-8").splitlines():
            if "\t" in ln:
                img, t = ln.split("\t", 1)
                if img != "image":
                    tags[img] = t.split()
    return CaptionDataset(root, name or root.name, caps, splits, tags)


def load_dataset(name_or_path: str | Path, data_dir: str | Path | None = None) -> CaptionDataset:
    """`"flickr8k"` (found through `locations`), `"shapes"` (generated once into the cache), or a folder path."""
    if str(name_or_path) == "flickr8k":
        return read_caption_folder(locations.flickr8k_dir(data_dir), "flickr8k")
    if str(name_or_path) == "shapes" or str(name_or_path).startswith("shapes:"):
        n = int(str(name_or_path).split(":", 1)[1]) if ":" in str(name_or_path) else 5000
        return read_caption_folder(ensure_shapes(n=n, out=data_dir), "shapes")
    p = Path(name_or_path)
    if not p.exists():
        raise I2TError(f"dataset {name_or_path!r} not found: use flickr8k, shapes, or a folder with captions.tsv")
    return read_caption_folder(p)
