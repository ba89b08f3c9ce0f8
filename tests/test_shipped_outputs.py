"""The six shipped models give the same captions, tags and pictures on fixed inputs as when they were shipped.

Why: a refactor or a config migration must not change what a user gets. tests/golden/ was written by running this
file as a script (`python tests/test_shipped_outputs.py --write`) on the code the models were shipped with; the test
recomputes everything and compares. Pictures may differ by one grey level (float rounding), nothing else may differ.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

GOLDEN = Path(__file__).parent / "golden"
PRETRAINED = Path(__file__).resolve().parents[1] / "img2text2img" / "pretrained"
FLICKR8K_PHOTOS = ["3385593926_d3e9c21170.jpg", "2677656448_6b7e7702af.jpg", "311146855_0b65fdb169.jpg",
                   "1026685415_0431cbf574.jpg"]
SHAPES_PROMPTS = ["a large red circle on the left", "a small blue square above a green triangle"]
FLICKR8K_PROMPTS = ["a dog biting a stick", "a man riding a bike on the beach"]
# name -> (task, folder under pretrained/, inputs)
SHIPPED = {
    "captioner": ("caption", "captioner", "flickr8k"),
    "captioner_shapes": ("caption", "captioner_shapes", "shapes"),
    "tagger": ("tag", "tagger", "flickr8k"),
    "tagger_shapes": ("tag", "tagger_shapes", "shapes"),
    "generator": ("generate", "generator", SHAPES_PROMPTS),
    "generator_flickr8k": ("generate", "generator_flickr8k", FLICKR8K_PROMPTS),
}


def _shapes_images() -> list[Image.Image]:
    from img2text2img.data.shapes import render, scene

    return [render(*scene(i, seed=123)[:2]) for i in range(4)]


def _flickr8k_images() -> list[Image.Image] | None:
    from img2text2img import locations
    from img2text2img.errors import I2TError

    try:
        root = locations.flickr8k_dir() / "images"
    except I2TError:
        return None
    paths = [root / name for name in FLICKR8K_PHOTOS]
    if not all(p.exists() for p in paths):
        return None
    return [Image.open(p).convert("RGB") for p in paths]


def outputs(name: str) -> dict | list[Image.Image] | None:
    """What shipped model `name` gives on its fixed inputs: a JSON-able dict, or a list of pictures; None when its
    inputs (Flickr8k) or its encoder weights are not on this machine."""
    import img2text2img as i2t

    task, folder, inputs = SHIPPED[name]
    model = PRETRAINED / folder
    if task == "generate":
        return [im for p in inputs for im in i2t.generate(p, model=model, n=2, seed=0)]
    images = _shapes_images() if inputs == "shapes" else _flickr8k_images()
    if images is None:
        return None
    if task == "caption":
        return {"captions": [[r.text, round(float(r.logprob), 3)] for r in i2t.caption(images, model=model)]}
    # the tag head's own output: the shipped Flickr8k tagger merges the ImageNet words in by default since #13
    tags = i2t.tag(images, model=model, top=5, open_vocab=False)
    return {"tags": [[[t, round(float(s), 4)] for t, s in row] for row in tags]}


def write_golden() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name in SHIPPED:
        out = outputs(name)
        if out is None:
            raise SystemExit(f"{name}: inputs or weights missing; cannot write its golden outputs")
        if isinstance(out, list):
            for k, im in enumerate(out):
                im.save(GOLDEN / f"{name}-{k}.png")
        else:
            (GOLDEN / f"{name}.json").write_text(json.dumps(out, indent=1) + "\n", encoding="utf-8")


@pytest.mark.parametrize("name", list(SHIPPED))
def test_shipped_model_outputs_unchanged(name):
    try:
        out = outputs(name)
    except Exception as e:  # an encoder's ImageNet weights missing on this machine
        from img2text2img.errors import I2TError

        if isinstance(e, I2TError) and "weights" in str(e):
            pytest.skip(str(e))
        raise
    if out is None:
        pytest.skip("Flickr8k not present")
    if isinstance(out, list):
        for k, im in enumerate(out):
            want = np.asarray(Image.open(GOLDEN / f"{name}-{k}.png").convert("RGB"), dtype=np.int16)
            got = np.asarray(im.convert("RGB"), dtype=np.int16)
            assert got.shape == want.shape
            assert np.abs(got - want).max() <= 1, f"{name} picture {k} changed"
    else:
        assert out == json.loads((GOLDEN / f"{name}.json").read_text(encoding="utf-8"))


if __name__ == "__main__":
    if "--write" in sys.argv:
        write_golden()
