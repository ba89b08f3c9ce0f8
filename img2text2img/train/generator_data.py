"""What the generator trainers feed on: a split's pictures held in memory with their captions, one caption per
item chosen from (seed, epoch, index) so a resumed run sees the same captions, and the fixed prompts drawn at
every checkpoint.

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


def sample_prompts(data: str) -> list[str]:
    return SAMPLE_PROMPTS["flickr8k" if str(data) == "flickr8k" else "shapes"]


@dataclass
class ImageCaptions:
    """A split held in memory: images uint8 [N, 3, S, S] and, per image, its captions as id lists."""

    images: torch.Tensor
    captions: list[list[list[int]]]
    names: list[str]


def load_image_captions(ds, split: str, vocab: Vocabulary, image_size: int = 64, limit: int | None = None,
                        max_tokens: int = 40) -> ImageCaptions:
    """Decode, resize (box filter, i.e. area averaging) and keep a split of a `CaptionDataset`."""
    names = [n for n in ds.split(split) if ds.captions.get(n)]
    if limit:
        names = names[:limit]
    if not names:
        raise I2TError(f"dataset {ds.name} has no captioned images in split {split!r}")
    arr = np.empty((len(names), image_size, image_size, 3), dtype=np.uint8)
    for i, n in enumerate(names):
        im = load_image(ds.image_path(n))
        if im.size != (image_size, image_size):
            im = im.resize((image_size, image_size), Image.Resampling.BOX)
        arr[i] = np.asarray(im)
    caps = [[vocab.encode(c, max_len=max_tokens) for c in ds.captions[n]] for n in names]
    return ImageCaptions(torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous(), caps, names)


class ImageCaptionDataset(Dataset):
    """Item i = (image i as float [3, S, S] in [0, 1], one of its captions as ids), the caption chosen by
    (seed, epoch, i); `hflip` mirrors images at random (off for shapes, whose captions say left and right)."""

    def __init__(self, data: ImageCaptions, seed: int = 0, hflip: bool = False):
        self.data, self.seed, self.hflip, self.epoch = data, seed, hflip, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.data.captions)

    def __getitem__(self, i: int):
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
        ids = rng.choice(self.data.captions[i])
        img = self.data.images[i].float() / 255.0
        if self.hflip and rng.random() < 0.5:
            img = img.flip(-1)
        return img, ids


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
