"""Round-trip scoring: a generator that returns the real photo scores ~1, one that returns grey ~0; the HTML report
is valid and lists every row."""
from __future__ import annotations

from html.parser import HTMLParser

import pytest
import torch
from PIL import Image

from img2text2img.data import load_dataset
from img2text2img.roundtrip import evaluate_roundtrip, grey_image, render_html, write_report


@pytest.fixture(scope="module")
def shapes():
    return load_dataset("shapes:400")


def _oracle(ds):
    """A stub captioner that recognises dataset images exactly (by pixels) and says 'nothing' otherwise, plus the
    stub generators built on the same lookup."""
    by_pixels = {}
    by_caption = {}
    for im in ds.split("test"):
        img = Image.open(ds.image_path(im)).convert("RGB")
        by_pixels[img.tobytes()] = ds.captions[im][0]
        for c in ds.captions[im]:
            by_caption[c] = img

    def caption_fn(images):
        return [by_pixels.get(i.convert("RGB").tobytes(), "a gray background") for i in images]

    def real_generator(prompts, seed):
        return [by_caption[p] for p in prompts]

    def grey_generator(prompts, seed):
        return [grey_image(64) for _ in prompts]

    def embed_fn(images):
        return torch.stack([torch.from_numpy(__import__("numpy").asarray(i.resize((8, 8)), dtype="float32")).flatten()
                            for i in images])

    return caption_fn, real_generator, grey_generator, embed_fn


def test_real_image_generator_scores_one(shapes):
    cap, real_gen, _, embed = _oracle(shapes)
    r = evaluate_roundtrip(shapes, cap, real_gen, embed, limit=30, captions_per_image=2)
    assert r.scores["n_pairs"] == 60
    assert r.scores["normalised_bleu4"] == pytest.approx(1.0, abs=1e-9)
    assert r.scores["normalised_bleu1"] == pytest.approx(1.0, abs=1e-9)
    assert r.scores["upper_real_photo"]["bleu4"] > r.scores["lower_grey"]["bleu4"]
    i2i = r.scores["image_to_image"]
    assert i2i["recall_at_1"] == pytest.approx(1.0) and i2i["cosine_generated_vs_real"] == pytest.approx(1.0, abs=1e-5)


def test_grey_generator_scores_zero(shapes):
    cap, _, grey_gen, embed = _oracle(shapes)
    r = evaluate_roundtrip(shapes, cap, grey_gen, embed, limit=30)
    assert r.scores["normalised_bleu4"] == pytest.approx(0.0, abs=1e-9)
    assert r.scores["normalised_bleu1"] == pytest.approx(0.0, abs=1e-9)


def test_report_is_valid_html_with_every_row(shapes, tmp_path):
    cap, real_gen, _, embed = _oracle(shapes)
    r = evaluate_roundtrip(shapes, cap, real_gen, embed, limit=12)
    paths = write_report(r, tmp_path / "out")
    text = paths["html"].read_text()

    class Check(HTMLParser):
        def __init__(self):
            super().__init__()
            self.stack, self.rows, self.imgs = [], 0, 0

        def handle_starttag(self, tag, attrs):
            if tag not in ("img", "meta", "br"):
                self.stack.append(tag)
            a = dict(attrs)
            self.rows += tag == "tr" and a.get("class") == "row"
            self.imgs += tag == "img" and a.get("src", "").startswith("data:image/png;base64,")

        def handle_endtag(self, tag):
            assert self.stack and self.stack.pop() == tag, f"unbalanced </{tag}>"

    c = Check()
    c.feed(text)
    assert c.stack == [] and c.rows == len(r.rows) == 12 and c.imgs == 24
    assert (tmp_path / "out" / "roundtrip.json").exists()
    assert render_html(r).startswith("<!DOCTYPE html>")


def test_shipped_model_pairs():
    from img2text2img.errors import I2TError
    from img2text2img.roundtrip import default_model_dir

    assert default_model_dir("captioner", "shapes").name == "captioner_shapes"
    assert (default_model_dir("generator", "shapes") / "config.json").exists()
    with pytest.raises(I2TError, match="no generator for my-photos ships"):
        default_model_dir("generator", "my-photos")


def test_roundtrip_cli_temperature_is_the_generators_noise_scale(tmp_path):
    """--temperature draws with that noise scale instead of the model's own: at the model's own value it gives the
    model's own drawings (same scores), at another it gives other drawings, and the JSON says which was used."""
    import json

    from img2text2img.cli import main
    from img2text2img.roundtrip import default_model_dir

    own = json.loads((default_model_dir("generator", "shapes") / "config.json").read_text())["config"]["sample_temperature"]
    runs = {}
    for name, extra in (("default", []), ("own", ["--temperature", str(own)]), ("hot", ["--temperature", "3.0"])):
        assert main(["roundtrip-eval", "--data", "shapes", "--limit", "6", "--encoder", "none",
                     "--out", str(tmp_path / name), *extra]) == 0
        runs[name] = json.loads((tmp_path / name / "roundtrip.json").read_text())
    recaptions = {k: [r["recaption"] for r in v["rows"]] for k, v in runs.items()}
    assert recaptions["own"] == recaptions["default"] and runs["own"]["scores"]["temperature"] == own
    assert recaptions["hot"] != recaptions["default"] and "temperature" not in runs["default"]["scores"]


def test_roundtrip_default_data_is_flickr8k_when_found_else_shapes_with_a_note(monkeypatch, capsys, tmp_path):
    from img2text2img import locations
    from img2text2img.cli.roundtrip import default_roundtrip_data
    from img2text2img.errors import I2TError
    from img2text2img.roundtrip import SHIPPED

    monkeypatch.setattr(locations, "flickr8k_dir", lambda explicit=None: tmp_path)
    assert default_roundtrip_data(None) == "flickr8k" and capsys.readouterr().err == ""

    def missing(explicit=None):
        raise I2TError("Flickr8k dataset not found")

    monkeypatch.setattr(locations, "flickr8k_dir", missing)
    assert default_roundtrip_data(None) == "shapes"
    err = capsys.readouterr().err
    assert err.startswith("note:") and err.count("\n") == 1 and "--data shapes" in err
    # the pairs come from the one names table
    assert SHIPPED["flickr8k"] == {"captioner": "captioner", "generator": "diffusion_flickr8k"}
