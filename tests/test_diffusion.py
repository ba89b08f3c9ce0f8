"""The latent diffusion generator: each stage learns, sampling is seeded and guided, checkpoints round-trip and a
run resumes where it stopped. A tiny preset on the shapes pictures keeps all of it to seconds."""
from __future__ import annotations

import pytest
import torch

from img2text2img.checkpoint import load_checkpoint
from img2text2img.models.diffusion import DiffusionGenerator, DiffusionSettings, diffusion_config
from img2text2img.models.diffusion.schedule import ddim_sample, noised
from img2text2img.train.diffusion import (
    AutoencoderTask,
    DenoiserTask,
    DiffusionRecipe,
    PerceptualLoss,
    collate_latents,
    encode_pictures,
    train_diffusion,
)
from img2text2img.train.engine import StepContext

PROMPTS = ["a large red circle in the top left", "a small blue square on the right"]


def tiny(vocab) -> DiffusionGenerator:
    torch.manual_seed(0)
    return DiffusionGenerator(diffusion_config("diffusion-tiny", vocab_size=len(vocab)), vocab)


def train_steps(task, params, steps: int, batch_of, lr: float = 3e-3) -> list[float]:
    opt = torch.optim.Adam(params, lr=lr)
    ctx = StepContext(task.model, {"main": opt}, {}, None, 1.0, torch.device("cpu"))
    torch.manual_seed(0)
    return [task.training_step(batch_of(i), i, ctx)["loss"] for i in range(steps)]


def test_autoencoder_loss_falls(shapes):
    _, vocab, train = shapes
    model = tiny(vocab)
    images = torch.nn.functional.avg_pool2d(train.images[:8].float(), 2).round().to(torch.uint8)  # 32x32
    recipe = DiffusionRecipe(preset="diffusion-tiny", perceptual_weight=0.0)  # its own test below; slow here
    task = AutoencoderTask(model, images, recipe, images[:4].float() / 255.0)
    losses = train_steps(task, model.autoencoder.parameters(), 30, lambda i: images.float() / 255.0)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


def test_perceptual_term_is_zero_on_the_real_picture_frozen_and_differentiable(shapes):
    _, _, train = shapes
    images = train.images[:2].float() / 255.0
    perceptual = PerceptualLoss()
    assert float(perceptual(images, images)) == 0.0
    assert not any(p.requires_grad for p in perceptual.parameters())
    drawn = images.flip(-1).requires_grad_(True)
    loss = perceptual(drawn, images)
    loss.backward()
    assert loss.item() > 0 and float(drawn.grad.abs().sum()) > 0


def test_denoiser_loss_falls_and_trains_only_the_denoiser_and_its_average(shapes):
    _, vocab, train = shapes
    model = tiny(vocab)
    small = torch.nn.functional.avg_pool2d(train.images[:16].float(), 2).round().to(torch.uint8)  # 32x32
    latents = encode_pictures(model, small, fit_scale=True)
    assert latents.shape == (16, 2, 4, 8, 8)
    assert abs(float(latents.mean())) < 0.1 and abs(float(latents.std()) - 1) < 0.1  # unit variance after fitting
    recipe = DiffusionRecipe(preset="diffusion-tiny", sentence_dropout=0.2, ema_decay=0.9)
    task = DenoiserTask(model, latents, train.captions[:16], recipe, PROMPTS)
    data = task.train_dataset()
    batch = collate_latents([data[k] for k in range(0, 80, 5)])  # each picture once
    ae_before = {k: v.clone() for k, v in model.autoencoder.state_dict().items()}
    ema_before = [p.clone() for p in model.ema.parameters()]

    def fixed_loss() -> float:  # the same times, noise and dropped captions before and after
        torch.manual_seed(123)
        with torch.no_grad():
            return float(task.loss(model, batch)[0])

    before = fixed_loss()
    train_steps(task, model.net.parameters(), 40, lambda i: batch)
    assert fixed_loss() < 0.85 * before
    assert all(torch.equal(v, model.autoencoder.state_dict()[k]) for k, v in ae_before.items())
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, model.ema.parameters()))


