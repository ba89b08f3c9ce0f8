"""The latent GAN (models/gan, train/latent_gan.py): it draws through a frozen autoencoder, its two players learn,
a saved folder holds the decoder and draws the same pictures alone, and a run logs diversity and resumes. A tiny
preset on the shapes pictures keeps it to seconds."""
from __future__ import annotations

import json

import pytest
import torch

from img2text2img.checkpoint import load_checkpoint
from img2text2img.errors import I2TError
from img2text2img.models import load_model
from img2text2img.models.diffusion import DiffusionGenerator, diffusion_config
from img2text2img.models.gan import LatentGAN, latent_gan_config
from img2text2img.models.generator import GeneratorLoss
from img2text2img.models.generator.augment import diff_augment
from img2text2img.train.engine import StepContext, TrainConfig
from img2text2img.train.generator import train_generator
from img2text2img.train.generator_recipe import GeneratorRecipe
from img2text2img.train.latent_gan import LatentGANTask

PROMPTS = ["a large red circle in the top left", "a small blue square on the right"]


@pytest.fixture(scope="module")
def autoencoder(shapes, tmp_path_factory):
    """A (random, tiny) diffusion checkpoint: what a latent GAN takes its frozen autoencoder from."""
    _, vocab, _ = shapes
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ae") / "ae"
    DiffusionGenerator(diffusion_config("diffusion-tiny", vocab_size=len(vocab)), vocab).save(path)
    return path


def tiny(vocab, autoencoder, **kw) -> LatentGAN:
    torch.manual_seed(0)
    model = LatentGAN(latent_gan_config("latent-gan-tiny", vocab_size=len(vocab), **kw), vocab)
    model.load_autoencoder(load_checkpoint(autoencoder).state_dict)
    return model


def test_shapes_and_the_frozen_autoencoder(shapes, autoencoder):
    _, vocab, _ = shapes
    model = tiny(vocab, autoencoder)
    ids = model.prompt_ids(PROMPTS)
    assert model.latent(ids, torch.randn(2, 8)).shape == (2, 4, 8, 8)  # 32 px picture, 8x8x4 latent
    pictures = model.generate(PROMPTS, n=3, seed=1)
    assert pictures.shape == (6, 3, 32, 32) and 0 <= pictures.min() and pictures.max() <= 1
    assert torch.equal(pictures, model.generate(PROMPTS, n=3, seed=1))
    assert not torch.equal(pictures[0], pictures[1])  # the noise matters
    trained = {id(p) for p in model.generator_parameters()}
    assert not trained & {id(p) for p in model.autoencoder.parameters()}
    assert not trained & {id(p) for p in model.discriminator.parameters()}
    assert diff_augment(torch.randn(3, 4, 8, 8), ("translation", "cutout")).shape == (3, 4, 8, 8)


