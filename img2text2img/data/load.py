"""`load_dataset`: a built-in name or a path in any format `data/formats.py` reads, checked before training.

Listed images that are missing or unreadable are reported (a `DataWarning`: count and first names) and left out, so
one bad file does not end a run an hour in; a set whose images are all bad is an error. A set that comes without a
split gets a seeded 80/10/10 split by image (all captions of an image on one side), which trainers record in the run
(`CaptionDataset.provenance()`). Only reads: nothing is written beside the user's data.
"""
from __future__ import annotations

import os
import random
import warnings
from collections.abc import Callable
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from img2text2img import locations
from img2text2img.data.captions import CaptionDataset, read_caption_folder
from img2text2img.data.formats import FORMATS, detect_format
from img2text2img.data.images import load_image
from img2text2img.data.shapes import ensure_shapes
from img2text2img.errors import I2TError

AUTO_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}
CHECKS = ("exists", "open", "decode")  # cheapest first: a directory listing, the file header, the whole picture


class DataWarning(UserWarning):
    """Some of a dataset's listed images were left out."""


def auto_split(images: list[str], seed: int = 0) -> dict[str, list[str]]:
    """A seeded 80/10/10 split by image; val and test get at least one image each once there are three."""
    order = sorted(images)
    random.Random(seed).shuffle(order)
    n = len(order)
    n_val = max(1, round(n * AUTO_SPLIT["val"])) if n >= 3 else 0
    n_test = max(1, round(n * AUTO_SPLIT["test"])) if n >= 3 else 0
    n_train = n - n_val - n_test
    return {"train": sorted(order[:n_train]), "val": sorted(order[n_train:n_train + n_val]),
            "test": sorted(order[n_train + n_val:])}


def image_problem(path: Path, check: str, listing: Callable[[Path], set[str]]) -> str | None:
    """Why the image at `path` cannot be used (None: it can), at the depth `check` says."""
    if path.name not in listing(path.parent):
        return "not found"
    if check == "exists":
        return None
    try:
        if check == "open":
            with Image.open(path) as im:
                w, h = im.size
                if w < 1 or h < 1:
                    return "no pixels"
        else:
            load_image(path)
    except I2TError as e:
        return str(e).removeprefix(f"{path}: ").removeprefix(f"{path} ")
    except UnidentifiedImageError:
        return "not an image file Pillow can read"
    except Exception as e:  # noqa: BLE001 - any decoder failure means the same: this picture cannot be used
        return f"broken image ({type(e).__name__})"
    return None


def find_bad_images(ds: CaptionDataset, check: str = "open", progress: Callable[[int], None] | None = None
                    ) -> dict[str, str]:
    """{image name: reason} for the dataset's images that are missing or unreadable."""
    if check not in CHECKS:
        raise I2TError(f"image check must be one of {', '.join(CHECKS)}, not {check!r}")
    listings: dict[Path, set[str]] = {}

    def listing(folder: Path) -> set[str]:
        if folder not in listings:
            try:
                listings[folder] = {e.name for e in os.scandir(folder) if e.is_file()}
            except OSError:
                listings[folder] = set()
        return listings[folder]

    bad = {}
    for name in ds.images:
        why = image_problem(ds.image_path(name), check, listing)
        if why:
            bad[name] = why
        if progress is not None:
            progress(1)
    return bad


def describe_bad(bad: dict[str, str], first: int = 3) -> str:
    shown = ", ".join(f"{n} ({why})" for n, why in sorted(bad.items())[:first])
    return shown + (", ..." if len(bad) > first else "")


def drop_bad_images(ds: CaptionDataset, check: str = "open") -> None:
    """Leave out the images that cannot be used, with a warning; none usable is an error."""
    n = len(ds.images)
    if n == 0:
        raise I2TError(f"{ds.root}: the dataset lists no images")
    bad = find_bad_images(ds, check)
    if len(bad) == n:
        raise I2TError(f"{ds.root}: none of the {n} listed images can be read (first: {describe_bad(bad)}); "
                       f"images are looked for in {ds.image_path('')} (set --image-dir?)")
    if bad:
        ds.drop(bad)
        warnings.warn(f"{ds.root}: {len(bad)} of {n} listed images are missing or unreadable and are left out "
                      f"(first: {describe_bad(bad)})", DataWarning, stacklevel=3)


def read_path(path: Path, image_dir: Path | None = None, format: str | None = None) -> CaptionDataset:
    """Read `path` in the format detected from it (or the one named)."""
    if format is not None:
        reader = FORMATS.get(format)
        found = reader.find(path)
        if found is None:
            raise I2TError(f"{path} is not a {format} dataset")
    else:
        format, found = detect_format(path)
        reader = FORMATS.get(format)
    return reader.read(found, image_dir)


def load_dataset(name_or_path: str | Path, data_dir: str | Path | None = None, *, image_dir: str | Path | None = None,
                 format: str | None = None, split_seed: int = 0, check: str | None = None) -> CaptionDataset:
    """`"flickr8k"` (found through `locations`), `"shapes"` / `"shapes:N"` (generated once into the cache), or a
    path in any format of `data.formats.FORMATS`.

    For a file-based format (a JSON or token file), `image_dir` -- or else `data_dir` -- is where its images are.
    `check`: how hard listed images are checked before use (`CHECKS`; default "exists" for the built-in sets,
    "open" for a user's). A set without splits is split 80/10/10 by image with `split_seed`."""
    text = str(name_or_path)
    if text == "flickr8k":
        ds = read_caption_folder(locations.flickr8k_dir(data_dir), "flickr8k")
    elif text == "shapes" or text.startswith("shapes:"):
        size = text.partition(":")[2] or "5000"
        if not size.isdigit():
            raise I2TError(f"{text}: the shapes set's size must be a whole number, e.g. shapes:400")
        n = int(size)
        ds = read_caption_folder(ensure_shapes(n=n, out=data_dir), "shapes")
    else:
        p = Path(name_or_path).expanduser()
        if not p.exists():
            raise I2TError(f"dataset {text!r} not found: use flickr8k, shapes, or the path of a dataset (a folder "
                           "or a captions file; see i2t data inspect --help)")
        if image_dir is None and data_dir is not None and not p.is_dir():
            image_dir = data_dir
        ds = read_path(p, Path(image_dir) if image_dir is not None else None, format)
    if not any(ds.splits.values()):  # drawn over every listed image: mending a broken file moves no other image
        ds.splits = auto_split(ds.images, split_seed)
        ds.split_origin = f"seeded 80/10/10 by image, seed {split_seed}"
    builtin = text == "flickr8k" or text.startswith("shapes")
    drop_bad_images(ds, check or ("exists" if builtin else "open"))
    return ds
