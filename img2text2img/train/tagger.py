"""Training and evaluating the tagger: `TaggerRecipe` (every training option, one place) and `train_tagger`.

Two ways to feed the head:
- features (default for a frozen pretrained encoder): pooled vectors from the feature cache (`features.py`), computed
  once per dataset; an epoch then costs only the head.
- images: the encoder runs on every batch. Needed when the encoder is trained (`trainable_blocks > 0`, `small_cnn`)
  and for augmentation: a cached vector cannot be turned or flipped (with a frozen encoder that is an encoder forward
  per image per epoch; slow on a CPU, so it is opt-in).

Evaluation scores against each image's reference tags restricted to the tag vocabulary (a tag outside it cannot be
predicted by any head). For the BCE head, validation also picks the decision threshold that maximises micro F1 and
stores it in the model's inference settings, so the checkpoint saved as best carries a threshold chosen on
validation data only.
"""
from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from img2text2img.data import load_dataset, load_image
from img2text2img.data.augment import AugmentConfig, augment, parse_augment
from img2text2img.errors import I2TError
from img2text2img.features import encode_dataset
from img2text2img.metrics.tags import mean_average_precision, tag_scores
from img2text2img.models import evaluating
from img2text2img.models.tagger import Tagger, TaggerSettings, tagger_config
from img2text2img.tags import DEFAULT_MAX_TAGS, build_tag_vocab, dataset_tags, order_tags
from img2text2img.train.engine import TrainTask, check_run_target, fit, seed_everything, train_config
from img2text2img.train.tagger_recipe import TaggerRecipe
from img2text2img.vocab import END_ID, PAD_ID, START_ID, Vocabulary, pad_batch

MEMORY_CACHE_BYTES = 32 << 20  # image files smaller than this in total are kept decoded in memory
BCE_THRESHOLDS = tuple(round(x, 2) for x in np.arange(0.1, 0.71, 0.05))



# -- data ------------------------------------------------------------------------------------------------------------


class TagFeatureDataset(Dataset):
    """Pooled vectors [N, D] and tag-id lists: item -> {"features": [D], "ids": list[int]}."""

    def __init__(self, features: torch.Tensor, ids: Sequence[Sequence[int]]):
        if len(features) != len(ids):
            raise I2TError(f"{len(features)} feature rows for {len(ids)} tag lists")
        self.features, self.ids = features, [list(x) for x in ids]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict:
        return {"features": self.features[i].float(), "ids": self.ids[i]}


class TagImageDataset(Dataset):
    """Image files and tag-id lists: item -> {"images": [3, S, S], "ids": list[int]}. `augment` (flips, turns,
    rotation, shear, zoom) draws from (seed, epoch, index), so a resumed run sees the same pictures; tags name what is
    in a picture, not where, so they stay true under each op."""

    def __init__(self, paths: Sequence[Path], ids: Sequence[Sequence[int]], transform,
                 augment: AugmentConfig | None = None, seed: int = 0, keep_in_memory: bool | None = None):
        self.paths, self.ids, self.transform = list(paths), [list(x) for x in ids], transform
        self.augment, self.seed, self.epoch = augment or AugmentConfig(), seed, 0
        if keep_in_memory is None:  # small sets (the shapes set): decode each file once, not once per epoch
            keep_in_memory = sum(p.stat().st_size for p in self.paths if p.exists()) < MEMORY_CACHE_BYTES
        self._memory: dict[int, object] | None = {} if keep_in_memory else None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        if self._memory is not None and i in self._memory:
            im = self._memory[i]
        else:
            im = load_image(self.paths[i])
            if self._memory is not None:
                self._memory[i] = im
        if self.augment.enabled:
            im, _ = augment(im, "", self.augment, random.Random((self.seed * 1_000_003 + self.epoch) * 1_000_003 + i))
        return {"images": self.transform(im), "ids": self.ids[i]}


def collate_tags(items: list[dict], vocab_size: int) -> dict:
    """-> {"features" [B, D] | "images" [B, 3, S, S], "inp" [B, T+1] (<start> t1..tn), "tgt" [B, T+1] (t1..tn <end>),
    "multi_hot" [B, V]}; padded with <pad>."""
    out: dict = {}
    key = "features" if "features" in items[0] else "images"
    out[key] = torch.stack([it[key] for it in items])
    ids = [it["ids"] for it in items]
    out["inp"] = pad_batch([[START_ID, *x] for x in ids])
    out["tgt"] = pad_batch([[*x, END_ID] for x in ids])
    mh = torch.zeros(len(items), vocab_size)
    for r, x in enumerate(ids):
        if x:
            mh[r, torch.as_tensor(x)] = 1.0
    out["multi_hot"] = mh
    return out


