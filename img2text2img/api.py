"""The Python API in five calls, mirroring the CLI:

    import img2text2img as i2t
    i2t.caption(["photo.jpg"])                 # -> [CaptionResult(text, tokens, logprob)]
    i2t.tag(["photo.jpg"], top=5)              # -> [[(tag, score), ...]]
    i2t.generate("a dog on the grass", n=4)    # -> [PIL.Image]
    i2t.load_model("shapes-captioner")         # a shipped name, or any checkpoint / run folder -> model
    i2t.shipped_models()                       # the names, with task, data set and quality

`model=` takes a shipped name (`i2t models` lists them), a folder, or an already loaded model; None is the model
shipped for `data`: the Flickr8k ones (real photos and sentences) unless `data="shapes"`. `device` may be "auto".
`backend=`: None (the default) runs the torch model when torch is installed, else the model's exported ONNX graphs
(the base install has no torch); "auto", "torch" and "onnx" choose as the CLI's `--backend` does. The two paths
agree (>= 99% identical captions, pictures to 1/255). Nothing here imports torch until a torch model runs.
"""
from __future__ import annotations

import os
from collections.abc import Sequence

from img2text2img.data.images import read_images
from img2text2img.models import load_model
from img2text2img.models.names import model_rows
from img2text2img.runtime.choose import choose_runtime


def runtime_for(kind: str, model, data: str | None, device: str, backend: str | None,
                torch_only: str | None = None):
    """The torch-free model to run, or None for torch; a model object the caller loaded is used as it is."""
    if model is not None and not isinstance(model, (str, os.PathLike)):
        return model if type(model).__module__.startswith("img2text2img.runtime") else None
    return choose_runtime(kind, model, data, device, backend, torch_only=torch_only)


def caption(images: Sequence, model=None, beam_size: int | None = None, data: str | None = None,
            device: str = "auto", backend: str | None = None, open_vocab: bool | None = None):
    """Caption image paths or PIL images (`beam_size=None`: the beam the model was tuned for). `open_vocab`: name
    objects the ImageNet head is sure of (None: the model's own setting; both backends have it)."""
    rt = runtime_for("captioner", model, data, device, backend)
    if rt is not None:
        return rt.caption_images(read_images(images), beam_size=beam_size, open_vocab=open_vocab)
    from img2text2img.models import captioner as captioners

    return captioners.caption(images, model=model, beam_size=beam_size, data=data, device=device,
                              open_vocab=open_vocab)


def tag(images: Sequence, model=None, top: int = 10, data: str | None = None, device: str = "auto",
        backend: str | None = None, open_vocab: bool | None = None):
    """Tag image paths or PIL images: a list of (tag, score) per image, best first. `open_vocab`: merge in the
    objects the encoder's ImageNet head names, nouns and adjectives only (None: the model's own setting)."""
    rt = runtime_for("tagger", model, data, device, backend)
    if rt is not None:
        return rt.tag_images(read_images(images), top=top, open_vocab=open_vocab)
    from img2text2img.models import tagger as taggers

    return taggers.tag(images, model=model, top=top, data=data, device=device, open_vocab=open_vocab)


def generate(prompts: str | Sequence[str], model=None, n: int = 1, seed: int = 0, rerank_with=None,
             candidates: int = 8, guidance: float | None = None, data: str | None = None, device: str = "auto",
             steps: int | None = None, backend: str | None = None):
    """Draw `n` 64x64 pictures per prompt as PIL images; the same seed gives the same pictures. With `rerank_with`
    (a captioner: name, folder or model) each picture is the best of `candidates` samples by that captioner.
    `guidance` (None = the model's own): pixel / vae / gan, how far each sentence is drawn from the average one;
    diffusion, the classifier-free guidance scale. `steps` (diffusion only): denoising steps, fewer is faster."""
    torch_only = "rerank_with" if rerank_with is not None else None
    rt = runtime_for("generator", model, data, device, backend, torch_only=torch_only)
    if rt is not None:
        return rt.generate_pil(prompts, n=n, seed=seed, guidance=guidance, steps=steps)
    from img2text2img.models import generator as generators

    return generators.generate_images(prompts, model=model, n=n, seed=seed, rerank_with=rerank_with,
                                      candidates=candidates, guidance=guidance, data=data, device=device,
                                      steps=steps)


def shipped_models() -> list[dict]:
    """The models shipped in the package: name, task, data set, quality line, size on disk, folder, default."""
    return model_rows()


__all__ = ["caption", "generate", "load_model", "shipped_models", "tag"]
