"""What `i2t data inspect` reports about a dataset: how it was read, what training would see, and what is wrong.

Every listed image is decoded (not only opened), so a truncated file shows up here rather than an hour into a run.
"""
from __future__ import annotations

import statistics
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from img2text2img.data.captions import CaptionDataset
from img2text2img.data.load import DataWarning, find_bad_images, load_dataset
from img2text2img.vocab import SPECIALS, Vocabulary

TRAIN_MIN_COUNT = 5  # the captioner's default --min-count: words rarer than this in train captions become <unk>


def inspect_dataset(path: str | Path, data_dir: str | Path | None = None, image_dir: str | Path | None = None,
                    min_count: int = TRAIN_MIN_COUNT, check: str = "decode", first: int = 10,
                    progress: Callable[[int, int], Callable[[int], None]] | None = None) -> dict:
    """A JSON-ready summary of the dataset at `path` (see the module docstring). `progress(total, done)` may return
    a per-image callback for a progress bar."""
    with warnings.catch_warnings():  # reported below, with every reason, instead of as a warning
        warnings.simplefilter("ignore", DataWarning)
        ds = load_dataset(path, data_dir, image_dir=image_dir, check="exists")
    missing = dict(ds.skipped)
    unreadable = {} if check == "exists" else find_bad_images(ds, check, progress(len(ds.images), 0) if progress
                                                              else None)
    listed = len(ds.images) + len(missing)
    ds.drop(unreadable)
    return summarise(ds, listed, missing, unreadable, min_count, first)


def summarise(ds: CaptionDataset, listed: int, missing: dict[str, str], unreadable: dict[str, str],
              min_count: int = TRAIN_MIN_COUNT, first: int = 10) -> dict:
    per_image = [len(ds.captions.get(i, [])) for i in ds.images]
    tag_counts = Counter(t for v in ds.tags.values() for t in v)
    train = ds.splits.get("train", ds.images)
    vocab = Vocabulary.build([c for i in train for c in ds.captions.get(i, [])], min_count=min_count)
    return {
        "path": str(ds.root), "format": ds.format, "name": ds.name,
        "image_dir": str(ds.image_path("")).rstrip("/"),
        "images_listed": listed, "images": len(ds.images),
        "captions": sum(per_image),
        "captions_per_image": {"min": min(per_image, default=0), "mean": round(statistics.fmean(per_image), 2)
                               if per_image else 0, "max": max(per_image, default=0)},
        "splits": {s: len(v) for s, v in ds.splits.items()}, "split_origin": ds.split_origin,
        "tagged_images": len(ds.tags), "distinct_tags": len(tag_counts),
        "top_tags": [[t, n] for t, n in tag_counts.most_common(first)],
        "vocabulary_min_count": min_count, "vocabulary_size": len(vocab) - len(SPECIALS),
        "missing": {"count": len(missing), "first": [[n, w] for n, w in sorted(missing.items())[:first]]},
        "unreadable": {"count": len(unreadable), "first": [[n, w] for n, w in sorted(unreadable.items())[:first]]},
    }
