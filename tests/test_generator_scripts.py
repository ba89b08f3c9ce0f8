"""The generator scoring scripts take a diffusion model and `--steps`: Fréchet (`evaluate_generator`,
scripts/results_generator.py), the paired round trip (scripts/compare_generators.py) and the copy / seed-diversity
check (scripts/generator_copy_check.py), on a tiny diffusion model and the shipped shapes models, in seconds."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import compare_generators as cg
import generator_copy_check as cc
import results_generator as rg

from img2text2img.errors import I2TError

DATA = "shapes:160"  # the conftest `shapes` set: generated once into tmp


@pytest.fixture(scope="module")
def tiny_diffusion(shapes, tmp_path_factory):
    """A tiny diffusion generator with random (non-zero) weights, saved as a checkpoint folder."""
    from img2text2img.models.diffusion import DiffusionGenerator, DiffusionSettings, diffusion_config

    _, vocab, _ = shapes
    torch.manual_seed(0)
    model = DiffusionGenerator(diffusion_config("diffusion-tiny", vocab_size=len(vocab)), vocab,
                               DiffusionSettings(steps=3, guidance=2.0))
    with torch.no_grad():  # a fresh UNet predicts v = 0: every prompt would draw the same
        for p in model.ema.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.save(tmp_path_factory.mktemp("diffusion") / "m", full=False)


def test_frechet_draws_a_diffusion_model_at_the_steps_asked(shapes, tiny_diffusion):
    from img2text2img.models import load_model
    from img2text2img.roundtrip import default_model_dir
    from img2text2img.train.generator import evaluate_generator

    ds_dir = shapes[0].root
    gen = load_model(tiny_diffusion, kind="generator")
    a = evaluate_generator(gen, data=DATA, data_dir=ds_dir, n=6, size=32, steps=1, batch_size=4)
    assert a["kind"] == "diffusion" and a["sampler_steps"] == 1 and a["images"] == 6
    assert a["temperature"] is None and a["guidance"] == 2.0
    assert gen.settings.steps == 3  # the caller's model keeps its own steps
    b = evaluate_generator(gen, data=DATA, data_dir=ds_dir, n=6, size=32, steps=3, batch_size=4)
    assert b["sampler_steps"] == 3 and b["pixel_mse"] != a["pixel_mse"]
    # steps are a diffusion option: for a VAE they are an error, not silently ignored
    with pytest.raises(I2TError, match="steps is an option of diffusion"):
        evaluate_generator(default_model_dir("generator", "shapes"), data=DATA, data_dir=ds_dir, n=4, size=32, steps=2)


def test_results_generator_scores_a_diffusion_checkpoint(tiny_diffusion, tmp_path, monkeypatch):
    monkeypatch.setattr(rg, "dataset_for", lambda data: DATA)  # the cached 160-picture set, not the 5,000 one
    out = tmp_path / "r.json"
    rg.main(["--model", str(tiny_diffusion), "--data", "shapes", "--out", str(out), "--steps", "2",
             "--frechet-images", "6", "--roundtrip-images", "6", "--threads", "1"])
    rec = json.loads(out.read_text())
    assert rec["kind"] == "diffusion" and rec["sampler_steps"] == 2 and rec["frechet"]["sampler_steps"] == 2
    assert rec["roundtrip"]["images"] == 6 and "--steps 2" in rec["command"] and rec["split"] == "test"
    rg.main(["--model", str(tiny_diffusion), "--data", "shapes", "--out", str(out), "--steps", "2", "--split", "val",
             "--frechet-images", "6", "--roundtrip-images", "6", "--threads", "1"])
    val = json.loads(out.read_text())  # other photos drawn and compared: another distance
    assert val["split"] == "val" and val["frechet"]["frechet_feature_distance"] != rec["frechet"]["frechet_feature_distance"]


def test_compare_takes_a_diffusion_generator_and_steps(shapes, tiny_diffusion):
    from img2text2img.roundtrip import default_model_dir

    ds_dir = shapes[0].root
    vae, cap = str(default_model_dir("generator", "shapes")), str(default_model_dir("captioner", "shapes"))
    res = cg.compare(DATA, "test", 6, [0, 1], [("vae", vae, None), ("d", str(tiny_diffusion), 1.5)],
                     [("shapes", cap)], data_dir=str(ds_dir), steps=1)
    assert {r["generator"] for r in res["rows"]} == {"vae", "d"} and len(res["rows"]) == 4
    assert res["summary"]["shapes"]["d"]["vs_vae"]["seeds"] == 2


class CopyingGenerator:
    """Draws the training photos themselves: the copy check must catch it."""

    def __init__(self, vocab, photos):
        self.config = SimpleNamespace(image_size=photos.shape[-1], max_tokens=40, kind="copier")
        self.settings, self.vocab, self.photos = SimpleNamespace(), vocab, photos.float() / 255.0

    def generate(self, ids, n=1, seed=0, temperature=None):
        return self.photos[:len(ids)]


def test_copy_check_catches_a_copier_and_measures_seed_diversity(shapes, tiny_diffusion, tmp_path):
    from img2text2img.models import load_model

    _, vocab, train = shapes
    ds_dir = shapes[0].root
    copier = cc.copy_check(CopyingGenerator(vocab, train.images), DATA, 5, [0, 1], train_images=40,
                           data_dir=str(ds_dir), size=32, pairs=tmp_path / "pairs.png", pair_count=2)
    assert copier["fraction_below_threshold"] == 0.0 and not copier["passes"]
    assert copier["nearest_training_cosine"]["median"] == pytest.approx(1.0, abs=1e-4)
    assert copier["diversity"]["feature_diversity"] == pytest.approx(0.0, abs=1e-4)  # same picture at every seed
    assert (tmp_path / "pairs.png").stat().st_size > 0 and copier["drawings"] == 10
    gen = load_model(tiny_diffusion, kind="generator")
    rec = cc.copy_check(gen, DATA, 5, [0, 1, 2], train_images=40, data_dir=str(ds_dir), size=32)
    assert rec["kind"] == "diffusion" and rec["drawings"] == 15 and rec["diversity"]["feature_diversity"] > 0
    assert 0 <= rec["fraction_below_threshold"] <= 1 and rec["closest"][0]["seed"] in (0, 1, 2)
    with pytest.raises(I2TError, match="threshold"):
        cc.copy_check(gen, DATA, 5, [0], threshold=1.5, data_dir=str(ds_dir))


def test_nearest_diversity_and_seeds():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    best, index = cc.nearest(torch.tensor([[2.0, 0.1], [0.0, -1.0], [1.0, 1.0]]), keys, chunk=2)
    assert index.tolist()[:2] == [0, 0] and best[2] == pytest.approx(2 ** -0.5)
    f = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[1.0, 0.0], [1.0, 0.0]]])  # prompt 0: orthogonal seeds; 1: same
    d = cc.seed_diversity(f, torch.zeros(2, 2, 3, 4, 4))
    assert d["feature_diversity"] == pytest.approx(0.5) and d["feature_diversity_min_prompt"] == pytest.approx(0.0)
    assert cc.parse_seeds("0-2") == [0, 1, 2]
    with pytest.raises(I2TError, match="twice"):
        cc.parse_seeds("1,1")
