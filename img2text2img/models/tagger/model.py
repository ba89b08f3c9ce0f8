"""The tagger: a CNN encoder, a tag head, and the one-call `tag()`.

The image vector is the encoder's pooled vector (`pool="mean"`, what the feature cache stores) or, for small objects
on a plain background (the shapes set), the mean and the max over the feature grid (`pool="meanmax"`). Checkpoints
hold the head weights, the tag vocabulary and the encoder's name and weights sha256: a frozen pretrained encoder is
rebuilt at load time (its sha256 must match), a trained or randomly initialised one is stored in the checkpoint.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from img2text2img.checkpoint import Checkpoint, save_checkpoint
from img2text2img.config import config_to_dict
from img2text2img.data.images import prepare_image, read_images
from img2text2img.errors import I2TError
from img2text2img.models import evaluating, load_model
from img2text2img.models.encoders import create_encoder
from img2text2img.models.names import default_model_dir, resolve_model
from img2text2img.models.tagger.config import HEADS, POOLS, TaggerConfig, TaggerSettings, migrate_config, tagger_config
from img2text2img.models.tagger.heads import HEAD_CLASSES


class Tagger(nn.Module):
    """Encoder + tag head. `forward(batch) -> (loss, logs)` trains on either `batch["features"]` (pooled vectors from
    the feature cache) or `batch["images"]` [B, 3, S, S] (raw images: augmentation, fine-tuning)."""

    def __init__(self, config: TaggerConfig, vocab, encoder: nn.Module | None = None,
                 settings: TaggerSettings | None = None):
        super().__init__()
        if config.head not in HEAD_CLASSES:
            raise I2TError(f"unknown tagger head {config.head!r}; choose from: {', '.join(HEADS)}")
        if config.pool not in POOLS:
            raise I2TError(f"unknown tagger pooling {config.pool!r}; choose from: {', '.join(POOLS)}")
        if encoder is None:
            encoder = create_encoder(config.encoder, pretrained=config.encoder_pretrained,
                                     trainable_blocks=config.trainable_blocks)
        if config.vocab_size and config.vocab_size != len(vocab):
            raise I2TError(f"tagger config says {config.vocab_size} tags but the vocabulary has {len(vocab)}")
        dim = encoder.num_features * (2 if config.pool == "meanmax" else 1)
        config = replace(config, vocab_size=len(vocab), feature_dim=dim,
                         encoder_sha256=config.encoder_sha256 or getattr(encoder, "weights_sha256", None))
        self.config = config
        self.settings = settings or TaggerSettings()
        self.vocab = vocab
        self.encoder = encoder
        self.head = HEAD_CLASSES[config.head](config)

    # -- training ---------------------------------------------------------------------------------------------------

    @property
    def encoder_trained(self) -> bool:
        """True when the encoder's weights are not the pretrained file's (random init or fine-tuned)."""
        return not self.config.encoder_pretrained or self.config.trainable_blocks > 0

    def image_vector(self, images: torch.Tensor) -> torch.Tensor:
        return self.pool(*self.encoder(images))

    def pool(self, pooled: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        """The encoder's (pooled B x D, grid B x N x D) -> the vector the head reads (also for a fast encoder copy)."""
        if self.config.pool == "meanmax":  # a small object barely moves the mean but sets the max
            return torch.cat([pooled, grid.amax(1)], 1)  # B x 2D
        return pooled

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] -> image vectors [B, F]; no autograd through a frozen encoder."""
        if any(p.requires_grad for p in self.encoder.parameters()) and torch.is_grad_enabled():
            return self.image_vector(images)
        with torch.no_grad():
            return self.image_vector(images)

    def features_of(self, batch: dict) -> torch.Tensor:
        if "features" in batch:
            return batch["features"].float()
        return self.encode(batch["images"])

    def forward(self, batch: dict, aux_bce: float = 0.0) -> tuple[torch.Tensor, dict]:
        return self.head.loss(self.features_of(batch), batch, aux_bce=aux_bce)

    # -- inference --------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def predict_features(self, features: torch.Tensor, top: int | None = None, beam: int | None = None,
                         threshold: float | None = None) -> list[list[tuple[str, float]]]:
        """pooled [B, D] -> per image [(tag, score)] sorted by score (RNN: p(tag | prefix); BCE: p(tag)); `beam` /
        `threshold` None: the model's settings."""
        if self.config.head == "bce":
            th = self.settings.threshold if threshold is None else threshold
            rows = self.head.decode(features.float(), threshold=th)
        else:
            rows = self.head.decode(features.float(), beam=beam or self.settings.beam)
        out = []
        for r in rows:
            r = sorted(r, key=lambda x: -x[1])
            out.append([(self.vocab.itos[i], s) for i, s in (r[:top] if top else r)])
        return out

    def uses_open_vocab(self, open_vocab: bool | None = None) -> bool:
        """Whether to merge in the encoder's ImageNet words: the caller's choice, else the model's setting."""
        return self.settings.open_vocab if open_vocab is None else open_vocab

    def bulk_tagger(self, open_vocab: bool | None = None):
        """The callable that tags many images (images, top, batch_size) -> rows, with or without open vocabulary."""
        if self.uses_open_vocab(open_vocab):
            from img2text2img.models.tagger.openvocab import OpenVocabTagger

            return OpenVocabTagger(self)
        return BulkTagger(self)

    @torch.no_grad()
    def tag_images(self, images: Sequence, top: int | None = 10, batch_size: int = 32, beam: int | None = None,
                   threshold: float | None = None, open_vocab: bool | None = None) -> list[list[tuple[str, float]]]:
        """PIL images -> per image up to `top` (tag, score) pairs, highest score first. `open_vocab` (None: the
        settings'): merged with the encoder's ImageNet words (models/tagger/openvocab.py)."""
        if self.uses_open_vocab(open_vocab):
            from img2text2img.models.tagger.openvocab import OpenVocabTagger

            return OpenVocabTagger(self)(images, top=top, batch_size=batch_size, beam=beam, tag_threshold=threshold)
        tf = self.encoder.transform()
        dev = next(self.parameters()).device
        out: list[list[tuple[str, float]]] = []
        with evaluating(self):
            for i in range(0, len(images), batch_size):
                x = torch.stack([tf(prepare_image(im)) for im in images[i : i + batch_size]]).to(dev)
                out += self.predict_features(self.encode(x), top=top, beam=beam, threshold=threshold)
        return out

    # -- checkpoints ------------------------------------------------------------------------------------------------

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Head weights, plus the encoder's when they are not the pretrained file's."""
        sd = self.state_dict()
        if self.encoder_trained:
            return sd
        return {k: v for k, v in sd.items() if not k.startswith("encoder.")}

    def save(self, path: str | Path, *, metrics: dict | None = None, info: dict | None = None, half: bool = False,
             full: bool = True) -> Path:
        """Write a checkpoint folder (`full` is accepted for the common signature: a tagger has no training-only
        weights to drop)."""
        return save_checkpoint(path, kind="tagger", config=config_to_dict(self.config),
                               state_dict=self.checkpoint_state(), vocab=self.vocab, metrics=metrics, info=info,
                               half=half, inference=config_to_dict(self.settings))

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> Tagger:
        cfg, settings = migrate_config(ckpt.config, ckpt.inference)
        has_encoder = any(k.startswith("encoder.") for k in ckpt.state_dict)
        if has_encoder:
            encoder = create_encoder(cfg.encoder, pretrained=False, trainable_blocks=cfg.trainable_blocks)
        else:
            encoder = create_encoder(cfg.encoder, pretrained=True, trainable_blocks=cfg.trainable_blocks)
            if cfg.encoder_sha256 and encoder.weights_sha256 and encoder.weights_sha256 != cfg.encoder_sha256:
                raise I2TError(f"{ckpt.path}: the tagger was trained on {cfg.encoder} weights "
                               f"{cfg.encoder_sha256[:12]}..., but the weights found are "
                               f"{encoder.weights_sha256[:12]}... ({encoder.weights_source})")
        model = cls(cfg, ckpt.vocab, encoder=encoder, settings=settings)
        state = ckpt.state_dict
        if not has_encoder:
            state = {**{f"encoder.{k}": v for k, v in encoder.state_dict().items()}, **state}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise I2TError(f"{ckpt.path}: weights do not fit the tagger config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.eval()


def create_tagger(name: str, vocab, settings: TaggerSettings | None = None, **overrides) -> Tagger:
    """Build a registered tagger (`mobilenet_v2+rnn`, ...) for a tag vocabulary."""
    return Tagger(tagger_config(name, **overrides), vocab, settings=settings)


# -- the library one-call function -----------------------------------------------------------------------------------


def default_tagger_dir(data: str | None = None) -> Path:
    """The shipped tagger for `data` (None: the Flickr8k one, for real photos)."""
    return default_model_dir("tagger", data)


def load_tagger(path: str | Path | None = None, device: str = "cpu", data: str | None = None) -> Tagger:
    """A trained tagger from a shipped name (`"shapes-tagger"`), a checkpoint or run folder; None = the shipped one
    for `data` (None: Flickr8k)."""
    return load_model(resolve_model(path, "tagger", data), kind="tagger", device=device)


def tag(images: Sequence, model: Tagger | str | Path | None = None, top: int = 10, data: str | None = None,
        device: str = "cpu", open_vocab: bool | None = None) -> list[list[tuple[str, float]]]:
    """Tag images (PIL images or paths): per image up to `top` (tag, score) pairs. `model`: a shipped name, a folder
    or a loaded tagger; None = the shipped one for `data` (None: Flickr8k). `open_vocab`: as `Tagger.tag_images`."""
    if not isinstance(model, Tagger):
        model = load_tagger(model, device=device, data=data)
    return model.tag_images(read_images(images), top=top, open_vocab=open_vocab)


# Below this many images the plain encoder runs: building its fast frozen copy (an ONNX export, seconds) costs more
# than it saves on a few photos, and both give the same features to ~1e-5.
FEW_IMAGES = 8


class BulkTagger:
    """Tags many images with one tagger, its frozen encoder run as the fast copy (`Encoder.for_bulk_inference`:
    ONNX Runtime or TorchScript), built once on the first call that has at least FEW_IMAGES images and kept."""

    def __init__(self, model: Tagger):
        self.model = model
        self.fast = None

    @torch.inference_mode()
    def __call__(self, images: Sequence, top: int | None = 10, batch_size: int = 32) -> list[list[tuple[str, float]]]:
        m = self.model
        if self.fast is None and len(images) < FEW_IMAGES:
            return m.tag_images(images, top=top, batch_size=batch_size, open_vocab=False)  # the plain head, as below
        tf = m.encoder.transform()
        dev = next(m.parameters()).device
        out: list[list[tuple[str, float]]] = []
        with evaluating(m):
            for i in range(0, len(images), batch_size):
                # numpy's stack: one plain copy, where torch's waits on its busy threads (see PilTransform)
                x = torch.from_numpy(np.stack([tf(prepare_image(im)).numpy() for im in images[i:i + batch_size]]))
                x = x.to(dev)
                if self.fast is None:
                    bulk = getattr(m.encoder, "for_bulk_inference", None)
                    self.fast = bulk(x) if bulk is not None else m.encoder
                out += m.predict_features(m.pool(*self.fast(x)), top=top)
        return out