# -- features --------------------------------------------------------------------------------------------------------


def pooled_features(model: Tagger, dataset, names: Sequence[str], use_cache: bool = True, batch_size: int = 64,
                    progress: bool = False) -> torch.Tensor:
    """Pooled vectors [N, D] for `names`: from the feature cache when the encoder is the pretrained frozen one (and the
    cache module is available), else by running the model's encoder (eval mode, no augmentation)."""
    if use_cache and not model.encoder_trained and model.config.pool == "mean":
        # whole dataset, pooled only: served by an existing grid cache of the dataset when there is one
        cache = encode_dataset(model.config.encoder, dataset, grid=False, progress=progress, encoder=model.encoder)
        return cache.pooled_for(list(names)).float()
    tf = model.encoder.transform()
    dev = next(model.parameters()).device
    rows = []
    with torch.inference_mode(), evaluating(model):
        for i in range(0, len(names), batch_size):
            x = torch.stack([tf(load_image(dataset.image_path(n))) for n in names[i : i + batch_size]]).to(dev)
            rows.append(model.encode(x).float().cpu())
    return torch.cat(rows) if rows else torch.zeros(0, model.config.feature_dim)


# -- evaluation ------------------------------------------------------------------------------------------------------


def evaluate_tagger(model: Tagger, dataset, split: str = "test", tags: dict[str, list[str]] | None = None,
                    features: torch.Tensor | None = None, use_cache: bool = True, limit: int | None = None,
                    thresholds: Sequence[float] | None = None, progress: bool = False) -> dict:
    """Score `model` on a split: micro/macro/per-image P, R, F1, exact match (+ mAP for the BCE head).

    `thresholds` (BCE only): also score each and report the best as `best_threshold` (choose it on validation)."""
    names = list(dataset.split(split))[:limit] if limit else list(dataset.split(split))
    tags = tags if tags is not None else dataset_tags(dataset)
    gold = [order_tags(tags.get(n, []), model.vocab) for n in names]
    if features is None:
        features = pooled_features(model, dataset, names, use_cache=use_cache, progress=progress)
    dev = next(model.parameters()).device
    model.eval()
    preds: list[list[str]] = []
    probs = []
    with torch.inference_mode():
        for i in range(0, len(names), 256):
            f = features[i : i + 256].to(dev).float()
            preds += [[t for t, _ in row] for row in model.predict_features(f)]
            if model.config.head == "bce":
                probs.append(model.head.probabilities(f).cpu())
    res = tag_scores(preds, gold)
    res["split"], res["head"], res["encoder"] = split, model.config.head, model.config.encoder
    if model.config.head == "bce" and probs:
        P = torch.cat(probs).numpy()[:, 4:]
        Y = np.zeros_like(P)
        for r, g in enumerate(gold):
            for t in g:
                Y[r, model.vocab.stoi[t] - 4] = 1
        res["mAP"] = mean_average_precision(P, Y)
        res["threshold"] = model.settings.threshold
        if thresholds:
            best = None
            for th in thresholds:
                pr = [[model.vocab.itos[j + 4] for j in np.flatnonzero(row >= th)] for row in P]
                f1 = tag_scores(pr, gold)["micro_f1"]
                if best is None or f1 > best[1]:
                    best = (th, f1)
            res["best_threshold"], res["best_threshold_micro_f1"] = best
    return res


# -- training --------------------------------------------------------------------------------------------------------


