"""Encode every image of a dataset once, and keep the features on disk.

Why: a frozen encoder gives the same features every epoch, and on 2 CPU cores the CNN costs far more than a small
decoder. `encode_dataset` runs the encoder over a dataset in batches and stores

    pooled.npy   float16 [n, D]        one vector per image
    grid.npy     float16 [n, N, D]     the spatial grid for attention (N = h*w), optional

in a folder under `locations.cache_dir() / "features"`, keyed by encoder name + weights sha256 + preprocessing +
dataset root + image list. Reading memory-maps the arrays (`np.load(mmap_mode="r")`), so the ~1 GB MobileNetV2 grid
of Flickr8k is paged in only where used. Building writes into `<folder>.partial` and records after every batch how
many rows are safely on disk, so an interrupted run resumes where it stopped; the finished folder is renamed into
place in one step, so a reader never sees a half-built cache.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from img2text2img import locations
from img2text2img.data import CaptionDataset, load_dataset, load_image
from img2text2img.errors import I2TError
from img2text2img.io import write_text_atomic
from img2text2img.models.encoders import Encoder, create_encoder
from img2text2img.train.engine import pick_device

CACHE_VERSION = 1
META, PROGRESS, POOLED, GRID, LOCK = "meta.json", "progress.json", "pooled.npy", "grid.npy", ".lock"


@dataclass
class FeatureCache:
    """Cached encoder features for a list of images (read-only; arrays are memory-mapped when on disk).

    `index` maps image file name -> row. `grid_shape` is the per-image grid shape (N, D); `grid_hw` is (h, w).
    """

    meta: dict[str, Any]
    index: dict[str, int]
    pooled: np.ndarray  # float16 [n, D]
    grid: np.ndarray | None = None  # float16 [n, N, D]
    path: Path | None = None  # None: built in memory (no cache)
    info: dict[str, Any] = field(default_factory=dict)  # how it was obtained: hit / built / resumed, seconds, ...

    @property
    def num_features(self) -> int:
        return int(self.pooled.shape[1])

    @property
    def grid_shape(self) -> tuple[int, int] | None:
        return None if self.grid is None else (int(self.grid.shape[1]), int(self.grid.shape[2]))

    @property
    def grid_hw(self) -> tuple[int, int]:
        return tuple(self.meta["grid_hw"])  # type: ignore[return-value]

    @property
    def has_grid(self) -> bool:
        return self.grid is not None

    @property
    def encoder(self) -> dict[str, Any]:
        return self.meta["encoder"]

    def __len__(self) -> int:
        return len(self.index)

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def rows(self, names: Sequence[str]) -> np.ndarray:
        try:
            return np.fromiter((self.index[n] for n in names), dtype=np.int64, count=len(names))
        except KeyError as e:
            raise I2TError(f"image {e.args[0]!r} is not in the feature cache {self.path or '(in memory)'}") from None

    def pooled_for(self, names: Sequence[str]) -> torch.Tensor:
        """FloatTensor [len(names), D] (float32 copy of the float16 rows)."""
        return torch.from_numpy(np.asarray(self.pooled[self.rows(names)], dtype=np.float32))

    def grid_for(self, names: Sequence[str]) -> torch.Tensor:
        """FloatTensor [len(names), N, D]."""
        if self.grid is None:
            raise I2TError("this feature cache has no grid (it was built with grid=False / --no-grid)")
        return torch.from_numpy(np.asarray(self.grid[self.rows(names)], dtype=np.float32))

    def __getstate__(self) -> dict[str, Any]:
        # A DataLoader worker started by "spawn" would otherwise receive a 1 GB copy of the memory-mapped grid.
        if self.path is None:
            return self.__dict__
        return {"path": self.path, "info": self.info}

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "pooled" in state:
            self.__dict__.update(state)
        else:
            self.__dict__.update(FeatureCache.open(state["path"]).__dict__)
            self.info = state["info"]

    @classmethod
    def open(cls, path: str | Path) -> FeatureCache:
        """Open a finished cache folder, memory-mapped."""
        path = Path(path)
        try:
            meta = json.loads((path / META).read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise I2TError(f"{path}: not a feature cache ({e.__class__.__name__})") from None
        if meta.get("version") != CACHE_VERSION or not meta.get("complete"):
            raise I2TError(f"{path}: incomplete or old-format feature cache; delete it and encode again")
        pooled = np.load(path / POOLED, mmap_mode="r")
        grid = np.load(path / GRID, mmap_mode="r") if meta.get("grid") else None
        index = {name: i for i, name in enumerate(meta["images"])}
        return cls(meta, index, pooled, grid, path, {"status": "hit"})


def cache_key(encoder_desc: dict[str, Any], dataset_root: str, images: Sequence[str], grid: bool) -> dict[str, Any]:
    """Everything that determines the features; its hash names the cache folder."""
    img_hash = hashlib.sha256("\n".join(images).encode("utf-8")).hexdigest()
    return {"version": CACHE_VERSION, "encoder": encoder_desc, "dataset_root": dataset_root,
            "images_sha256": img_hash, "num_images": len(images), "grid": grid}


def cache_folder(base: Path, key: dict[str, Any], dataset_name: str) -> Path:
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode("utf-8")).hexdigest()[:16]
    return base / "features" / f"{key['encoder']['name']}-{dataset_name}-{digest}"


class _ImageFiles(torch.utils.data.Dataset):
    """(row, image tensor, error) per image; a broken image becomes an error string reported by the main process."""

    def __init__(self, paths: Sequence[Path], start: int, transform: Any):
        self.paths, self.start, self.transform = list(paths), start, transform

    def __len__(self) -> int:
        return len(self.paths) - self.start

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor, str]:
        row = self.start + i
        try:
            return row, self.transform(load_image(self.paths[row])), ""
        except I2TError as e:
            return row, torch.zeros(0), str(e)


def _batches(paths: Sequence[Path], start: int, transform: Any, batch_size: int,
             num_workers: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    ds = _ImageFiles(paths, start, transform)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                                         collate_fn=_Collate())
    for rows, x, errs in loader:
        for e in errs:
            if e:
                raise I2TError(e)
        yield rows, x


class _Collate:
    """Picklable collate for worker processes: (rows [B], images [B,3,S,S], errors)."""

    def __call__(self, items: list[tuple[int, torch.Tensor, str]]) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        errs = [e for _, _, e in items]
        if any(errs):
            return torch.tensor([r for r, _, _ in items]), torch.zeros(0), errs
        return torch.tensor([r for r, _, _ in items]), torch.stack([x for _, x, _ in items]), errs


@contextlib.contextmanager
def _progress_bar(enabled: bool, total: int, done: int, label: str) -> Iterator[Any]:
    """A rich progress bar with an images/s column; yields advance(n)."""
    if not enabled:
        yield lambda n: None
        return
    from rich.console import Console

    if not Console(stderr=True).is_terminal:  # a log file: one plain line every 30 s instead of a live bar
        state = {"done": done, "t0": time.perf_counter(), "last": time.perf_counter(), "start": done}

        def advance(n: int) -> None:
            state["done"] += n
            now = time.perf_counter()
            if now - state["last"] >= 30 or state["done"] >= total:
                state["last"] = now
                rate = (state["done"] - state["start"]) / max(now - state["t0"], 1e-9)
                print(f"{label}: {state['done']}/{total} images, {rate:.1f} images/s", flush=True)

        yield advance
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        ProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )
    from rich.text import Text

    class Rate(ProgressColumn):
        def render(self, task: Any) -> Text:
            return Text(f"{task.speed:.1f} images/s" if task.speed else "... images/s")

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), Rate(),
                  TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda n: bar.advance(task, n)


@torch.inference_mode()
def _encode_into(encoder: Any, paths: Sequence[Path], pooled: np.ndarray, grid: np.ndarray | None, start: int,
                 batch_size: int, num_workers: int, device: torch.device, on_batch: Any, advance: Any) -> None:
    run = None
    for rows, x in _batches(paths, start, encoder.transform(), batch_size, num_workers):
        x = x.to(device)
        if run is None:
            run = encoder.for_bulk_inference(x)
        p, g = run(x)
        lo, hi = int(rows[0]), int(rows[-1]) + 1  # rows are consecutive: the loader does not shuffle
        pooled[lo:hi] = p.float().cpu().numpy().astype(np.float16)
        if grid is not None:
            grid[lo:hi] = g.float().cpu().numpy().astype(np.float16)
        on_batch(hi)
        advance(hi - lo)


def _write_json_atomic(path: Path, obj: dict[str, Any]) -> None:
    write_text_atomic(path, json.dumps(obj, indent=1))


def encode_dataset(
    encoder_name: str = "mobilenet_v2",
    dataset: Any = "flickr8k",
    images: Sequence[str] | None = None,
    grid: bool = True,
    batch_size: int = 32,
    num_workers: int = 2,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    encoder: Encoder | None = None,
    *,
    weights: str | Path | None = None,
    allow_download: bool = False,
    use_cache: bool = True,
    device: str = "cpu",
    data_dir: str | Path | None = None,
) -> FeatureCache:
    """Features of `images` (default: every captioned image of `dataset`) from the named encoder, cached.

    `dataset` is a `CaptionDataset` or a name for `load_dataset` ("flickr8k", "shapes", a folder). Pass `encoder` to
    reuse an already built `Encoder` (its name, weights hash and preprocessing form the key). A finished cache for
    the same key is opened at once; a cache of the whole dataset also serves any subset of its images, and a grid
    cache also serves `grid=False`. `use_cache=False` encodes into memory and touches no files.
    """
    ds = dataset if isinstance(dataset, CaptionDataset) else load_dataset(dataset, data_dir)
    all_images = ds.images
    images = list(all_images if images is None else images)
    if not images:
        raise I2TError("no images to encode")
    if encoder is None:
        encoder = create_encoder(encoder_name, weights=weights, allow_download=allow_download)
    elif encoder_name and encoder.name != encoder_name:
        raise I2TError(f"encoder_name {encoder_name!r} does not match the encoder given ({encoder.name!r})")
    dev = pick_device(device)
    encoder = encoder.to(dev).eval()
    desc = {**encoder.describe(), "weights_sha256": encoder.fingerprint()}
    root = str(Path(ds.root).resolve())
    paths = [ds.image_path(i) for i in images]
    grid_hw = list(encoder.grid_hw)
    n, D, N = len(images), encoder.num_features, grid_hw[0] * grid_hw[1]
    label = f"encode {encoder.name}"

    if not use_cache:
        pooled = np.zeros((n, D), np.float16)
        grid_arr = np.zeros((n, N, D), np.float16) if grid else None
        t0 = time.perf_counter()
        with _progress_bar(progress, n, 0, label) as advance:
            _encode_into(encoder, paths, pooled, grid_arr, 0, batch_size, num_workers, dev, lambda hi: None, advance)
        meta = {"version": CACHE_VERSION, **cache_key(desc, root, images, grid), "images": images,
                "grid_hw": grid_hw, "complete": True}
        return FeatureCache(meta, {m: i for i, m in enumerate(images)}, pooled, grid_arr, None,
                            {"status": "memory", "seconds": time.perf_counter() - t0})

    base = locations.cache_dir(cache_dir)
    # Look for a finished cache that covers the request: exact key first, then the whole dataset, grid or not.
    candidates = []
    for imgs in ([images, all_images] if images != all_images else [images]):
        for g in ([True] if grid else [False, True]):
            candidates.append((imgs, g))
    for imgs, g in candidates:
        folder = cache_folder(base, cache_key(desc, root, imgs, g), ds.name)
        if (folder / META).exists():
            cache = FeatureCache.open(folder)
            if all(i in cache.index for i in images):
                return cache

    key = cache_key(desc, root, images, grid)
    final = cache_folder(base, key, ds.name)
    partial = final.with_name(final.name + ".partial")
    partial.mkdir(parents=True, exist_ok=True)
    with open(partial / LOCK, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise I2TError(f"another process is building {partial}; wait for it or delete the folder") from None
        if (final / META).exists():  # finished by someone else while we waited
            return FeatureCache.open(final)
        meta = {**key, "images": images, "grid_hw": grid_hw, "dataset": ds.name, "complete": False}
        done, status = 0, "built"
        old = _read_json(partial / META)
        if old is not None and {k: old.get(k) for k in key} == key and (partial / POOLED).exists() \
                and (not grid or (partial / GRID).exists()):
            done = int((_read_json(partial / PROGRESS) or {}).get("done", 0))
            status = "resumed" if done else "built"
        else:
            done = 0
            _write_json_atomic(partial / META, meta)
            _write_json_atomic(partial / PROGRESS, {"done": 0})
        mode = "r+" if done else "w+"
        pooled = np.lib.format.open_memmap(partial / POOLED, mode=mode, dtype=np.float16, shape=(n, D))
        grid_arr = (np.lib.format.open_memmap(partial / GRID, mode=mode, dtype=np.float16, shape=(n, N, D))
                    if grid else None)

        def on_batch(hi: int) -> None:  # data first, then the row count that claims it
            pooled.flush()
            if grid_arr is not None:
                grid_arr.flush()
            _write_json_atomic(partial / PROGRESS, {"done": hi})

        t0 = time.perf_counter()
        with _progress_bar(progress, n, done, label) as advance:
            _encode_into(encoder, paths, pooled, grid_arr, done, batch_size, num_workers, dev, on_batch, advance)
        seconds = time.perf_counter() - t0
        pooled = grid_arr = None  # close the memory maps before the folder is renamed
        meta.update(complete=True, seconds=round(seconds, 1), resumed_from=done)
        _write_json_atomic(partial / META, meta)
        (partial / PROGRESS).unlink(missing_ok=True)
    (partial / LOCK).unlink(missing_ok=True)
    if final.exists():
        shutil.rmtree(final)
    os.replace(partial, final)
    cache = FeatureCache.open(final)
    cache.info = {"status": status, "seconds": seconds, "resumed_from": done}
    return cache


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def list_caches(cache_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Summaries of the feature caches under the cache folder (finished and partial)."""
    out = []
    root = locations.cache_dir(cache_dir) / "features"
    for d in sorted(root.glob("*")) if root.exists() else []:
        meta = _read_json(d / META)
        if meta is None:
            continue
        size = sum(f.stat().st_size for f in d.iterdir() if f.is_file())
        done = len(meta.get("images", [])) if meta.get("complete") else (_read_json(d / PROGRESS) or {}).get("done", 0)
        out.append({"path": str(d), "encoder": meta["encoder"]["name"], "dataset": meta.get("dataset"),
                    "images": meta.get("num_images"), "done": done, "grid": meta.get("grid"),
                    "complete": bool(meta.get("complete")), "bytes": size})
    return out