def test_ddim_is_exact_for_a_perfect_predictor():
    z0 = torch.randn(3, 4, 8, 8)
    eps = torch.randn_like(z0)

    def oracle(z, t):  # the v that leads back to z0 from any point on the z0 -> eps path
        return noised(z0, t, eps)[1]

    assert torch.allclose(ddim_sample(oracle, eps, 5), z0, atol=1e-5)


def test_sampling_shape_seed_guidance_and_save_load(shapes, tmp_path):
    _, vocab, _ = shapes
    model = tiny(vocab)
    with torch.no_grad():  # a fresh UNet predicts v = 0; give it a real one so prompts and guidance matter
        for p in model.ema.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    a = model.generate(PROMPTS, n=2, seed=3, steps=4)
    assert a.shape == (4, 3, 32, 32) and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, model.generate(PROMPTS, n=2, seed=3, steps=4))
    assert not torch.equal(a, model.generate(PROMPTS, n=2, seed=4, steps=4))
    assert not torch.allclose(model.generate(PROMPTS, seed=3, steps=4, guidance=1.0),
                              model.generate(PROMPTS, seed=3, steps=4, guidance=3.0), atol=1e-4)
    model.settings = DiffusionSettings(steps=4, guidance=2.0)
    shipped = DiffusionGenerator.from_checkpoint(load_checkpoint(model.save(tmp_path / "m", full=False)))
    assert shipped.settings == model.settings
    assert torch.equal(shipped.generate(PROMPTS, n=2, seed=3), model.generate(PROMPTS, n=2, seed=3))
    full = load_checkpoint(model.save(tmp_path / "full"))
    assert any(k.startswith("net.") for k in full.state_dict)
    assert not any(k.startswith("net.") for k in load_checkpoint(tmp_path / "m").state_dict)
    assert full.config["kind"] == "diffusion" and full.kind == "generator"
    assert torch.equal(model.guided(1.0).generate(PROMPTS, seed=3), model.generate(PROMPTS, seed=3, guidance=1.0))


def test_two_stage_training_resumes_from_the_saved_step(shapes, tmp_path):
    ds, _, _ = shapes
    recipe = DiffusionRecipe(preset="diffusion-tiny", ae_steps=2, ae_batch_size=4, perceptual_weight=0.0, steps=4,
                             batch_size=8, warmup_steps=0, checkpoint_every=2)
    out = tmp_path / "run"
    train_diffusion(str(ds.root), out, recipe, log_every=100, progress=False, command=["test"])
    assert load_checkpoint(out / "denoiser" / "last").info["step"] == 4
    assert (out / "autoencoder" / "samples" / "step000002.png").exists()
    assert (out / "denoiser" / "samples" / "step000004.png").exists()
    first = DiffusionGenerator.from_checkpoint(load_checkpoint(out / "denoiser" / "last"))
    more = DiffusionRecipe(**{**recipe.__dict__, "steps": 6})
    summary = train_diffusion(str(ds.root), out, more, resume=True, log_every=100, progress=False)
    assert "autoencoder" not in summary  # stage 1 was done: not run again
    ck = load_checkpoint(out / "denoiser" / "last")
    assert ck.info["step"] == 6
    resumed = DiffusionGenerator.from_checkpoint(ck)
    assert torch.equal(resumed.autoencoder.latent_std, first.autoencoder.latent_std)
    assert not torch.equal(resumed.ema.unet.out[2].weight, first.ema.unet.out[2].weight)


SOURCE_RECIPE = DiffusionRecipe(preset="diffusion-tiny", ae_steps=2, ae_batch_size=4, perceptual_weight=0.0, steps=2,
                                batch_size=8, warmup_steps=0, checkpoint_every=2)


@pytest.fixture(scope="module")
def source_run(shapes, tmp_path_factory):
    """A finished tiny run whose model the --autoencoder and --init-from runs start from: its denoiser/last."""
    out = tmp_path_factory.mktemp("diffusion-source") / "a"
    train_diffusion(str(shapes[0].root), out, SOURCE_RECIPE, log_every=100, progress=False, command=["test"])
    return out / "denoiser" / "last"


