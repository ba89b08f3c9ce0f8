"""Training the scene generator: fit its picture reader once, read every training picture as a scene, and teach
the scene writer those scenes by cross-entropy."""
from __future__ import annotations

import random
from pathlib import Path

from torch.utils.data import Dataset

from img2text2img.checkpoint import load_checkpoint
from img2text2img.data import load_dataset
from img2text2img.models.generator import SceneGenerator, generator_config
from img2text2img.train.engine import TrainConfig, TrainTask, fit, seed_everything
from img2text2img.train.generator_data import SAMPLE_PROMPTS, load_image_captions, sample_prompts, write_samples
from img2text2img.vocab import Vocabulary, pad_batch


class SceneCaptions(Dataset):
    """Item i = (one of picture i's captions as ids, picture i's scene tokens), the caption chosen by (seed, epoch,
    i) so that a resumed run sees the same order."""

    def __init__(self, captions: list[list[list[int]]], scenes: list[list[int]], seed: int = 0):
        self.captions, self.scenes, self.seed, self.epoch = captions, scenes, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int):
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + i)
        return rng.choice(self.captions[i]), self.scenes[i]


class SceneTask(TrainTask):
    """A scene generator: the writer learns, by cross-entropy, the scenes its picture reader found in the training
    pictures (`models/generator/scene.py`)."""

    kind = "generator"
    main_metric = None

    def __init__(self, model, captions: list[list[list[int]]], scenes: list[list[int]], seed: int = 0,
                 prompts: list[str] | None = None):
        self.model, self.vocab = model, model.vocab
        self.data = SceneCaptions(captions, scenes, seed)
        self.prompts = prompts or SAMPLE_PROMPTS["shapes"]

    def train_dataset(self) -> Dataset:
        return self.data

    def collate(self, items: list):
        return pad_batch([ids for ids, _ in items]), [scene for _, scene in items]

    def loss(self, model, batch):
        ids, scenes = batch
        return model(ids, scenes), {}

    def on_checkpoint(self, path: Path, step: int) -> None:
        write_samples(self.model, self.prompts, path, step)


def train_scene_generator(preset: str, data: str, cfg: TrainConfig, *, data_dir: str | Path | None = None,
                          limit: int | None = None, fit_pictures: int = 3000, **overrides) -> dict:
    """Fit the picture reader (palette, templates) on the first `fit_pictures` training pictures, read every training
    picture as a scene, and train the scene writer on (caption, scene) pairs. On `cfg.resume` the reader comes back
    from `out/last` with the writer, so the scenes are read exactly as before."""
    seed_everything(cfg.seed)
    ds = load_dataset(data, data_dir)
    last = Path(cfg.out) / "last"
    resuming = cfg.resume and (last / "config.json").exists()
    if resuming:
        model = SceneGenerator.from_checkpoint(load_checkpoint(last, kind="generator")).train()
    else:
        vocab = Vocabulary.build(ds.all_captions("train"), min_count=1 if ds.name == "shapes" else 5, max_size=8000)
        model = SceneGenerator(generator_config(preset, vocab_size=len(vocab), **overrides), vocab=vocab)
    train = load_image_captions(ds, "train", model.vocab, model.config.image_size, limit, model.config.max_tokens)
    if not resuming:
        model.picture.fit(train.images[:fit_pictures], seed=cfg.seed)
    scenes = []
    for i in range(0, len(train.images), 1000):
        scenes += model.picture.parse(train.images[i:i + 1000])
    summary = fit(SceneTask(model, train.captions, scenes, cfg.seed, sample_prompts(data)), cfg)
    summary["objects_per_picture"] = sum((len(s) - 2) // 5 for s in scenes) / max(len(scenes), 1)
    return summary
