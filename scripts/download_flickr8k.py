#!/usr/bin/env python
"""Download the public Flickr8k archives and convert them into the project's dataset layout.

For users with internet access (it is never run by the toolkit itself):

    python scripts/download_flickr8k.py --out data/flickr8k
    export I2T_DATA=$PWD/data/flickr8k

The layout written is the one `img2text2img.data.read_caption_folder` reads (and the one the shared copy has):
images/, captions.tsv (image, caption_index, caption), splits/{train,val,test}.txt. Images are kept as they are
(the shared copy was squashed to 224x224; `--size 224` reproduces that).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

from img2text2img.errors import run_reporting_errors

URLS = {  # the widely mirrored release archives
    "images": "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_Dataset.zip",
    "text": "https://github.com/jbrownlee/Datasets/releases/download/Flickr8k/Flickr8k_text.zip",
}
SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "val": "Flickr_8k.devImages.txt", "test": "Flickr_8k.testImages.txt"}


def _member(z: zipfile.ZipFile, name: str) -> str:
    for m in z.namelist():
        if m.rsplit("/", 1)[-1] == name:
            return m
    raise SystemExit(f"error: {name} not found in {z.filename}")


def convert(images_zip: Path, text_zip: Path, out: Path, size: int | None = None) -> Path:
    """Turn the two release archives into the project layout at `out` (written to a temp folder, then renamed)."""
    from PIL import Image

    from img2text2img.io import atomic_folder

    with atomic_folder(out) as tmp:
        (tmp / "images").mkdir()
        (tmp / "splits").mkdir()
        with zipfile.ZipFile(text_zip) as tz:
            token_lines = tz.read(_member(tz, "Flickr8k.token.txt")).decode("utf-8").splitlines()
            splits = {s: tz.read(_member(tz, f)).decode("utf-8").split() for s, f in SPLIT_FILES.items()}
        with zipfile.ZipFile(images_zip) as iz:
            names = {}
            for m in iz.namelist():
                base = m.rsplit("/", 1)[-1]
                if base.lower().endswith(".jpg") and "__MACOSX" not in m:
                    names[base] = m
            for base, m in names.items():
                with iz.open(m) as src:
                    if size:
                        Image.open(src).convert("RGB").resize((size, size), Image.Resampling.BICUBIC).save(
                            tmp / "images" / base, quality=90)
                    else:
                        with open(tmp / "images" / base, "wb") as dst:
                            shutil.copyfileobj(src, dst)
        rows = ["image\tcaption_index\tcaption"]
        for line in token_lines:
            if "\t" not in line:
                continue
            key, caption = line.split("\t", 1)
            image, _, idx = key.partition("#")
            if image in names:  # the release lists captions for one image it does not ship
                rows.append(f"{image}\t{idx}\t{caption.strip()}")
        (tmp / "captions.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
        for s, imgs in splits.items():
            (tmp / "splits" / f"{s}.txt").write_text("".join(f"{i}\n" for i in imgs if i in names), encoding="utf-8")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder to write the dataset into")
    ap.add_argument("--size", type=int, default=None, help="resize every image to SIZE x SIZE (default: keep)")
    ap.add_argument("--images-zip", type=Path, help="use an already downloaded Flickr8k_Dataset.zip")
    ap.add_argument("--text-zip", type=Path, help="use an already downloaded Flickr8k_text.zip")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as d:
        paths = {}
        for key, given in (("images", args.images_zip), ("text", args.text_zip)):
            if given:
                paths[key] = given
                continue
            target = Path(d) / URLS[key].rsplit("/", 1)[-1]
            print(f"downloading {URLS[key]}", file=sys.stderr)
            try:
                urllib.request.urlretrieve(URLS[key], target)
            except OSError as e:
                print(f"error: download of {URLS[key]} failed ({e}); download it by hand and pass --{key}-zip", file=sys.stderr)
                return 2
            paths[key] = target
        convert(paths["images"], paths["text"], args.out, args.size)
    print(f"wrote {args.out}; use it with --data-dir {args.out} or I2T_DATA={args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