def test_a_denoiser_trains_on_another_runs_autoencoder_with_min_snr(shapes, source_run, tmp_path):
    """--autoencoder skips stage 1 (the source's autoencoder and latent scale are kept as they are); --min-snr
    weights the loss by time and still learns."""
    from img2text2img.errors import I2TError

    ds, _, _ = shapes
    base = SOURCE_RECIPE
    source = DiffusionGenerator.from_checkpoint(load_checkpoint(source_run))
    recipe = DiffusionRecipe(**{**base.__dict__, "autoencoder": str(source_run),
                                "min_snr": 5.0, "steps": 3, "seed": 1})
    summary = train_diffusion(str(ds.root), tmp_path / "b", recipe, log_every=100, progress=False, command=["test"])
    assert "autoencoder" not in summary and not (tmp_path / "b" / "autoencoder").exists()
    assert summary["parents"] == [str(source_run)]
    got = DiffusionGenerator.from_checkpoint(load_checkpoint(tmp_path / "b" / "denoiser" / "last"))
    for k, v in source.autoencoder.state_dict().items():
        assert torch.equal(v, got.autoencoder.state_dict()[k]), k
    # the weighting itself: a low-noise time counts less than in plain v-MSE, a high-noise one the same
    task = DenoiserTask(got, torch.zeros(2, 2, 4, 8, 8), [[[5, 6]]] * 2, recipe, PROMPTS)
    z0, ids = torch.randn(2, 4, 8, 8), torch.tensor([[5, 6], [5, 6]])
    losses = {}
    for gamma in (0.0, 5.0):
        task.recipe = DiffusionRecipe(**{**recipe.__dict__, "min_snr": gamma, "sentence_dropout": 0.0})
        torch.manual_seed(0)
        with torch.no_grad():
            losses[gamma] = float(task.loss(got, (z0, ids))[0])
    assert 0 < losses[5.0] < losses[0.0]
    with pytest.raises(I2TError, match="differs"):
        train_diffusion(str(ds.root), tmp_path / "c", DiffusionRecipe(**{**recipe.__dict__, "preset": "diffusion"}),
                        progress=False)


def test_init_from_carries_on_from_another_models_drawing_weights(shapes, source_run, tmp_path):
    """--init-from starts every part from the source's EMA weights (at lr 0 the run's weights stay those) and skips
    stage 1; it excludes --autoencoder, which would start a fresh denoiser."""
    from img2text2img.errors import I2TError

    ds, _, _ = shapes
    base = SOURCE_RECIPE
    source_dir = source_run
    source = DiffusionGenerator.from_checkpoint(load_checkpoint(source_dir))
    still = DiffusionRecipe(**{**base.__dict__, "init_from": str(source_dir), "lr": 0.0, "seed": 1})
    summary = train_diffusion(str(ds.root), tmp_path / "b", still, log_every=100, progress=False, command=["test"])
    assert "autoencoder" not in summary and summary["parents"] == [str(source_dir)]
    got = DiffusionGenerator.from_checkpoint(load_checkpoint(tmp_path / "b" / "denoiser" / "last"))
    want = source.ema.state_dict()
    for name, part in (("ema", got.ema), ("net", got.net)):
        for k, v in part.state_dict().items():
            assert torch.allclose(v, want[k], atol=1e-6), (name, k)
    moving = DiffusionRecipe(**{**still.__dict__, "lr": 3e-3})
    train_diffusion(str(ds.root), tmp_path / "c", moving, log_every=100, progress=False, command=["test"])
    moved = DiffusionGenerator.from_checkpoint(load_checkpoint(tmp_path / "c" / "denoiser" / "last"))
    assert not torch.equal(moved.net.unet.out[2].weight, want["unet.out.2.weight"])
    assert torch.equal(moved.autoencoder.latent_std, source.autoencoder.latent_std)
    with pytest.raises(I2TError, match="pass one"):
        train_diffusion(str(ds.root), tmp_path / "d",
                        DiffusionRecipe(**{**still.__dict__, "autoencoder": str(source_dir)}), progress=False)
