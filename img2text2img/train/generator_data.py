"""What the generator trainers feed on: a split's pictures held in memory with their captions, one caption per
item chosen from (seed, epoch, index) so a resumed run sees the same captions and augmentation, and the fixed
prompts drawn at every checkpoint.

Pictures are decoded and resized once and kept as uint8 (Flickr8k train at 64x64 is ~75 MB): re-decoding 224x224
JPEGs every step would cost more CPU than the model.
"""
from __future__ import annotations

import random
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from img2text2img.data import load_image
from img2text2img.data.augment import AugmentConfig, augment, for_caption, parse_augment
from img2text2img.data.load import DataWarning, describe_bad
from img2text2img.errors import I2TError
from img2text2img.models.generator import PromptWarning, save_grid
from img2text2img.vocab import Vocabulary, pad_batch

# Fixed prompts drawn at every checkpoint so a person can watch a run improve.
SAMPLE_PROMPTS = {
    "shapes": [
        "a large red circle in the top left",
        "a large blue square in the center",
        "a small green triangle on the right",
        "a large yellow star at the bottom",
        "a large purple diamond on a white background",
        "a small orange cross in the bottom right",
        "a large pink circle to the left of a large cyan square",
        "a small red star above a small blue circle",
    ],
    "flickr8k": [
        "a dog runs through the grass",
        "a man riding a bike on a dirt road",
        "two children playing on the beach",
        "a black dog jumping into the water",
        "a group of people standing in the snow",
        "a girl in a pink dress",
        "a surfer riding a wave",
        "a brown dog biting a stick",
    ],
}


def sample_prompts(data: str, ds=None, n: int = 8) -> list[str]:
    """The prompts a run draws at each checkpoint: the built-in sets' own, else the first caption of the first `n`
    validation (or training) pictures of `ds`, so a run on one's own photos is watched on sentences like theirs."""
    if str(data) in ("flickr8k", "shapes") or str(data).startswith("shapes:") or ds is None:
        return SAMPLE_PROMPTS["flickr8k" if str(data) == "flickr8k" else "shapes"]
    for split in ("val", "train"):
        firsts = [ds.captions[im][0] for im in ds.splits.get(split, []) if ds.captions.get(im)][:n]
        if firsts:
            return firsts
    return SAMPLE_PROMPTS["shapes"]


def generator_augment(spec: str, ds) -> AugmentConfig:
    """`--augment` of a generator run: "auto" mirrors photos (never a caption naming left or right) and leaves the
    shapes set alone (its captions say where each shape is)."""
    if spec == "auto":
        return AugmentConfig(hflip=ds.name != "shapes")
    return parse_augment(spec)


@dataclass
class ImageCaptions:
    """A split held in memory: images uint8 [N, 3, S, S] and, per image, its captions as id lists."""

    images: torch.Tensor
    captions: list[list[list[int]]]
    names: list[str]
    texts: list[list[str]] | None = None  # the captions as written: augmentation checks what they say


def load_image_captions(ds, split: str, vocab: Vocabulary, image_size: int = 64, limit: int | None = None,
                        max_tokens: int = 40) -> ImageCaptions:
    """Decode, resize (box filter, i.e. area averaging) and keep a split of a `CaptionDataset`."""
    names = [n for n in ds.split(split) if ds.captions.get(n)]
    if limit:
        names = names[:limit]
    if not names:
        raise I2TError(f"dataset {ds.name} has no captioned images in split {split!r}")
    arr = np.empty((len(names), image_size, image_size, 3), dtype=np.uint8)
    keep, bad = [], {}
    for n in names:
        try:  # a picture that fails to decode only now (a truncated file) is left out like a missing one
            im = load_image(ds.image_path(n))
        except I2TError as e:
            bad[n] = str(e)
            continue
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.Resampling.BOX)
        arr[len(keep)] = np.asarray(im)
        keep.append(n)
    if bad:
        if not keep:
            raise I2TError(f"dataset {ds.name}: none of the {len(names)} {split} pictures can be decoded "
                           f"(first: {describe_bad(bad)})")
        warnings.warn(f"{len(bad)} {split} pictures cannot be decoded and are left out (first: {describe_bad(bad)})",
                      DataWarning, stacklevel=2)
    arr = arr[: len(keep)]
    caps = [[vocab.encode(c, max_len=max_tokens) for c in ds.captions[n]] for n in keep]
    return ImageCaptions(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), caps, keep,
                         [list(ds.captions[n]) for n in keep])


class ImageCaptionDataset(Dataset):
    """Item i = (image i as float [3, S, S] in [0, 1], one of its captions as ids), the caption chosen by
    (seed, epoch, i); `augment` (an `AugmentConfig`, or True: mirror) changes the picture at random, never in a way
    its chosen caption would not survive (`augment.for_caption`)."""

    def __init__(self, data: ImageCaptions, seed: int = 0, augment: AugmentConfig | bool = False):
        self.augment = augment if isinstance(augment, AugmentConfig) else AugmentConfig(hflip=bool(augment))
        self.data, self.seed, self.epoch = data, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data.captions)

    def __getitem__(self, i: int):
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
        j = rng.randrange(len(self.data.captions[i]))  # the draw rng.choice makes: runs from before stay the same
        ids = self.data.captions[i][j]
        if not self.augment.enabled:
            return self.data.images[i].float() / 255.0, ids
        cfg = for_caption(self.augment, self.data.texts[i][j]) if self.data.texts else self.augment
        im, _ = augment(Image.fromarray(self.data.images[i].permute(1, 2, 0).numpy()), "", cfg, rng)
        return torch.from_numpy(np.asarray(im).copy()).permute(2, 0, 1).float() / 255.0, ids


def collate(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """[(image [3, S, S], ids)] -> (ids [B, T], images [B, 3, S, S])."""
    images = torch.stack([im for im, _ in items])
    return pad_batch([ids for _, ids in items]), images


def write_samples(model, prompts: list[str], path: Path, step: int) -> None:
    """The fixed prompts drawn twice each, beside the checkpoint and in the run's samples/ (one PNG per step), so a
    person can watch a run learn."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptWarning)
        images = model.generate(prompts, n=2, seed=0)
    save_grid(images, Path(path) / "samples.png", ncol=4, scale=2)
    save_grid(images, Path(path).parent / "samples" / f"step{step:06d}.png", ncol=4, scale=2)
