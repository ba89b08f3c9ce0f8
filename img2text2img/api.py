"""The Python API in four calls, mirroring the CLI:

    import img2text2img as i2t
    i2t.caption(["photo.jpg"])            # -> [CaptionResult(text, tokens, logprob)]
    i2t.tag(["photo.jpg"], top=5)         # -> [[(tag, score), ...]]
    i2t.generate("a red circle", n=4)     # -> [PIL.Image]
    i2t.load_model("runs/cap/best")       # any checkpoint folder -> model

Each takes `model=None` for the model shipped inside the package, a folder, or an already loaded model.
"""
from __future__ import annotations

from collections.abc import Sequence

from img2text2img.models import captioner as captioners
from img2text2img.models import generator as generators
from img2text2img.models import load_model
from img2text2img.models import tagger as taggers


def caption(images: Sequence, model=None, beam_size: int | None = None):
    """Caption image paths or PIL images (`beam_size=None`: the beam the model was tuned for)."""
    return captioners.caption(images, model=model, beam_size=beam_size)


def tag(images: Sequence, model=None, top: int = 10):
    """Tag image paths or PIL images: a list of (tag, score) per image, best first."""
    return taggers.tag(images, model=model, top=top)


def generate(prompts: str | Sequence[str], model=None, n: int = 1, seed: int = 0, rerank_with=None,
             candidates: int = 8, guidance: float | None = None):
    """Draw `n` 64x64 pictures per prompt as PIL images; the same seed gives the same pictures. With `rerank_with`
    (a captioner or its folder) each picture is the best of `candidates` samples by that captioner. `guidance`
    (pixel / vae / gan generators; None = the model's own): how far each sentence is drawn from the average one."""
    return generators.generate_images(prompts, model=model, n=n, seed=seed, rerank_with=rerank_with,
                                      candidates=candidates, guidance=guidance)


__all__ = ["caption", "generate", "load_model", "tag"]
