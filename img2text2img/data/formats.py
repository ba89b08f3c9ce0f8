"""Readers for the forms image-caption data is kept in, one small class per format in the `FORMATS` registry.

Each reader says whether a path is its format (`find` -> the file it would read) and reads it into a
`CaptionDataset`; it only reads, so nothing is ever written into a user's data folder. Every malformed part is a
one-line `I2TError` naming the file (and the line where the format has lines).
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, ClassVar

from img2text2img.data.captions import CaptionDataset, parse_index, read_caption_folder, read_text
from img2text2img.errors import I2TError
from img2text2img.registry import Registry

FORMATS: Registry[type] = Registry("dataset format")

# split names other tools use -> ours ("restval": Karpathy's extra COCO training images)
SPLIT_NAMES = {"train": "train", "training": "train", "restval": "train", "val": "val", "valid": "val",
               "validation": "val", "dev": "val", "test": "test", "testing": "test"}
HF_SPLIT_DIRS = ("train", "validation", "val", "valid", "dev", "test")
# the order formats are tried in: the most specific marker file first
DETECT_ORDER = ("caption-folder", "hf-imagefolder", "karpathy", "coco", "flickr8k-token")


def split_name(value: str, where: str) -> str:
    s = SPLIT_NAMES.get(str(value).strip().lower())
    if s is None:
        raise I2TError(f"{where}: unknown split {value!r} (use train, validation or test)")
    return s


def parse_tags(value: Any, where: str) -> list[str]:
    """A tag list from JSON (a list) or text ("a, b, c" or "a b c")."""
    if value is None or value == "":
        return []
    if isinstance(value, list):
        return [str(t).strip() for t in value if str(t).strip()]
    if isinstance(value, str):
        parts = value.split(",") if "," in value else value.split()
        return [t.strip() for t in parts if t.strip()]
    raise I2TError(f"{where}: tags must be a list or a comma-separated string, not {type(value).__name__}")


def load_json(path: Path) -> Any:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as e:
        raise I2TError(f"{path}:{e.lineno}: malformed JSON ({e.msg})") from None


def image_folder(json_path: Path, names: list[str], image_dir: Path | None, extra: tuple[Path, ...] = ()) -> Path:
    """Where a file's image names resolve: `image_dir` when given, else the first of beside it, images/ beside it
    (and `extra`) that holds most of the first images listed."""
    if image_dir is not None:
        if not Path(image_dir).is_dir():
            raise I2TError(f"--image-dir {image_dir} is not a folder")
        return Path(image_dir)
    candidates = [json_path.parent, json_path.parent / "images", *extra]
    probe = names[:20]
    best = max(candidates, key=lambda d: sum((d / n).is_file() for n in probe))
    return best


def rows_to_captions(rows: list[tuple[str, int, str]]) -> dict[str, list[str]]:
    """[(image, index, caption)] -> {image: captions in index order}."""
    by_image: dict[str, list[tuple[int, str]]] = {}
    for img, idx, cap in rows:
        by_image.setdefault(img, []).append((idx, cap))
    return {k: [c for _, c in sorted(v, key=lambda x: x[0])] for k, v in by_image.items()}


@FORMATS.register("caption-folder")
class CaptionFolder:
    """The project's layout: images/, captions.tsv, splits/, tags.tsv."""

    @staticmethod
    def find(path: Path) -> Path | None:
        return path / "captions.tsv" if path.is_dir() and (path / "captions.tsv").is_file() else None

    @staticmethod
    def read(found: Path, image_dir: Path | None = None) -> CaptionDataset:
        ds = read_caption_folder(found.parent)
        if image_dir is not None:
            ds.image_dir = Path(image_dir)
        return ds


