"""What a generator network is (`GeneratorConfig`, `SceneGeneratorConfig`), how it draws by default
(`DrawSettings`), and the named presets.

A config describes the network only: loss weights live in the training recipe (`train/generator.py`), the drawing
temperature and guidance in `DrawSettings`, saved in the checkpoint's `inference` block. Checkpoints written before
the three were kept apart still load through `split_saved_config`.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from img2text2img.config import config_from_dict, option
from img2text2img.errors import I2TError
from img2text2img.registry import Registry

KINDS = ("pixel", "vae", "gan")


@dataclass
class GeneratorConfig:
    kind: str = "pixel"  # pixel | vae | gan
    vocab_size: int = 0  # must equal len(vocab)
    embed_dim: int = 64  # word vector size (50 to initialise from GloVe 6B-50d)
    text_hidden: int = 128  # LSTM hidden size; the sentence vector is 2 * text_hidden (last state + mean)
    text_layers: int = 2
    max_tokens: int = 40  # prompts longer than this many words are truncated (with a warning)
    z_dim: int = 0  # latent/noise size for vae and gan; 0 for pixel
    image_size: int = 64
    channels: tuple[int, ...] = (128, 64, 32, 16)  # decoder widths at 4, 8, 16, 32 px (a pixel shuffle makes 64)
    enc_channels: tuple[int, ...] = (16, 32, 64, 128)  # vae image encoder / gan discriminator widths, 64 -> 4
    dropout: float = 0.0  # between LSTM layers
    film: bool = False  # condition every decoder stage on the sentence (FiLM); see ImageDecoder
    prior: str = "standard"  # vae: "standard" z ~ N(0, I), or "learned" z ~ N(mu(s), sigma(s)) from the sentence

    # Experimental decoder options no shipped model used; checkpoints load only with them off.
    REMOVED: ClassVar[dict] = {
        "word_attention": 0, "refine": 0, "adv_weight": 0.0, "leak": 0.0, "output": "rgb", "palette_size": 16,
        "decoder": "conv", "layers": 3, "ordinal": False, "window": 0.0, "masks": "conv", "sprites": 16,
    }

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise I2TError(f"unknown generator kind {self.kind!r}; choose from: {', '.join(KINDS)}")
        if self.kind != "pixel" and self.z_dim <= 0:
            raise I2TError(f"a {self.kind} generator needs z_dim > 0")
        if self.kind == "pixel" and self.z_dim != 0:
            raise I2TError("a pixel generator has no latent code: z_dim must be 0 (use vae or gan for one)")
        n_up = int(math.log2(self.image_size // 4))
        if 4 * 2**n_up != self.image_size or len(self.channels) != n_up:
            raise I2TError(f"image_size {self.image_size} needs {n_up} decoder channel widths (4 px doubling up to S/2)")
        if self.prior not in ("standard", "learned"):
            raise I2TError(f"prior must be standard or learned, not {self.prior!r}")
        if self.kind != "vae" and self.prior != "standard":
            raise I2TError("a learned prior is a vae option (pixel and gan generators have no posterior)")


@dataclass
class SceneGeneratorConfig:
    kind: str = "scene"
    vocab_size: int = 0  # must equal len(vocab)
    embed_dim: int = 64
    text_hidden: int = 128
    text_layers: int = 2
    max_tokens: int = 40
    image_size: int = 64
    d_model: int = 128  # the scene writer (transformer decoder)
    layers: int = 3
    heads: int = 4
    dropout: float = 0.1
    colours: int = 16  # palette entries (background and object colours)
    templates: int = 128  # sprite templates
    template_resolution: int = 32
    positions: int = 64  # bins per axis for an object's centroid
    sizes: int = 32  # bins for an object's size (2 * sqrt(area) / side, between size_min and size_max)
    size_min: float = 0.1
    size_max: float = 0.9
    max_objects: int = 3
    min_pixels: int = 12  # smaller regions are specks, not objects

    def __post_init__(self) -> None:
        if self.kind != "scene":
            raise I2TError(f"a scene generator's kind is 'scene', not {self.kind!r}")
        if self.d_model % self.heads:
            raise I2TError(f"d_model ({self.d_model}) must be a multiple of heads ({self.heads})")
        if not 0 < self.size_min < self.size_max:
            raise I2TError("size_min must be positive and below size_max")


@dataclass
class DrawSettings:
    """How a generator draws unless told otherwise; saved beside the weights, overridden per call."""

    temperature: float = option(1.0, "Scale of the latent noise (vae/gan) or the scene writer's sampling "
                                "temperature (0 = each sentence's likeliest scene).", min=0.0)
    guidance: float = option(1.0, "pixel/vae/gan: draw the sentence this many times as far from the average "
                             "training sentence (1 = as trained).", min=0.0)

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise I2TError(f"temperature must be >= 0, not {self.temperature}")
        if self.guidance < 0:
            raise I2TError(f"guidance must be >= 0, not {self.guidance}")


# Keys old checkpoints kept in the network config: drawing settings move to DrawSettings, training-recipe settings
# (loss weights and schedules, which do not change the network) are dropped.
MOVED_TO_SETTINGS = {"sample_temperature": "temperature", "guidance": "guidance"}
MOVED_TO_RECIPE = ("recon_loss", "beta", "kl_warmup", "recon_weight", "fg_weight", "z_dropout", "sentence_dropout",
                   "shift_tolerance", "count_weight")


def split_saved_config(config: dict, inference: dict) -> tuple[dict, dict]:
    """A checkpoint's (config, inference) blocks -> (network config, draw settings) as this version keeps them."""
    network = {k: v for k, v in config.items() if k not in MOVED_TO_SETTINGS and k not in MOVED_TO_RECIPE}
    settings = {new: config[old] for old, new in MOVED_TO_SETTINGS.items() if old in config}
    return network, {**settings, **inference}


