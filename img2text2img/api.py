"""The Python API in five calls, mirroring the CLI:

    import img2text2img as i2t
    i2t.caption(["photo.jpg"])                 # -> [CaptionResult(text, tokens, logprob)]
    i2t.tag(["photo.jpg"], top=5)              # -> [[(tag, score), ...]]
    i2t.generate("a dog on the grass", n=4)    # -> [PIL.Image]
    i2t.load_model("shapes-captioner")         # a shipped name, or any checkpoint / run folder -> model
    i2t.shipped_models()                       # the names, with task, data set and quality

`model=` takes a shipped name (`i2t models` lists them), a folder, or an already loaded model; None is the model
shipped for `data`: the Flickr8k ones (real photos and sentences) unless `data="shapes"`. `device` may be "auto".
"""
from __future__ import annotations

from collections.abc import Sequence

from img2text2img.models import captioner as captioners
from img2text2img.models import generator as generators
from img2text2img.models import load_model
from img2text2img.models import tagger as taggers
from img2text2img.models.names import model_rows


def caption(images: Sequence, model=None, beam_size: int | None = None, data: str | None = None,
            device: str = "cpu"):
    """Caption image paths or PIL images (`beam_size=None`: the beam the model was tuned for)."""
    return captioners.caption(images, model=model, beam_size=beam_size, data=data, device=device)


def tag(images: Sequence, model=None, top: int = 10, data: str | None = None, device: str = "cpu"):
    """Tag image paths or PIL images: a list of (tag, score) per image, best first."""
    return taggers.tag(images, model=model, top=top, data=data, device=device)


def generate(prompts: str | Sequence[str], model=None, n: int = 1, seed: int = 0, rerank_with=None,
             candidates: int = 8, guidance: float | None = None, data: str | None = None, device: str = "cpu",
             steps: int | None = None):
    """Draw `n` 64x64 pictures per prompt as PIL images; the same seed gives the same pictures. With `rerank_with`
    (a captioner: name, folder or model) each picture is the best of `candidates` samples by that captioner.
    `guidance` (None = the model's own): pixel / vae / gan, how far each sentence is drawn from the average one;
    diffusion, the classifier-free guidance scale. `steps` (diffusion only): denoising steps, fewer is faster.
    Always the torch models (the CLI may use a model's exported ONNX graphs, which agree to 1/255)."""
    return generators.generate_images(prompts, model=model, n=n, seed=seed, rerank_with=rerank_with,
                                      candidates=candidates, guidance=guidance, data=data, device=device,
                                      steps=steps)


def shipped_models() -> list[dict]:
    """The models shipped in the package: name, task, data set, quality line, size on disk, folder, default."""
    return model_rows()


__all__ = ["caption", "generate", "load_model", "shipped_models", "tag"]
