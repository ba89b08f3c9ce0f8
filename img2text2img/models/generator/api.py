"""The library's face of the generators: load one (the shipped default when none is named) and draw PIL pictures."""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from PIL import Image

from img2text2img.config import check_number
from img2text2img.errors import I2TError
from img2text2img.models import load_model
from img2text2img.models.generator.images import to_pil
from img2text2img.models.generator.model import Generator
from img2text2img.models.generator.rerank import reranked
from img2text2img.models.names import default_model, resolve_model

# the generator drawn with when none is named: the photo-trained one, since a sentence is about the world
DEFAULT_MODEL_DIR = default_model("generator").path


def load_generator(model: Generator | str | Path | None = None, device: str = "cpu", data: str | None = None):
    """A generator as given (or anything that draws like one, e.g. a `RerankedGenerator`), loaded from a shipped
    name (`"shapes-scene"`) or a checkpoint / run folder, or (None) the shipped one for `data` (None: Flickr8k)."""
    if model is not None and not isinstance(model, (str, Path)):
        return model
    return load_model(resolve_model(model, "generator", data), kind="generator", device=device)


def generate_images(prompts: Sequence[str] | str, model: Generator | str | Path | None = None, n: int = 1,
                    seed: int = 0, temperature: float | None = None, rerank_with=None, candidates: int = 8,
                    guidance: float | None = None, data: str | None = None,
                    device: str = "cpu", steps: int | None = None) -> list[Image.Image]:
    """Draw `n` pictures per prompt as PIL images (prompt-major). `model` None = the shipped generator for `data`
    (None: the Flickr8k one; "shapes" for coloured shapes).
    `rerank_with` (a captioner or its folder): each picture is the best of `candidates` samples by that captioner's
    likelihood of the prompt; slower by about `candidates` times, clearer pictures. `temperature` and `guidance`
    (pixel / vae / gan / diffusion): None = the model's own settings. `steps` (diffusion only): denoising steps,
    fewer is faster."""
    if isinstance(prompts, str):
        prompts = [prompts]
    gen = load_generator(model, device=device, data=data)
    if steps is not None:
        gen = with_steps(gen, steps)
    if guidance is not None:  # on a shallow copy: a model the caller passed in keeps its own setting
        gen = copy.copy(gen).guided(guidance)
    if rerank_with is not None:
        gen = reranked(gen, rerank_with, candidates)
    return to_pil(gen.generate(list(prompts), n=n, seed=seed, temperature=temperature))


def generator_kind(gen) -> str:
    """pixel, vae, gan, scene or diffusion (a reranked generator: its generator's)."""
    return str(getattr(getattr(gen, "config", None), "kind", type(gen).__name__))


def with_steps(gen, steps: int):
    """A shallow copy of a diffusion generator that samples in `steps` DDIM steps; any other kind has no steps to
    set, which is a one-line error rather than an option silently ignored."""
    kind = generator_kind(gen)
    if kind != "diffusion":
        raise I2TError(f"steps is an option of diffusion generators; this is a {kind} generator")
    check_number("steps", steps, 1, 1000, integer=True)
    gen = copy.copy(gen)
    gen.settings = replace(gen.settings, steps=int(steps))
    return gen