def load_config(config: dict, inference: dict) -> tuple[GeneratorConfig | SceneGeneratorConfig, DrawSettings]:
    """A saved generator's network config (of its kind) and draw settings."""
    network, settings = split_saved_config(config, inference)
    cls = SceneGeneratorConfig if network.get("kind") == "scene" else GeneratorConfig
    return config_from_dict(cls, network), config_from_dict(DrawSettings, settings)


# ---------------------------------------------------------------------------------------------------------------
# Presets by name; `*-tiny` ones are for tests (they learn the shapes set's colours in a few dozen steps).

GENERATORS: Registry[Callable[..., GeneratorConfig | SceneGeneratorConfig]] = Registry("generator preset")
TINY = {"film": True, "embed_dim": 16, "text_hidden": 32, "channels": (32, 32, 16, 8), "enc_channels": (8, 16, 16, 32)}
SCENE_TINY = {"embed_dim": 16, "text_hidden": 32, "d_model": 32, "layers": 1, "heads": 2, "dropout": 0.0,
              "templates": 12, "positions": 32, "sizes": 16}


@GENERATORS.register("pixel")
def pixel(**kw) -> GeneratorConfig:
    return GeneratorConfig(**{"kind": "pixel", "film": True, **kw})


@GENERATORS.register("vae")
def vae(**kw) -> GeneratorConfig:
    return GeneratorConfig(**{"kind": "vae", "z_dim": 32, "film": True, **kw})


@GENERATORS.register("gan")
def gan(**kw) -> GeneratorConfig:
    return GeneratorConfig(**{"kind": "gan", "z_dim": 64, "film": True, **kw})


@GENERATORS.register("scene")
def scene(**kw) -> SceneGeneratorConfig:
    return SceneGeneratorConfig(**kw)


@GENERATORS.register("pixel-tiny")
def pixel_tiny(**kw) -> GeneratorConfig:
    return GeneratorConfig(**{"kind": "pixel", **TINY, **kw})


@GENERATORS.register("vae-tiny")
def vae_tiny(**kw) -> GeneratorConfig:
    return GeneratorConfig(**{"kind": "vae", "z_dim": 8, **TINY, **kw})


@GENERATORS.register("gan-tiny")
def gan_tiny(**kw) -> GeneratorConfig:
    return GeneratorConfig(**{"kind": "gan", "z_dim": 8, **TINY, **kw})


@GENERATORS.register("scene-tiny")
def scene_tiny(**kw) -> SceneGeneratorConfig:
    return SceneGeneratorConfig(**{**SCENE_TINY, **kw})


def list_generators() -> list[str]:
    return GENERATORS.names()


def generator_config(name: str, **overrides) -> GeneratorConfig | SceneGeneratorConfig:
    """A preset config by name (`pixel`, `vae`, `gan`, `scene`, `*-tiny`), fields overridden by keyword."""
    try:
        return GENERATORS.get(name)(**overrides)
    except TypeError as e:
        raise I2TError(f"generator preset {name!r}: {e}") from None
