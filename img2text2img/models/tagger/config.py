"""What a tagger is (`TaggerConfig`, the network only), how it is used (`TaggerSettings`, saved in the checkpoint's
`inference` block), and the named presets, each registered with `@TAGGERS.register(name)`.

Checkpoints written before the two were kept apart hold `beam` and `threshold` in the network config (they move to the
settings) and the training-loss weight `aux_bce` (a recipe setting, ignored at load): `migrate_config` reads both.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import ClassVar

from img2text2img.config import config_from_dict, option
from img2text2img.registry import Registry

HEADS = ("rnn", "bce")
POOLS = ("mean", "meanmax")
INFERENCE_KEYS = ("beam", "threshold")  # old network-config keys that are inference settings now
RECIPE_KEYS = ("aux_bce",)  # old network-config keys that are training-recipe settings now (ignored at load)


@dataclass
class TaggerConfig:
    encoder: str = "mobilenet_v2"  # name in the encoder registry
    encoder_pretrained: bool = True  # False: random init; the encoder weights are then stored in checkpoints
    trainable_blocks: int = 0  # last encoder blocks fine-tuned (0 = frozen; their weights are then stored too)
    encoder_sha256: str | None = None  # weights the head was trained on; checked at load time
    pool: str = "mean"  # mean: the encoder's pooled vector [D]; meanmax: [mean, max] over the grid [2D] (small objects)
    feature_dim: int = 0  # size of the image vector the head reads; filled from the encoder and `pool`
    head: str = "rnn"  # rnn | bce
    vocab_size: int = 0  # tag vocabulary size including the 4 specials
    embed_dim: int = 128  # rnn: tag embedding size
    hidden: int = 256  # rnn: LSTM state size
    dropout: float = 0.3  # on the image vector and the LSTM output
    max_tags: int = 12  # rnn: longest tag sequence emitted

    REMOVED: ClassVar[dict] = {}


@dataclass
class TaggerSettings:
    """How a trained tagger decodes; training stores the values it validated with."""

    beam: int = option(3, "RNN head: beam width (1 = greedy).", min=1, max=20)
    threshold: float = option(0.5, "BCE head: predict the tags with probability >= this (training tunes it on val).",
                              min=0.0, max=1.0)
    open_vocab: bool = option(False, "Merge in the objects the encoder's ImageNet head names (cat, cup, car), nouns "
                              "and adjectives only (openvocab/tags.py); needs an encoder with an exact head.")


def migrate_config(config: dict, inference: dict) -> tuple[TaggerConfig, TaggerSettings]:
    """A checkpoint's `config` and `inference` blocks -> (network config, settings), for old and new checkpoints."""
    network = {k: v for k, v in config.items() if k not in INFERENCE_KEYS + RECIPE_KEYS}
    settings = {**{k: config[k] for k in INFERENCE_KEYS if k in config}, **inference}
    return config_from_dict(TaggerConfig, network), config_from_dict(TaggerSettings, settings)


TAGGERS: Registry[Callable[[], TaggerConfig]] = Registry("tagger")


@TAGGERS.register("mobilenet_v2+rnn")
def mobilenet_v2_rnn() -> TaggerConfig:
    return TaggerConfig("mobilenet_v2", head="rnn")


@TAGGERS.register("mobilenet_v2+bce")
def mobilenet_v2_bce() -> TaggerConfig:
    return TaggerConfig("mobilenet_v2", head="bce")


@TAGGERS.register("efficientnet_lite0+rnn")
def efficientnet_lite0_rnn() -> TaggerConfig:
    return TaggerConfig("efficientnet_lite0", head="rnn")


@TAGGERS.register("efficientnet_lite0+bce")
def efficientnet_lite0_bce() -> TaggerConfig:
    return TaggerConfig("efficientnet_lite0", head="bce")


@TAGGERS.register("mobilenet_v3_small+rnn")
def mobilenet_v3_small_rnn() -> TaggerConfig:
    return TaggerConfig("mobilenet_v3_small", head="rnn")


@TAGGERS.register("mobilenet_v3_small+bce")
def mobilenet_v3_small_bce() -> TaggerConfig:
    return TaggerConfig("mobilenet_v3_small", head="bce")


@TAGGERS.register("googlenet+rnn")
def googlenet_rnn() -> TaggerConfig:
    return TaggerConfig("googlenet", head="rnn")


@TAGGERS.register("googlenet+bce")
def googlenet_bce() -> TaggerConfig:
    return TaggerConfig("googlenet", head="bce")


# The shapes set and tests: a tiny CNN trained end to end on 64x64 images.
@TAGGERS.register("small_cnn+rnn-tiny")
def small_cnn_rnn_tiny() -> TaggerConfig:
    return TaggerConfig("small_cnn", encoder_pretrained=False, trainable_blocks=99, head="rnn", pool="meanmax",
                        embed_dim=32, hidden=128, dropout=0.1, max_tags=9)


@TAGGERS.register("small_cnn+bce-tiny")
def small_cnn_bce_tiny() -> TaggerConfig:
    return TaggerConfig("small_cnn", encoder_pretrained=False, trainable_blocks=99, head="bce", pool="meanmax",
                        dropout=0.1)


def list_taggers() -> list[str]:
    return TAGGERS.names()


def tagger_config(name: str, **overrides) -> TaggerConfig:
    """A registered preset with fields overridden (`encoder=`, `hidden=` ...)."""
    return replace(TAGGERS.get(name)(), **overrides)
