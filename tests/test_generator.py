"""Generator: each kind learns on shapes, seeds reproduce, checkpoints round-trip (old ones migrate), prompts are
handled, the recipe drives training, the CLI works."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from img2text2img.checkpoint import load_checkpoint
from img2text2img.errors import I2TError
from img2text2img.metrics.image import frechet_feature_distance, paired_cosine_similarity
from img2text2img.models import load_model
from img2text2img.models.generator import (
    MAX_PROMPT_CHARS,
    Generator,
    GeneratorConfig,
    GeneratorLoss,
    PromptWarning,
    create_generator,
    generate_images,
    generator_config,
    list_generators,
    load_config,
    load_generator,
    save_grid,
    to_pil,
)
from img2text2img.train.engine import TrainConfig
from img2text2img.train.generator import (
    FeatureLoss,
    GeneratorRecipe,
    ImageCaptionDataset,
    collate,
    fit_sentence_mean_from,
    train_generator,
)

PRETRAINED = Path(__file__).resolve().parent.parent / "img2text2img" / "pretrained"
SHIPPED_SHAPES_CAPTIONER = PRETRAINED / "captioner_shapes"
PROMPTS = ["a large red circle in the top left", "a small blue square to the right of a small green star"]


def _batches(data, n_steps, bs=16, seed=0):
    dset = ImageCaptionDataset(data, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for step in range(n_steps):
        idx = torch.randint(len(dset), (bs,), generator=g).tolist()
        yield step, collate([dset[i] for i in idx])


def _tiny_config(folder: Path, steps: int = 2, **kw) -> TrainConfig:
    """A training run of `steps` steps into `folder`: batch 8, one checkpoint at the end, no progress bar."""
    return TrainConfig(out=str(folder), max_steps=steps, batch_size=8, checkpoint_every=steps, progress=False, **kw)


@pytest.mark.parametrize("preset,prior,ratio", [("pixel-tiny", "standard", 0.85), ("vae-tiny", "standard", 0.5),
                                                ("vae-tiny", "learned", 0.5)])
def test_pixel_and_vae_loss_falls(shapes, preset, prior, ratio):
    _, vocab, data = shapes
    dset = ImageCaptionDataset(data)
    fixed = collate([dset[i] for i in range(32)])  # one held batch: the per-batch loss is too noisy to compare
    torch.manual_seed(0)
    model = create_generator(preset, vocab, **({"prior": prior} if prior != "standard" else {})).train()
    objective = GeneratorLoss(kl_warmup=10)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_recon() -> float:
        with torch.no_grad():
            return objective(model, *fixed, step=10_000)[2]["recon"]

    start = fixed_recon()
    for step, (ids, images) in _batches(data, 50):
        _, loss, logs = objective(model, ids, images, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert ("kl" in logs) == (model.config.kind == "vae")
    assert fixed_recon() < ratio * start


@pytest.mark.parametrize("extra", [{}, {"diff_augment": "color,translation,cutout", "gp_weight": 2.0}])
def test_gan_discriminator_learns_and_generator_moves(shapes, extra):
    _, vocab, data = shapes
    torch.manual_seed(0)
    model = create_generator("gan-tiny", vocab).train()
    objective = GeneratorLoss(recon_weight=0.5, **extra)
    g_advs = []
    g_opt = torch.optim.Adam(model.generator_parameters(), lr=2e-3, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    before = model.decoder.to_rgb.weight.detach().clone()
    d_losses = []
    for _, (ids, images) in _batches(data, 16, bs=8):
        d_loss, g_fn = objective.gan(model, ids, images, torch.randn(ids.shape[0], model.config.z_dim))
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        g_loss, logs = g_fn()
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
        d_losses.append(logs["d"])
        g_advs.append(logs["g_adv"])
        assert np.isfinite(logs["g_adv"]) and "recon" in logs and ("gp" in logs) == bool(extra)
    if not extra:  # unregularised, the discriminator wins quickly; augmented and penalised it only moves
        assert np.mean(d_losses[-4:]) < np.mean(d_losses[:4])  # hinge D loss starts near 2
    assert np.ptp(d_losses) > 0.05 and np.ptp(g_advs) > 0.01  # the generator's loss moves with the game
    assert not torch.equal(before, model.decoder.to_rgb.weight)


@pytest.mark.parametrize("preset,over", [("pixel-tiny", {}), ("vae-tiny", {}), ("vae-tiny", {"prior": "learned"}),
                                         ("gan-tiny", {})])
def test_seed_determinism_and_save_load_identity(shapes, preset, over, tmp_path):
    _, vocab, _ = shapes
    torch.manual_seed(1)
    model = create_generator(preset, vocab, **over)
    for p in model.parameters():  # fresh FiLM and prior layers are zero: make every part draw something
        p.data.add_(0.05 * torch.randn_like(p))
    a = model.generate(PROMPTS, n=3, seed=7)
    torch.randn(5)  # the global RNG must not matter
    b = model.generate(PROMPTS, n=3, seed=7)
    assert a.shape == (6, 3, 64, 64) and a.dtype == torch.float32
    assert 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, b)
    if model.config.z_dim:
        assert not torch.equal(a, model.generate(PROMPTS, n=3, seed=8))
        assert not torch.equal(a[0], a[1])  # n samples of one prompt differ
    model.save(tmp_path / "ck")
    loaded = load_model(tmp_path / "ck")
    assert isinstance(loaded, Generator) and loaded.config == model.config and loaded.settings == model.settings
    assert torch.equal(loaded.generate(PROMPTS, n=3, seed=7), a)
    # shipped form: fp16, drawing weights only -> loads and draws nearly the same
    model.save(tmp_path / "small", half=True, full=False)
    small = load_model(tmp_path / "small")
    assert not any(k.startswith(("discriminator.", "image_encoder.")) for k in load_checkpoint(tmp_path / "small").state_dict)
    assert (small.generate(PROMPTS, n=3, seed=7) - a).abs().max() < 0.02


def test_old_configs_migrate_moved_keys_and_refuse_removed_options():
    shipped = load_checkpoint(PRETRAINED / "generator_flickr8k")
    config, settings = load_config(shipped.config, shipped.inference)
    assert isinstance(config, GeneratorConfig) and config.prior == "learned"
    assert settings.guidance == 2.5 and settings.temperature == 1.0  # drawing settings moved out of the network
    scene = load_checkpoint(PRETRAINED / "generator")
    assert load_config(scene.config, scene.inference)[1].temperature == 0.5
    # loss weights were recipe settings: any value loads; an experimental decoder loads only switched off
    load_config({**shipped.config, "beta": 4.0, "fg_weight": 4.0, "kl_warmup": 10}, {})
    with pytest.raises(I2TError, match="word_attention=2 is an option this version no longer has"):
        load_config({**shipped.config, "word_attention": 2}, {})
    with pytest.raises(I2TError, match="does not know the keys"):
        load_config({**shipped.config, "no_such": 1}, {})
    # the inference block, when present, wins over what an old config held
    assert load_config(shipped.config, {"guidance": 1.5})[1].guidance == 1.5


def test_prompt_edge_cases(shapes):
    _, vocab, _ = shapes
    model = create_generator("pixel-tiny", vocab)
    for bad in ["", "   \n\t", []]:
        with pytest.raises(I2TError):
            model.generate(bad if isinstance(bad, list) else [bad])
    with pytest.warns(PromptWarning, match="never seen"):
        out = model.generate(["a red zeppelin"])
    assert out.shape == (1, 3, 64, 64)
    with pytest.warns(PromptWarning, match="characters"):
        model.generate(["red " * (MAX_PROMPT_CHARS // 4 + 10)])
    with pytest.warns(PromptWarning, match="only the first"):
        model.generate([" ".join(["red"] * 100)])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.generate(["a red circle"])  # known words: no warning
    with pytest.raises(I2TError):
        model.generate(["a red circle"], n=0)



def test_generate_images_grid_and_cli(shapes, tmp_path):
    from img2text2img.cli import main

    _, vocab, _ = shapes
    model = create_generator("vae-tiny", vocab)
    model.save(tmp_path / "ck")
    ims = generate_images(PROMPTS, model=tmp_path / "ck", n=2, seed=3)
    assert len(ims) == 4 and ims[0].size == (64, 64) and ims[0].mode == "RGB"
    alone = generate_images(PROMPTS[0], model=model, n=1, seed=3)[0]  # batch size may move a float rounding: <= 1 level
    assert np.abs(np.asarray(ims[0]).astype(int) - np.asarray(alone).astype(int)).max() <= 1
    grid = save_grid(ims, tmp_path / "g.png", ncol=2)
    assert grid.exists() and not list(tmp_path.glob(".g.png*"))

    out = tmp_path / "out.png"
    assert main(["generate", "a red circle", "-n", "4", "--seed", "0", "--model", str(tmp_path / "ck"), "-o", str(out)]) == 0
    first = out.read_bytes()
    assert main(["generate", "a red circle", "--model", str(tmp_path / "ck"), "-o", str(out)]) == 2  # no overwrite
    assert out.read_bytes() == first
    assert main(["generate", "a red circle", "-n", "4", "--seed", "0", "--model", str(tmp_path / "ck"), "-o", str(out), "--force"]) == 0
    assert out.read_bytes() == first  # same seed, same PNG
    assert main(["generate", "   ", "--model", str(tmp_path / "ck"), "-o", str(tmp_path / "e.png")]) == 2




def test_train_generator_with_engine_records_recipe_and_parents(shapes, tmp_path):
    ds, _, _ = shapes
    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=4, batch_size=8, checkpoint_every=2, progress=False)
    summary = train_generator(GeneratorRecipe(kind="gan-tiny", min_diversity=0.0), str(ds.root), cfg)
    assert summary["steps"] == 4 and summary["parents"] == [] and summary["recipe"]["kind"] == "gan-tiny"
    assert (tmp_path / "run" / "diversity.jsonl").exists()  # logged even with the floor off
    assert (tmp_path / "run" / "last" / "samples.png").exists()
    assert (tmp_path / "run" / "samples" / "step000002.png").exists()
    model = load_model(tmp_path / "run")
    assert model.config.kind == "gan"


def test_presets_registered():
    assert {"pixel", "vae", "gan", "scene", "pixel-tiny", "vae-tiny", "gan-tiny", "scene-tiny"} == set(list_generators())
    with pytest.raises(I2TError, match="unknown generator preset"):
        generator_config("vae-attn")


def test_frechet_feature_distance_hand_values():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 3))
    assert abs(frechet_feature_distance(a, a)) < 1e-6
    # Same covariance, shifted mean: distance = ||shift||^2 exactly.
    assert frechet_feature_distance(a, a + np.array([1.0, 2.0, 0.0])) == pytest.approx(5.0, abs=1e-6)
    # 1-D: var 1 vs var 4 (scaled copy), same mean: 1 + 4 - 2*2 = 1 (times the sample variance of a).
    x = a[:, :1] - a[:, :1].mean()
    v = float(np.var(x, ddof=1))
    assert frechet_feature_distance(x, 2 * x) == pytest.approx(v * (1 + 4 - 4), rel=1e-6)
    t = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    assert paired_cosine_similarity(t, t).tolist() == pytest.approx([1.0, 1.0])
    assert paired_cosine_similarity(t, t.flip(0)).tolist() == pytest.approx([0.0, 0.0])



def test_default_generator_is_shipped_and_small():
    from img2text2img.models.names import default_model_dir

    size = sum(p.stat().st_size for p in default_model_dir("generator", "shapes").iterdir())
    assert size < 5_000_000
    ims = generate_images(["a large red circle in the top left"], n=2, seed=0, data="shapes")
    assert len(ims) == 2 and ims[0].size == (64, 64)
    again = generate_images(["a large red circle in the top left"], n=2, seed=0, data="shapes")
    assert np.array_equal(np.asarray(ims[1]), np.asarray(again[1]))


def _reader(vocab, path):
    """A small captioner checkpoint (random weights are enough: the critic only needs a fixed, differentiable reader)."""
    from img2text2img.models.captioner import create_captioner
    from img2text2img.models.encoders import create_encoder

    torch.manual_seed(1)
    reader = create_captioner("small_cnn+lstm-tiny", vocab, 64, store_encoder=True)
    reader.attach_encoder(create_encoder("small_cnn", pretrained=False))
    return reader.save(path)




def test_init_from_adds_a_neutral_learned_prior_and_records_its_parent(shapes, tmp_path):
    ds, _, _ = shapes
    train_generator(GeneratorRecipe(kind="vae-tiny", kl_warmup=10), str(ds.root), _tiny_config(tmp_path / "a"))
    start = load_model(tmp_path / "a" / "last")
    summary = train_generator(GeneratorRecipe(kind="vae-tiny", prior="learned"), str(ds.root),
                              _tiny_config(tmp_path / "b", 3, lr=0.0), init_from=tmp_path / "a" / "last")
    assert summary["steps"] == 3 and summary["parents"] == [str(tmp_path / "a" / "last")]
    after = load_model(tmp_path / "b" / "last")
    assert after.config.prior == "learned"
    # lr 0 and a zero-initialised prior: the extended model draws exactly what it started from
    # (BatchNorm running statistics move in training mode, so compare with those copied over)
    after.decoder.load_state_dict(start.decoder.state_dict())
    assert torch.equal(after.generate(PROMPTS, n=2, seed=5), start.generate(PROMPTS, n=2, seed=5))
    with pytest.raises(I2TError, match="not gan"):
        train_generator("gan-tiny", str(ds.root), _tiny_config(tmp_path / "c", 1), init_from=tmp_path / "a" / "last")
    with pytest.raises(I2TError, match="learned prior is a vae option"):
        create_generator("pixel-tiny", start.vocab, prior="learned")


def test_recipe_options_apply_to_their_kinds_and_continued_runs_keep_their_network(shapes, tmp_path):
    ds, _, _ = shapes
    train_generator(GeneratorRecipe(kind="vae-tiny", z_dim=3), str(ds.root), _tiny_config(tmp_path / "a"))
    assert load_model(tmp_path / "a" / "last").config.z_dim == 3
    with pytest.raises(I2TError, match="--z-dim cannot change when a run starts from --init-from"):
        train_generator(GeneratorRecipe(kind="vae-tiny", z_dim=5), str(ds.root), _tiny_config(tmp_path / "c"),
                        init_from=tmp_path / "a" / "last")
    # resuming with the network the run was started with is fine; another is refused, not ignored
    train_generator(GeneratorRecipe(kind="vae-tiny", z_dim=3), str(ds.root), _tiny_config(tmp_path / "a", 3, resume=True))
    with pytest.raises(I2TError, match="--z-dim cannot change when a run resumes"):
        train_generator(GeneratorRecipe(kind="vae-tiny", z_dim=4), str(ds.root),
                        _tiny_config(tmp_path / "a", 4, resume=True))
    # options of another kind are refused rather than accepted and unused
    for preset, option in (("pixel-tiny", {"z_dim": 4}), ("pixel-tiny", {"beta": 2.0}), ("gan-tiny", {"beta": 2.0}),
                           ("vae-tiny", {"recon_weight": 1.0}), ("gan-tiny", {"perceptual": "small_cnn"})):
        with pytest.raises(I2TError, match="option; a (pixel|gan|vae) generator has none"):
            train_generator(GeneratorRecipe(kind=preset, **option), str(ds.root), _tiny_config(tmp_path / "e"))


def test_feature_loss_is_zero_on_the_real_image_and_trains_the_drawing(shapes, tmp_path):
    from img2text2img.models.encoders import create_encoder

    ds, vocab, data = shapes
    torch.manual_seed(0)
    enc = create_encoder("small_cnn", pretrained=False)
    loss = FeatureLoss(enc, weight=1.0)
    real = data.images[:8].float() / 255.0
    assert float(loss(real, real)) == 0.0
    blurred = torch.nn.functional.avg_pool2d(real, 5, 1, 2).requires_grad_(True)
    value = loss(blurred, real)
    assert float(value.detach()) > 0
    value.backward()
    assert blurred.grad is not None and blurred.grad.abs().sum() > 0
    assert all(p.grad is None for p in enc.parameters())  # the encoder stays frozen
    loss.train()
    assert not loss.encoder.training  # its BatchNorm stays in eval mode inside a training loop
    small = FeatureLoss(enc, weight=1.0, size=32)  # a smaller reading: still zero on the real image, still a signal
    assert small.size == 32 and float(small(real, real)) == 0.0 and float(small(blurred, real)) > 0

    dset = ImageCaptionDataset(data)
    fixed = collate([dset[i] for i in range(32)])
    model = create_generator("pixel-tiny", vocab).train()
    objective = GeneratorLoss(perceptual=loss)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_perceptual() -> float:
        with torch.no_grad():
            return objective(model, *fixed)[2]["perceptual"]

    start = fixed_perceptual()
    for step, (ids, images) in _batches(data, 40):
        _, total, _ = objective(model, ids, images, step)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert fixed_perceptual() < 0.8 * start
    assert not any("encoder" in k for k in model.state_dict())  # never enters the generator's checkpoint

    recipe = GeneratorRecipe(kind="vae-tiny", perceptual="small_cnn", perceptual_weight=0.5, perceptual_size=48)
    summary = train_generator(recipe, str(ds.root), _tiny_config(tmp_path / "run"))
    assert summary["recipe"]["perceptual"] == "small_cnn" and summary["recipe"]["perceptual_size"] == 48


def test_cli_train_generator_takes_the_recipe_and_guards_its_folder(shapes, tmp_path):
    from img2text2img.cli import main

    ds, _, _ = shapes
    out = tmp_path / "run"
    args = ["train", "generator", "--kind", "vae-tiny", "--data", str(ds.root), "--out", str(out), "--steps", "2",
            "--batch-size", "8", "--checkpoint-every", "2", "--kl-warmup", "5", "--beta", "0.5"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["recipe"]["beta"] == 0.5 and summary["command"].startswith("i2t train generator")
    assert main(args) == 2  # a fresh run does not replace one without --force
    assert main([*args, "--force"]) == 0
    (tmp_path / "notes.txt").write_text("mine")
    assert main([*args[:6], str(tmp_path / "notes.txt"), *args[7:]]) == 2  # never a file
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert main([*args, "--recon-weight", "1", "--out", str(tmp_path / "bad")]) == 2  # a gan option


def test_guidance_stretches_the_sentence_from_the_training_mean_and_is_a_saved_setting(shapes, tmp_path):
    from img2text2img.cli import main

    ds, _, _ = shapes
    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "run"))
    gen = load_generator(tmp_path / "run")
    mean = gen.sentence_mean.clone()
    assert mean.abs().sum() > 0  # every training checkpoint carries its text encoder's mean sentence
    # ... the mean of the first caption of each training picture, which the library fits alike
    assert torch.allclose(fit_sentence_mean_from(gen, str(ds.root)), mean, atol=1e-5)

    ids = gen.prompt_ids(PROMPTS)
    z = torch.randn(len(PROMPTS), gen.config.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        s = mean + 2.0 * (gen.text(ids) - mean)
        want = gen.decoder(torch.cat([s, gen.from_noise(s, z)], 1))
        assert torch.equal(gen.draw(ids, z, guidance=2.0), want)  # mean + g * (s - mean), for decoder and prior alike
    plain = gen.generate(PROMPTS, n=2, seed=0)
    assert torch.equal(gen.generate(PROMPTS, n=2, seed=0, guidance=1.0), plain)  # 1 = the model as trained
    louder = gen.generate(PROMPTS, n=2, seed=0, guidance=2.0)
    assert not torch.equal(louder, plain)

    gen.guided(2.0).save(tmp_path / "guided", full=False)
    assert load_checkpoint(tmp_path / "guided").inference["guidance"] == 2.0  # beside the network, not in it
    again = load_generator(tmp_path / "guided")
    assert again.settings.guidance == 2.0 and torch.equal(again.generate(PROMPTS, n=2, seed=0), louder)
    as_trained = generate_images(PROMPTS, model=again, n=2, seed=0, guidance=1.0)  # the library's face of --guidance
    assert [np.asarray(a).tolist() for a in as_trained] == [np.asarray(a).tolist() for a in to_pil(plain)]
    assert again.settings.guidance == 2.0  # the caller's model keeps its own setting

    fresh = create_generator("vae-tiny", gen.vocab)  # never trained, never fitted: no mean to push away from
    with pytest.raises(I2TError, match="mean sentence"):
        fresh.guided(2.0)
    assert torch.equal(fresh.guided(1.0).generate(PROMPTS, seed=1), fresh.generate(PROMPTS, seed=1))

    out = tmp_path / "g.png"
    assert main(["generate", "a red circle", "--model", str(tmp_path / "run"), "--guidance", "2", "-o", str(out)]) == 0
    fresh.save(tmp_path / "fresh")
    assert main(["generate", "a red circle", "--model", str(tmp_path / "fresh"), "--guidance", "2",
                 "-o", str(tmp_path / "f.png")]) == 2 and not (tmp_path / "f.png").exists()
    # the built-in shapes generator writes scenes: it has no guidance, and says so
    assert main(["generate", "a red circle", "--data", "shapes", "--guidance", "2", "-o", str(tmp_path / "s.png")]) == 2


# -- the GAN's parts (#18): DiffAugment, MA-GP, EMA, the collapse watch -------------------------------------------

def test_diff_augment_is_differentiable_and_seeded_alike_for_real_and_fake():
    from img2text2img.models.generator.augment import diff_augment, parse_policy
    real, fake = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16, requires_grad=True)
    a = diff_augment(real, "color,translation,cutout", torch.Generator().manual_seed(3))
    b = diff_augment(real, "color,translation,cutout", torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, real) and a.shape == real.shape
    # the same seed moves real and drawn pictures the same way: on equal inputs the outputs are equal
    f = diff_augment(fake, "translation,cutout", torch.Generator().manual_seed(5))
    r = diff_augment(fake.detach().clone(), "translation,cutout", torch.Generator().manual_seed(5))
    assert torch.equal(f.detach(), r)
    f.sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0 and (fake.grad == 0).any()  # cut-out pixels get none
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 4, 4] = 1
    moved = diff_augment(x, "translation", torch.Generator().manual_seed(0))
    assert moved.sum() <= 1 and parse_policy("none") == ()
    with pytest.raises(I2TError, match="unknown DiffAugment part"):
        parse_policy("color,blur")


def test_ma_gradient_penalty_is_zero_centred_and_trains_the_discriminator(shapes):
    from img2text2img.models.generator.losses import ma_gradient_penalty
    _, vocab, data = shapes
    torch.manual_seed(0)
    model = create_generator("gan-tiny", vocab).train()
    D = model.discriminator
    _, (ids, images) = next(_batches(data, 1, bs=4))
    x = images.clone().requires_grad_(True)
    s = D.sentence(ids)
    gp = ma_gradient_penalty(D.score(x, s), x, s)
    assert gp > 0
    gp.backward()
    assert D.out.parametrizations.weight.original.grad.abs().sum() > 0
    # zero-centred: a score that does not depend on picture or sentence costs nothing
    x2, s2 = images.clone().requires_grad_(True), s.detach().requires_grad_(True)
    flat = (x2 * 0).sum((1, 2, 3)) + (s2 * 0).sum(1) + 3.0
    assert float(ma_gradient_penalty(flat, x2, s2)) == 0.0
    # in the D loss, with DiffAugment on: the penalty is logged and the loss is finite
    objective = GeneratorLoss(diff_augment="color,translation,cutout", gp_weight=2.0)
    d_loss, g_fn = objective.gan(model, ids, images, torch.randn(4, model.config.z_dim))
    d_loss.backward()
    assert torch.isfinite(d_loss) and "gp" in g_fn()[1]


def test_gan_run_saves_the_ema_logs_diversity_and_resumes(shapes, tmp_path):
    ds, _, _ = shapes
    recipe = GeneratorRecipe(kind="gan-tiny", ema=0.9, d_lr=4e-3, diversity_encoder="small_cnn", min_diversity=0.0)
    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=6, batch_size=8, checkpoint_every=3, progress=False)
    summary = train_generator(recipe, str(ds.root), cfg)
    assert summary["steps"] == 6
    ck = load_checkpoint(tmp_path / "run" / "last", kind="generator")
    raw = {k[4:]: v for k, v in ck.state_dict.items() if k.startswith("raw.")}
    assert raw and not any(k.startswith("discriminator.") for k in raw)
    key = "decoder.to_rgb.weight"
    assert not torch.equal(raw[key], ck.state_dict[key])  # the saved weights are the average, not the raw ones
    model = load_model(tmp_path / "run")  # draws with the average
    assert torch.equal(model.state_dict()[key], ck.state_dict[key].to(model.state_dict()[key].dtype))
    lines = [json.loads(x) for x in (tmp_path / "run" / "diversity.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [3, 6] and all(x["diversity"] >= 0 and x["diversity_real"] > 0 for x in lines)
    cfg2 = TrainConfig(out=str(tmp_path / "run"), max_steps=8, batch_size=8, checkpoint_every=2, progress=False,
                       resume=True)
    assert train_generator(recipe, str(ds.root), cfg2)["steps"] == 8


def test_gan_diversity_floor_stops_a_run(shapes, tmp_path):
    ds, _, _ = shapes
    recipe = GeneratorRecipe(kind="gan-tiny", diversity_encoder="small_cnn", min_diversity=1e6)
    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=6, batch_size=8, checkpoint_every=2, progress=False)
    with pytest.raises(I2TError, match="collapsed at step 2") as e:
        train_generator(recipe, str(ds.root), cfg)
    assert "\n" not in str(e.value) and (tmp_path / "run" / "last" / "samples.png").exists()


def test_weight_ema_follows_raw_weights_and_skips_the_discriminator():
    from img2text2img.train.gan import WeightEMA
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    ema = WeightEMA(net, 0.5, skip="nothing.")
    start = net[0].weight.detach().clone()
    with torch.no_grad():
        net[0].weight.add_(1.0)
    ema.update(net)
    assert torch.allclose(ema.shadow["0.weight"], start + 0.5)
    with ema.applied(net):
        assert torch.allclose(net[0].weight, start + 0.5)
    assert torch.allclose(net[0].weight, start + 1.0)
    with pytest.raises(I2TError, match="ema must be"):
        WeightEMA(net, 1.0)


def test_mode_seeking_term_pays_for_drawings_that_follow_the_noise(shapes):
    from img2text2img.models.generator.losses import mode_seeking_ratio
    a, z = torch.zeros(2, 3, 4, 4), torch.zeros(2, 8)
    assert float(mode_seeking_ratio(a, a + 0.5, z, z + 1.0)) == pytest.approx(0.5)
    _, vocab, data = shapes
    torch.manual_seed(0)
    model = create_generator("gan-tiny", vocab).train()
    _, (ids, images) = next(_batches(data, 1, bs=8))
    _, g_fn = GeneratorLoss(mode_seeking=1.0).gan(model, ids, images, torch.randn(8, model.config.z_dim))
    g_loss, logs = g_fn()
    assert logs["ms"] > 0 and float(g_loss) > logs["g_adv"]  # 1 / ms is added
    with pytest.raises(I2TError, match="is a gan/latent-gan option"):
        train_generator(GeneratorRecipe(kind="vae-tiny", mode_seeking=2.0), "shapes", TrainConfig(out="unused"))