class TaggerTask(TrainTask):
    kind = "tagger"
    main_metric = "micro_f1"

    def __init__(self, model: Tagger, train_data: Dataset, dataset, tags: dict[str, list[str]],
                 val_features: torch.Tensor | None, val_limit: int | None = None, use_cache: bool = True,
                 aux_bce: float = 0.0):
        self.model, self.vocab, self.aux_bce = model, model.vocab, aux_bce
        self._train, self.dataset, self.tags = train_data, dataset, tags
        self.val_features, self.val_limit, self.use_cache = val_features, val_limit, use_cache

    def train_dataset(self) -> Dataset:
        return self._train

    def collate(self, items: list) -> dict:
        return collate_tags(items, len(self.vocab))

    def loss(self, model, batch):
        return model(batch, aux_bce=self.aux_bce)

    def tokens_in(self, batch) -> int:
        return int((batch["tgt"] != PAD_ID).sum())

    def evaluate(self, model) -> dict:
        if "val" not in self.dataset.splits:
            return {}
        feats = self.val_features
        if feats is None:  # encoder being trained: features change every step
            names = list(self.dataset.split("val"))[: self.val_limit] if self.val_limit else self.dataset.split("val")
            feats = pooled_features(self.model, self.dataset, names, use_cache=False)
        th = BCE_THRESHOLDS if self.model.config.head == "bce" else None
        r = evaluate_tagger(self.model, self.dataset, "val", self.tags, features=feats, limit=self.val_limit, thresholds=th)
        if th:
            self.model.settings.threshold = float(r["best_threshold"])  # travels into the checkpoint's settings
            r["micro_f1"] = r["best_threshold_micro_f1"]
        keys = ("micro_f1", "macro_f1", "sample_f1", "exact_match", "mAP", "threshold")
        return {k: float(r[k]) for k in keys if k in r and k != "threshold"} | (
            {"threshold": float(self.model.settings.threshold)} if th else {})

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return self.model.checkpoint_state()

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        if not any(k.startswith("encoder.") for k in state):
            state = {**{k: v for k, v in self.model.state_dict().items() if k.startswith("encoder.")}, **state}
        self.model.load_state_dict(state, strict=True)


@dataclass
class TagData:
    """Everything `train_tagger` derives from a dataset: tags per image and the tag vocabulary."""

    dataset: object
    tags: dict[str, list[str]]
    vocab: Vocabulary


def prepare_tag_data(data: str | Path, data_dir: str | Path | None = None, tag_source: str = "auto",
                     max_tags: int = DEFAULT_MAX_TAGS, min_captions: int = 2) -> TagData:
    ds = load_dataset(data, data_dir)
    tags = dataset_tags(ds, source=tag_source, min_captions=min_captions)
    vocab = build_tag_vocab(tags, ds.split("train"), max_tags=max_tags)
    return TagData(ds, tags, vocab)


def train_tagger(data: str | Path = "flickr8k", name: str = "mobilenet_v2+rnn", recipe: TaggerRecipe | None = None,
                 *, out: str | Path, data_dir: str | Path | None = None, use_cache: bool = True,
                 train_limit: int | None = None, **settings) -> dict:
    """Train a tagger preset on a dataset as `recipe` says; checkpoints go to `out` (`last/`, `best/`). `settings`
    are the engine's run settings (device, resume, force, progress, ...). Returns `fit`'s summary."""
    recipe = recipe or TaggerRecipe()
    cfg = train_config(recipe, out=str(out), **settings)
    parse_augment(recipe.augment)  # a typo fails here, not after the features are built
    check_run_target(cfg)  # before the feature cache is built: that can take a while
    td = prepare_tag_data(data, data_dir, recipe.tags, recipe.max_tags)
    if cfg.resume and (Path(cfg.out) / "last" / "vocab.json").exists():
        saved = Vocabulary.load(Path(cfg.out) / "last" / "vocab.json")
        if saved != td.vocab:
            raise I2TError(f"--resume: {cfg.out} was trained with another tag vocabulary (different data or --max-tags)")
    seed_everything(cfg.seed)  # random-init parts (head, small_cnn) depend only on the seed
    model = Tagger(tagger_config(name), td.vocab, settings=TaggerSettings(beam=recipe.beam))
    names = list(td.dataset.split("train"))[:train_limit] if train_limit else list(td.dataset.split("train"))
    ids = [[td.vocab.stoi[t] for t in order_tags(td.tags.get(n, []), td.vocab)] for n in names]
    aug = parse_augment(recipe.augment)
    from_images = aug.enabled or model.encoder_trained or not use_cache or model.config.pool != "mean"
    val_limit = recipe.val_images
    vnames = list(td.dataset.split("val"))[:val_limit] if "val" in td.dataset.splits else []
    val_features = None
    if from_images:
        train_data: Dataset = TagImageDataset([td.dataset.image_path(n) for n in names], ids, model.encoder.transform(),
                                              augment=aug, seed=cfg.seed)
        if not model.encoder_trained and vnames:
            val_features = pooled_features(model, td.dataset, vnames, use_cache=use_cache, progress=cfg.progress)
    else:
        train_data = TagFeatureDataset(pooled_features(model, td.dataset, names, progress=cfg.progress), ids)
        if vnames:
            val_features = pooled_features(model, td.dataset, vnames, progress=cfg.progress)
    task = TaggerTask(model, train_data, td.dataset, td.tags, val_features, val_limit=val_limit, use_cache=use_cache,
                      aux_bce=recipe.aux_bce)
    summary = fit(task, cfg)
    summary.update(from_images=from_images, parents=[], recipe=asdict(recipe), data=td.dataset.provenance())
    return summary
