"""The library's face of the generators: load one (the shipped default when none is named) and draw PIL pictures."""
from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

from img2text2img.errors import I2TError
from img2text2img.models import load_model
from img2text2img.models.generator.images import to_pil
from img2text2img.models.generator.model import Generator
from img2text2img.models.generator.rerank import reranked

DEFAULT_MODEL_DIR = Path(__file__).resolve().parents[2] / "pretrained" / "generator"


def load_generator(model: Generator | str | Path | None = None, device: str = "cpu"):
    """A generator as given (or anything that draws like one, e.g. a `RerankedGenerator`), loaded from a
    checkpoint / run folder, or (None) the default shipped in the package."""
    if model is not None and not isinstance(model, (str, Path)):
        return model
    path = DEFAULT_MODEL_DIR if model is None else Path(model)
    if model is None and not (path / "config.json").exists():
        raise I2TError(f"the default generator is missing from the package ({path}); pass --model DIR")
    return load_model(path, kind="generator", device=device)


def generate_images(prompts: Sequence[str] | str, model: Generator | str | Path | None = None, n: int = 1,
                    seed: int = 0, temperature: float | None = None, rerank_with=None, candidates: int = 8,
                    guidance: float | None = None) -> list[Image.Image]:
    """Draw `n` pictures per prompt as PIL images (prompt-major). `model` None = the default shipped generator.
    `rerank_with` (a captioner or its folder): each picture is the best of `candidates` samples by that captioner's
    likelihood of the prompt; slower by about `candidates` times, clearer pictures. `temperature` and `guidance`
    (pixel / vae / gan): None = the model's own settings."""
    if isinstance(prompts, str):
        prompts = [prompts]
    gen = load_generator(model)
    if guidance is not None:  # on a shallow copy: a model the caller passed in keeps its own setting
        gen = copy.copy(gen).guided(guidance)
    if rerank_with is not None:
        gen = reranked(gen, rerank_with, candidates)
    return to_pil(gen.generate(list(prompts), n=n, seed=seed, temperature=temperature))