@pytest.mark.parametrize("judge", ["latent", "pixel"])
def test_both_players_learn_and_the_autoencoder_stays(shapes, autoencoder, judge):
    _, vocab, train = shapes
    extra = {"judge": "pixel", "d_channels": (8, 16, 16)} if judge == "pixel" else {}
    model = tiny(vocab, autoencoder, **extra).train()
    images = train.images[:8].float() / 255.0
    latents = model.autoencoder.encode(torch.nn.functional.interpolate(images, size=32, mode="area")).detach()
    captions = [[c[0]] for c in train.captions[:8]]
    task = LatentGANTask(model, torch.stack([latents, latents], 1), captions, GeneratorLoss(
        diff_augment="translation,cutout", gp_weight=2.0, mode_seeking=1.0), PROMPTS, ema=0.9)
    opts = task.configure_optimizers(TrainConfig(lr=2e-3))
    ctx = StepContext(model, opts, {}, None, 5.0, torch.device("cpu"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.nn.utils.rnn.pad_sequence([torch.tensor(c[0]) for c in captions], batch_first=True)
    logs = [task.training_step((latents, ids), i, ctx) for i in range(6)]
    assert logs[0]["d"] != logs[-1]["d"] and all("gp" in x and "ms" in x for x in logs)
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if k.startswith("autoencoder."))
    assert not torch.equal(before["net.fc.weight"], after["net.fc.weight"])
    # (not the output bias: within the hinge margins its gradient is -1 + 1/2 + 1/2 = 0)
    assert not torch.equal(before["discriminator.joint.0.bias"], after["discriminator.joint.0.bias"])


def test_a_saved_folder_holds_the_decoder_and_draws_the_same(shapes, autoencoder, tmp_path):
    _, vocab, _ = shapes
    model = tiny(vocab, autoencoder).eval()
    with torch.no_grad():
        model.net.out[1].bias.add_(0.3)  # not the initial weights
    model.save(tmp_path / "m", full=False)
    state = load_checkpoint(tmp_path / "m").state_dict
    assert any(k.startswith("autoencoder.dec_out") for k in state) and "autoencoder.latent_std" in state
    assert not any(k.startswith(("discriminator.", "autoencoder.down", "autoencoder.conv_in")) for k in state)
    loaded = load_model(tmp_path / "m", kind="generator")
    assert isinstance(loaded, LatentGAN)
    assert torch.equal(loaded.generate(PROMPTS, n=2, seed=3), model.generate(PROMPTS, n=2, seed=3))


def test_a_run_logs_diversity_samples_and_resumes(shapes, autoencoder, tmp_path):
    ds, _, _ = shapes
    recipe = GeneratorRecipe(kind="latent-gan-tiny", autoencoder=str(autoencoder), ema=0.9, d_lr=4e-3,
                             diversity_encoder="small_cnn", min_diversity=0.0)
    out = tmp_path / "run"
    cfg = TrainConfig(out=str(out), max_steps=4, batch_size=8, checkpoint_every=2, progress=False)
    summary = train_generator(recipe, str(ds.root), cfg)
    assert summary["steps"] == 4 and summary["parents"] == [str(autoencoder)]
    lines = [json.loads(x) for x in (out / "diversity.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4] and all(x["diversity_real"] > 0 for x in lines)
    assert (out / "samples" / "step000004.png").exists()
    ck = load_checkpoint(out / "last")
    assert any(k.startswith("raw.net.") for k in ck.state_dict)  # a resumable run keeps the raw weights
    first = LatentGAN.from_checkpoint(ck)
    assert not torch.equal(first.autoencoder.latent_std, torch.ones(4))  # the latent scale was fitted
    cfg2 = TrainConfig(out=str(out), max_steps=6, batch_size=8, checkpoint_every=2, progress=False, resume=True)
    assert train_generator(recipe, str(ds.root), cfg2)["steps"] == 6
    resumed = LatentGAN.from_checkpoint(load_checkpoint(out / "last"))
    assert torch.equal(resumed.autoencoder.latent_std, first.autoencoder.latent_std)
    assert not torch.equal(resumed.net.fc.weight, first.net.fc.weight)


def test_one_line_errors(shapes, autoencoder, tmp_path):
    ds, vocab, _ = shapes
    cfg = TrainConfig(out=str(tmp_path / "r"), max_steps=2, batch_size=8, progress=False)
    with pytest.raises(I2TError, match="needs --autoencoder"):
        train_generator(GeneratorRecipe(kind="latent-gan-tiny"), str(ds.root), cfg)
    with pytest.raises(I2TError, match="--augment is a"):
        train_generator(GeneratorRecipe(kind="latent-gan-tiny", augment="flip"), str(ds.root), cfg)
    with pytest.raises(I2TError, match="--autoencoder is a latent-gan option"):
        train_generator(GeneratorRecipe(kind="gan-tiny", autoencoder=str(autoencoder)), str(ds.root), cfg)
    tiny(vocab, autoencoder).save(tmp_path / "g")
    with pytest.raises(I2TError, match="not a diffusion checkpoint"):
        train_generator(GeneratorRecipe(kind="latent-gan-tiny", autoencoder=str(tmp_path / "g")), str(ds.root), cfg)
    with pytest.raises(I2TError, match="judge must be"):
        latent_gan_config("latent-gan-tiny", judge="both")
