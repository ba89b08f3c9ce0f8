"""Scene generator: its picture reader re-draws training pictures faithfully, the writer learns on shapes, seeds
reproduce, checkpoints round-trip, and the CLI trains and loads it as a generator."""
from __future__ import annotations

import random

import pytest
import torch

from img2text2img.errors import I2TError
from img2text2img.models import load_model
from img2text2img.models.generator import SceneGenerator, SceneTokens, generator_config
from img2text2img.vocab import pad_batch

PROMPTS = ["a large red circle in the top left", "a small blue square to the right of a small green star"]




@pytest.fixture(scope="module")
def fitted(shapes):
    _, vocab, data = shapes
    torch.manual_seed(0)
    model = SceneGenerator(generator_config("scene-tiny", vocab_size=len(vocab), templates=24), vocab=vocab)
    model.picture.fit(data.images, seed=0)
    return model, model.picture.parse(data.images)


def test_reader_redraws_training_pictures_closely(shapes, fitted):
    _, _, data = shapes
    model, scenes = fitted
    real = data.images[:40].float() / 255
    redrawn = model.picture.render(scenes[:40])
    # A plain background picture of the right colour is ~0.05 away; the re-drawing must carry the shapes too.
    background_only = model.picture.render([s[:1] + [model.picture.tokens.end] for s in scenes[:40]])
    err, err_background = (redrawn - real).abs().mean(), (background_only - real).abs().mean()
    assert err < 0.012 and err < 0.4 * err_background
    counts = [(len(s) - 2) // 5 for s in scenes]
    assert 1.4 < sum(counts) / len(counts) < 2.2  # the set holds 1-3 shapes per picture, 1.83 on average


def test_scene_tokens_follow_the_grammar(fitted):
    model, scenes = fitted
    allowed = model.picture.tokens.allowed()
    for s in scenes:
        assert s[-1] == model.picture.tokens.end and len(s) <= model.picture.tokens.length
        assert all(allowed[t, tok] for t, tok in enumerate(s))


def test_writer_learns_and_save_load_draws_the_same(shapes, fitted, tmp_path):
    _, _, data = shapes
    model, scenes = fitted
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    rng = random.Random(0)
    losses = []
    for _ in range(150):
        idx = [rng.randrange(len(scenes)) for _ in range(32)]
        loss = model(pad_batch([rng.choice(data.captions[i]) for i in idx]), [scenes[i] for i in idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert sum(losses[-10:]) / 10 < 0.6 * sum(losses[:10]) / 10
    model.eval()
    a = model.generate(PROMPTS, n=2, seed=3)
    assert a.shape == (4, 3, 64, 64) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, model.generate(PROMPTS, n=2, seed=3))  # same seed, same pictures
    assert not torch.equal(a, model.generate(PROMPTS, n=2, seed=4))
    loaded = load_model(model.save(tmp_path / "scene"), kind="generator")
    assert isinstance(loaded, SceneGenerator)
    assert torch.equal(a, loaded.generate(PROMPTS, n=2, seed=3))


def test_train_scene_generator_from_the_cli_and_resume(shapes, tmp_path):
    from img2text2img.cli import main

    ds, _, _ = shapes
    out = tmp_path / "run"
    args = ["train", "generator", "--kind", "scene-tiny", "--data", str(ds.root), "--out", str(out),
            "--batch-size", "16", "--checkpoint-every", "10"]
    assert main([*args, "--steps", "10"]) == 0
    assert (out / "last" / "samples.png").exists()
    assert main([*args, "--steps", "20", "--resume"]) == 0
    model = load_model(out)
    assert isinstance(model, SceneGenerator)
    assert main([*args, "--steps", "2", "--beta", "2", "--out", str(tmp_path / "bad")]) == 2  # not a scene option
    assert main([*args, "--steps", "2"]) == 2  # a fresh run does not replace one
    assert model.settings.temperature == 0.5 and not (tmp_path / "bad").exists()
    assert main(["generate", "a red circle", "-n", "2", "--model", str(out), "-o", str(tmp_path / "s.png")]) == 0


def test_scene_config_checks():
    with pytest.raises(I2TError):
        generator_config("no-such")
    with pytest.raises(I2TError):
        generator_config("scene", d_model=30, heads=4)
    tok = SceneTokens(generator_config("scene"))
    assert tok.length == 17 and tok.end == tok.n - 1
