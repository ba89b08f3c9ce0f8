"""The library entry points: load the shipped or any captioner, caption images, combine captioners (an
ensemble of decoders, or the average of one lineage's weights), and build fresh ones by name.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch

from img2text2img.config import config_to_dict
from img2text2img.data.images import prepare_image, read_images
from img2text2img.errors import I2TError
from img2text2img.models import evaluating, load_model
from img2text2img.models.captioner.config import MEMBER_FIELDS, captioner_config
from img2text2img.models.captioner.decoders import EnsembleDecoder
from img2text2img.models.captioner.model import KIND, Captioner, CaptionResult
from img2text2img.models.encoders import create_encoder
from img2text2img.models.names import default_model_dir, resolve_model
from img2text2img.vocab import Vocabulary


def create_captioner(name: str, vocab: Vocabulary, feature_dim: int, **overrides) -> Captioner:
    """A fresh captioner for `vocab`, on features of size `feature_dim` (encoder attached later, or never)."""
    cfg = captioner_config(name, vocab_size=len(vocab), feature_dim=feature_dim, **overrides)
    return Captioner(cfg, vocab)


def default_captioner_dir(data: str | None = None) -> Path:
    """The shipped captioner for `data` (None: the Flickr8k one, for real photos)."""
    return default_model_dir(KIND, data)


def load_captioner(model: str | Path | Captioner | None = None, device: str = "cpu",
                   data: str | None = None) -> Captioner:
    """A captioner given as a shipped name (`"shapes-captioner"`), a folder (checkpoint or run folder), an already
    loaded model, or None: the shipped one for `data` (None: Flickr8k)."""
    if isinstance(model, Captioner):
        return model
    return load_model(resolve_model(model, KIND, data), kind=KIND, device=device)


def load_members(models: Sequence[str | Path | Captioner], verb: str,
                  stored_encoders: bool = False) -> list[Captioner]:
    """Load the captioners to ensemble or average (`verb`), with the checks both need: at least two, one
    vocabulary, and no stored encoder unless `stored_encoders` (an ensemble combines decoders only)."""
    loaded = [load_captioner(m) for m in models]
    if len(loaded) < 2:
        raise I2TError(f"cannot {verb} fewer than two captioners: give at least two")
    for m in loaded[1:]:
        if m.vocab.itos != loaded[0].vocab.itos:
            raise I2TError(f"cannot {verb} captioners with different vocabularies (train them on the same data "
                           "with the same --min-count)")
    if not stored_encoders and any(m.config.store_encoder for m in loaded):
        raise I2TError(f"cannot {verb} captioners that store their own encoder (only decoders are combined)")
    return loaded


def mean_state(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts (in float64, back to each tensor's dtype); integer buffers from the first."""
    return {k: (sum(st[k].double() for st in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}


def ensemble_captioners(models: Sequence[str | Path | Captioner]) -> Captioner:
    """One captioner whose decoder is the ensemble of `models`' decoders (`EnsembleDecoder`).

    The members must read the same features (encoder and its weights) with the same vocabulary; their decoders may
    differ in type and size (an LSTM and an attention decoder err differently, which is what an ensemble wants).
    Decoding settings and maximum length are taken from the first."""
    loaded = load_members(models, "ensemble")
    first = loaded[0]
    shared = ("encoder", "encoder_weights_sha256", "feature_dim")
    decoders, member_cfgs = [], []
    for m in loaded:
        c = m.config
        if any(getattr(c, f) != getattr(first.config, f) for f in shared):
            raise I2TError(f"cannot ensemble {c.encoder}+{c.decoder} with {first.config.encoder}+{first.config.decoder}: "
                           "members must read the same encoder's features (same weights)")
        decoders.extend(m.decoder.members if isinstance(m.decoder, EnsembleDecoder) else [m.decoder])
        member_cfgs.extend(c.member_configs())
    overrides = tuple({f: getattr(mc, f) for f in MEMBER_FIELDS if getattr(mc, f) != getattr(first.config, f)}
                      for mc in member_cfgs)
    cfg = replace(first.config, members=len(decoders), member_overrides=overrides if any(overrides) else ())
    model = Captioner(cfg, first.vocab, replace(first.settings))
    for target, source in zip(model.decoder.members, decoders):
        target.load_state_dict(source.state_dict())
    return model.eval()


def average_captioners(models: Sequence[str | Path | Captioner]) -> Captioner:
    """One captioner whose weights are the mean of `models`' weights (a "model soup").

    Unlike an ensemble it costs nothing at decode time. It only makes sense for checkpoints of one lineage: epochs of
    a run, or a run and a fine-tune started from it (self-critical training), which stay in one basin of the loss;
    two runs trained apart from different random starts average to nonsense. The members must share the
    architecture and vocabulary; config, decoding settings and vocabulary are taken from the first. Encoders stored
    in the checkpoints (fine-tuned ones) are averaged as well."""
    loaded = load_members(models, "average", stored_encoders=True)
    first = loaded[0]
    for m in loaded:
        if config_to_dict(m.config) != config_to_dict(first.config):
            raise I2TError("cannot average captioners of different architectures or encoders (their configs differ)")
    model = Captioner(replace(first.config), first.vocab, replace(first.settings))
    model.decoder.load_state_dict(mean_state([m.decoder.state_dict() for m in loaded]))
    if first.config.store_encoder:
        enc = create_encoder(first.config.encoder, pretrained=False)
        enc.load_state_dict(mean_state([m.encoder.state_dict() for m in loaded]))
        model.attach_encoder(enc)
    return model.eval()


# Below this many images the plain encoder runs: building its fast frozen copy (an ONNX export, seconds) costs
# more than it saves on a few photos, and both give the same features to ~1e-5.
FEW_IMAGES = 8


def caption(images: Sequence, model: str | Path | Captioner | None = None, beam_size: int | None = None,
            max_len: int | None = None, batch_size: int = 32, data: str | None = None,
            device: str = "cpu", open_vocab: bool | None = None) -> list[CaptionResult]:
    """Caption images given as paths or PIL images. `model`: a shipped name, a folder or a loaded captioner; None
    uses the shipped one for `data` (None: the Flickr8k captioner; "shapes" for the shapes pictures).
    `open_vocab`: name objects the encoder's ImageNet head detects (None: the model's `settings.open_vocab`)."""
    cap = load_captioner(model, device=device, data=data)
    return caption_loaded(cap, read_images(images), beam_size=beam_size, max_len=max_len, batch_size=batch_size,
                          open_vocab=open_vocab)


def caption_loaded(model: Captioner, images: Sequence, beam_size: int | None = None, max_len: int | None = None,
                   batch_size: int = 32, open_vocab: bool | None = None) -> list[CaptionResult]:
    """Caption PIL images with a loaded captioner: a few at once with the plain encoder, more through the
    captioner's batched path (fast frozen encoder, encoding overlapped with decoding)."""
    if len(images) >= FEW_IMAGES:
        return model.caption_images(images, beam_size=beam_size, max_len=max_len, batch_size=batch_size,
                                    open_vocab=open_vocab)
    if not images:
        return []
    enc = model.ensure_encoder()
    tf = enc.transform()
    device = next(model.decoder.parameters()).device
    with torch.inference_mode(), evaluating(model):
        x = torch.stack([tf(prepare_image(im)) for im in images]).to(device)
        pooled, grid = enc(x)
        return model.decode_features(pooled, grid, beam_size=beam_size, max_len=max_len, open_vocab=open_vocab)


def timed_caption(model: Captioner, image, beam_size: int | None = None) -> tuple[CaptionResult, float]:
    """Caption one PIL image and return (result, milliseconds) - what `i2t caption --json` reports."""
    t0 = time.perf_counter()
    r = caption_loaded(model, [image], beam_size=beam_size)[0]
    return r, (time.perf_counter() - t0) * 1000.0