@FORMATS.register("hf-imagefolder")
class HFImageFolder:
    """A Hugging Face ImageFolder: metadata.jsonl or metadata.csv (file_name plus text or caption, one row per
    caption, optional split and tags) at the top, or one per train/ validation/ test/ sub-folder."""

    @staticmethod
    def metadata_files(path: Path) -> list[Path]:
        out = []
        for d in (path, *(path / s for s in HF_SPLIT_DIRS)):
            for name in ("metadata.jsonl", "metadata.csv"):
                if (d / name).is_file():
                    out.append(d / name)
                    break
        return out

    @staticmethod
    def find(path: Path) -> Path | None:
        """The folder (or the one metadata file named) to read."""
        if path.is_file() and path.name in ("metadata.jsonl", "metadata.csv"):
            return path
        return path if path.is_dir() and HFImageFolder.metadata_files(path) else None

    @staticmethod
    def rows(meta: Path) -> list[tuple[int, dict]]:
        text = read_text(meta)
        if meta.suffix == ".jsonl":
            out = []
            for n, line in enumerate(text.splitlines(), start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as e:
                    raise I2TError(f"{meta}:{n}: malformed JSON line ({e.msg})") from None
                if not isinstance(row, dict):
                    raise I2TError(f"{meta}:{n}: expected a JSON object per line")
                out.append((n, row))
            return out
        try:
            reader = csv.DictReader(io.StringIO(text, newline=""))
            return [(reader.line_num, dict(r)) for r in reader]
        except csv.Error as e:
            raise I2TError(f"{meta}:{reader.line_num}: malformed CSV ({e})") from None

    @staticmethod
    def read(found: Path, image_dir: Path | None = None) -> CaptionDataset:
        root, files = (found.parent, [found]) if found.is_file() else (found, HFImageFolder.metadata_files(found))
        base = Path(image_dir) if image_dir is not None else root
        rows: list[tuple[str, int, str]] = []
        tags: dict[str, list[str]] = {}
        splits: dict[str, list[str]] = {}
        for meta in files:
            folder_split = split_name(meta.parent.name, str(meta)) if meta.parent != root else None
            prefix = meta.parent.relative_to(root).as_posix() + "/" if meta.parent != root else ""
            for n, row in HFImageFolder.rows(meta):
                where = f"{meta}:{n}"
                if "file_name" not in row:
                    raise I2TError(f"{where}: no file_name column (has: {', '.join(map(str, row)) or 'none'})")
                text_key = "text" if "text" in row else "caption" if "caption" in row else None
                if text_key is None and "tags" not in row:
                    raise I2TError(f"{where}: needs a text or caption column (or tags); has: {', '.join(map(str, row))}")
                name = (prefix + str(row["file_name"]).strip()).replace("\\", "/")
                if not str(row["file_name"]).strip():
                    raise I2TError(f"{where}: empty file_name")
                value = row.get(text_key) if text_key else None
                texts = value if isinstance(value, list) else [value] if value not in (None, "") else []
                for t in texts:
                    if not isinstance(t, str):
                        raise I2TError(f"{where}: {text_key} must be text, not {type(t).__name__}")
                    if t.strip():
                        rows.append((name, n, t.strip()))
                if "tags" in row and row["tags"] not in (None, ""):
                    tags.setdefault(name, [])
                    tags[name] += [t for t in parse_tags(row["tags"], where) if t not in tags[name]]
                s = folder_split
                top = name.split("/", 1)[0]
                if s is None and "/" in name and top in HF_SPLIT_DIRS:  # file_name "train/x.png" at the top
                    s = split_name(top, where)
                if row.get("split") not in (None, ""):
                    s = split_name(row["split"], where)
                if s is not None:
                    splits.setdefault(s, [])
                    if name not in splits[s]:
                        splits[s].append(name)
        return CaptionDataset(root, root.name, rows_to_captions(rows), splits, tags, image_dir=base, format="hf-imagefolder")


@FORMATS.register("karpathy")
class KarpathySplit:
    """A Karpathy split JSON (dataset_flickr8k.json, dataset_coco.json): images[] with filename, split and
    sentences[].raw (COCO's also filepath)."""

    @staticmethod
    def find(path: Path) -> Path | None:
        if path.is_file() and path.suffix == ".json" and path.name.startswith("dataset_"):
            return path
        if path.is_file() and path.suffix == ".json":
            head = read_text(path)[:4096]  # COCO's images carry "file_name"; Karpathy's "filename" and "sentences"
            return path if '"sentences"' in head or '"filename"' in head else None
        if path.is_dir():
            found = sorted(path.glob("dataset_*.json"))
            if len(found) > 1:
                raise I2TError(f"{path} holds {len(found)} Karpathy files ({', '.join(p.name for p in found)}); "
                               "pass one of them as --data")
            return found[0] if found else None
        return None

    @staticmethod
    def read(found: Path, image_dir: Path | None = None) -> CaptionDataset:
        doc = load_json(found)
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
            raise I2TError(f"{found}: not a Karpathy split file (expected an object with an images list)")
        caps: dict[str, list[str]] = {}
        splits: dict[str, list[str]] = {}
        for k, im in enumerate(doc["images"]):
            where = f"{found}: images[{k}]"
            if not isinstance(im, dict) or "filename" not in im:
                raise I2TError(f"{where}: expected an object with filename, split and sentences")
            name = f"{im['filepath']}/{im['filename']}" if im.get("filepath") else str(im["filename"])
            sents = im.get("sentences")
            if not isinstance(sents, list):
                raise I2TError(f"{where}: no sentences list")
            texts = []
            for j, s in enumerate(sents):
                raw = s.get("raw") if isinstance(s, dict) else None
                if not isinstance(raw, str):
                    raise I2TError(f"{where}.sentences[{j}]: no raw text")
                if raw.strip():
                    texts.append(raw.strip())
            caps.setdefault(name, []).extend(texts)
            if im.get("split"):
                splits.setdefault(split_name(im["split"], where), []).append(name)
        folder = image_folder(found, list(caps), image_dir)
        return CaptionDataset(found, found.stem.removeprefix("dataset_"), caps, splits, image_dir=folder,
                              format="karpathy")


@FORMATS.register("coco")
class CocoCaptions:
    """A COCO captions JSON (captions_train2014.json, ...): images[] (id, file_name), annotations[] (image_id,
    caption). It carries no split."""

    @staticmethod
    def find(path: Path) -> Path | None:
        if path.is_file() and path.suffix == ".json":
            return path if '"annotations"' in read_text(path) else None
        if path.is_dir():
            found = sorted([*path.glob("captions_*.json"), *path.glob("annotations/captions_*.json")])
            if len(found) > 1:
                raise I2TError(f"{path} holds {len(found)} COCO caption files; pass one of them as --data")
            return found[0] if found else None
        return None

    @staticmethod
    def read(found: Path, image_dir: Path | None = None) -> CaptionDataset:
        doc = load_json(found)
        if not isinstance(doc, dict) or not isinstance(doc.get("images"), list) \
                or not isinstance(doc.get("annotations"), list):
            raise I2TError(f"{found}: not a COCO captions file (expected images and annotations lists)")
        names: dict[Any, str] = {}
        for k, im in enumerate(doc["images"]):
            if not isinstance(im, dict) or "id" not in im or "file_name" not in im:
                raise I2TError(f"{found}: images[{k}] needs id and file_name")
            names[im["id"]] = str(im["file_name"])
        rows = []
        for k, a in enumerate(doc["annotations"]):
            if not isinstance(a, dict) or "image_id" not in a or not isinstance(a.get("caption"), str):
                raise I2TError(f"{found}: annotations[{k}] needs image_id and a caption string")
            if a["image_id"] not in names:
                raise I2TError(f"{found}: annotations[{k}] names image_id {a['image_id']!r}, which images[] lacks")
            if a["caption"].strip():
                rows.append((names[a["image_id"]], k, a["caption"].strip()))
        caps = rows_to_captions(rows)
        # captions_val2014.json -> its images are usually in val2014/ beside it or one folder up
        stem = found.stem.removeprefix("captions_")
        extra = (found.parent / stem, found.parent.parent / stem, found.parent.parent / "images")
        folder = image_folder(found, list(caps), image_dir, extra)
        return CaptionDataset(found, found.stem, caps, {}, image_dir=folder, format="coco")


@FORMATS.register("flickr8k-token")
class Flickr8kToken:
    """Flickr8k's original release: Flickr8k.token.txt (`name.jpg#i<TAB>caption`) with Flickr_8k.trainImages.txt,
    .devImages.txt and .testImages.txt beside it; images in Flicker8k_Dataset/ (sic), images/ or beside it."""

    SPLIT_FILES: ClassVar[dict[str, str]] = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt",
                                             "test": "Flickr_8k.testImages.txt"}

    @staticmethod
    def find(path: Path) -> Path | None:
        if path.is_file() and path.name.endswith(".token.txt"):
            return path
        if path.is_dir():
            for p in (path / "Flickr8k.token.txt", path / "Flickr8k_text" / "Flickr8k.token.txt"):
                if p.is_file():
                    return p
        return None

    @staticmethod
    def read(found: Path, image_dir: Path | None = None) -> CaptionDataset:
        rows = []
        for n, line in enumerate(read_text(found).splitlines(), start=1):
            if not line.strip():
                continue
            key, sep, cap = line.partition("\t")
            name, hash_, idx = key.strip().rpartition("#")
            if not sep or not hash_:
                raise I2TError(f"{found}:{n}: expected name.jpg#N<TAB>caption")
            rows.append((name, parse_index(idx, f"{found}:{n}"), cap.strip()))
        caps = rows_to_captions(rows)
        splits = {}
        for s, fname in Flickr8kToken.SPLIT_FILES.items():
            p = found.parent / fname
            if p.is_file():
                splits[s] = [ln.strip() for ln in read_text(p).splitlines() if ln.strip()]
        up = found.parent.parent
        extra = tuple(d / sub for d in (found.parent, up) for sub in ("Flicker8k_Dataset", "Flickr8k_Dataset"))
        folder = image_folder(found, list(caps), image_dir, (*extra, up / "images", up))
        return CaptionDataset(found, "flickr8k-token", caps, splits, image_dir=folder, format="flickr8k-token")


def detect_format(path: Path) -> tuple[str, Path]:
    """(format name, the file it reads) for `path`, trying each registered reader in registration order."""
    for name in DETECT_ORDER:
        found = FORMATS.get(name).find(path)
        if found is not None:
            return name, found
    raise I2TError(f"{path}: no caption dataset found (looked for captions.tsv, metadata.jsonl/.csv, "
                   "dataset_*.json, a COCO captions JSON, Flickr8k.token.txt)")

