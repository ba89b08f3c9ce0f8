"""An image-caption corpus in memory (`CaptionDataset`) and the project's own on-disk layout, shared by Flickr8k and
the generated shapes set:

    images/            one file per image
    captions.tsv       header `image<TAB>caption_index<TAB>caption`, several captions per image
    splits/{train,val,test}.txt   image file names, one per line
    tags.tsv           optional: `image<TAB>tag tag tag` (ordered)

The other formats users keep captions in are read by `data/formats.py` into the same dataclass.
"""
from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from img2text2img.errors import I2TError

SPLITS = ("train", "val", "test")


@dataclass
class CaptionDataset:
    """Captions (raw strings; tokenise with `vocab.tokenize`) and tags per image name, and the splits.

    `image_dir` is where image names resolve (default `root/images`); names may hold sub-folders. `split_origin` says
    whether the splits came with the data ("given") or were drawn here ("seeded 80/10/10 by image, seed N"), in which
    case a trainer records them with the run (`provenance()`). `skipped` lists images left out (name -> why)."""

    root: Path
    name: str
    captions: dict[str, list[str]]
    splits: dict[str, list[str]]
    tags: dict[str, list[str]] = field(default_factory=dict)
    image_dir: Path | None = None
    format: str = "caption-folder"
    split_origin: str = "given"
    skipped: dict[str, str] = field(default_factory=dict)

    def image_path(self, image: str) -> Path:
        return (self.image_dir if self.image_dir is not None else self.root / "images") / image

    def split(self, name: str) -> list[str]:
        if name not in self.splits:
            raise I2TError(f"dataset {self.name} has no split {name!r} (has: {', '.join(self.splits)})")
        return self.splits[name]

    @property
    def images(self) -> list[str]:
        """Every image with a caption or a tag list (a tags-only set trains a tagger)."""
        return sorted(set(self.captions) | set(self.tags))

    def all_captions(self, split: str | None = None) -> list[str]:
        imgs = self.split(split) if split else self.images
        return [c for i in imgs for c in self.captions.get(i, [])]

    def drop(self, names: dict[str, str]) -> None:
        """Leave out `names` (name -> reason) everywhere, remembering why."""
        if not names:
            return
        self.skipped.update(names)
        self.captions = {k: v for k, v in self.captions.items() if k not in names}
        self.tags = {k: v for k, v in self.tags.items() if k not in names}
        self.splits = {s: [i for i in v if i not in names] for s, v in self.splits.items()}

    def provenance(self) -> dict:
        """What a run records about its data: the format, the counts, what was skipped, and the split lists
        themselves when they were drawn here (a given split is the data's own and is not copied)."""
        out: dict = {"dataset": self.name, "format": self.format, "images": len(self.images),
                     "split_origin": self.split_origin, "split_sizes": {s: len(v) for s, v in self.splits.items()}}
        if self.split_origin != "given":
            out["splits"] = {s: list(v) for s, v in self.splits.items()}
        if self.skipped:
            out["skipped"] = {"count": len(self.skipped), "first": sorted(self.skipped)[:10]}
        return out


def read_text(path: Path) -> str:
    """A text file as str; bytes that are not UTF-8 are a one-line error naming the file and line."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise I2TError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise I2TError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save it as UTF-8") from None


def parse_index(value: str, where: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise I2TError(f"{where}: caption index {value!r} is not a whole number") from None


def read_caption_folder(root: str | Path, name: str | None = None) -> CaptionDataset:
    """Read a folder in the layout above; a missing or malformed part is a one-line error naming the file."""
    root = Path(root)
    tsv = root / "captions.tsv"
    if not tsv.exists():
        raise I2TError(f"{root}: not a caption dataset (no captions.tsv)")
    captions: dict[str, list[tuple[int, str]]] = {}
    reader = csv.reader(io.StringIO(read_text(tsv), newline=""), delimiter="\t", quoting=csv.QUOTE_NONE)
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:3]] != ["image", "caption_index", "caption"]:
        raise I2TError(f"{tsv}:1: expected header image<TAB>caption_index<TAB>caption")
    for n, row in enumerate(reader, start=2):
        if not row:
            continue
        if len(row) < 3:
            raise I2TError(f"{tsv}:{n}: expected 3 tab-separated columns")
        captions.setdefault(row[0], []).append((parse_index(row[1], f"{tsv}:{n}"), row[2].strip()))
    caps = {k: [c for _, c in sorted(v)] for k, v in captions.items()}
    splits = {}
    for s in SPLITS:
        p = root / "splits" / f"{s}.txt"
        if p.exists():
            splits[s] = [ln.strip() for ln in read_text(p).splitlines() if ln.strip()]
    tags = {}
    if (root / "tags.tsv").exists():
        for ln in read_text(root / "tags.tsv").splitlines():
            if "\t" in ln:
                img, t = ln.split("\t", 1)
                if img != "image":
                    tags[img] = t.split()
    return CaptionDataset(root, name or root.name, caps, splits, tags)
