"""Generator: each variant learns on shapes, seeds reproduce, checkpoints round-trip, prompts are handled, CLI works."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from img2text2img.errors import I2TError
from img2text2img.metrics.image import frechet_feature_distance, paired_cosine_similarity
from img2text2img.models import load_model
from img2text2img.models.generator import (
    MAX_PROMPT_CHARS,
    Generator,
    PromptWarning,
    create_generator,
    generate_images,
    generator_config,
    list_generators,
    save_grid,
)
from img2text2img.train.generator import ImageCaptionDataset, collate, load_image_captions
from img2text2img.vocab import Vocabulary

SHIPPED_SHAPES_CAPTIONER = Path(__file__).resolve().parent.parent / "img2text2img" / "pretrained" / "captioner_shapes"
PROMPTS = ["a large red circle in the top left", "a small blue square to the right of a small green star"]


def _batches(data, n_steps, bs=16, seed=0):
    dset = ImageCaptionDataset(data, seed=seed)
    g = torch.Generator().manual_seed(seed)
    for step in range(n_steps):
        idx = torch.randint(len(dset), (bs,), generator=g).tolist()
        yield step, collate([dset[i] for i in idx])


def _tiny_config(folder: Path, steps: int = 2, **kw):
    """A training run of `steps` steps into `folder`: batch 8, one checkpoint at the end, no progress bar."""
    from img2text2img.train.engine import TrainConfig

    return TrainConfig(out=str(folder), max_steps=steps, batch_size=8, checkpoint_every=steps, progress=False, **kw)


@pytest.mark.parametrize("preset,ratio", [("pixel-tiny", 0.85), ("vae-tiny", 0.5), ("vae-attn-tiny", 0.5), ("vae-attn-refine-tiny", 0.5),
                                          ("vae-layers-tiny", 0.5)])
def test_pixel_and_vae_loss_falls(shapes, preset, ratio):
    _, vocab, data = shapes
    dset = ImageCaptionDataset(data)
    fixed = collate([dset[i] for i in range(32)])  # one held batch: the per-batch loss is too noisy to compare
    torch.manual_seed(0)
    model = create_generator(preset, vocab).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_recon() -> float:
        with torch.no_grad():
            return model(*fixed, step=10_000)[2]["recon"]

    start = fixed_recon()
    for step, (ids, images) in _batches(data, 50):
        _, loss, _ = model(ids, images, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_recon() < ratio * start


def test_gan_discriminator_learns_and_generator_moves(shapes):
    _, vocab, data = shapes
    torch.manual_seed(0)
    model = create_generator("gan-tiny", vocab).train()
    g_opt = torch.optim.Adam(model.generator_parameters(), lr=2e-3, betas=(0.5, 0.999))
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))
    before = model.decoder.to_rgb.weight.detach().clone()
    d_losses = []
    for _, (ids, images) in _batches(data, 16, bs=8):
        d_loss, g_fn = model.gan_losses(ids, images, torch.randn(ids.shape[0], model.config.z_dim))
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        g_loss, logs = g_fn()
        g_opt.zero_grad()
        g_loss.backward()
        g_opt.step()
        d_losses.append(logs["d"])
        assert np.isfinite(logs["g_adv"])
    assert np.mean(d_losses[-4:]) < np.mean(d_losses[:4])  # hinge D loss starts near 2
    assert not torch.equal(before, model.decoder.to_rgb.weight)


@pytest.mark.parametrize("preset", ["pixel-tiny", "vae-tiny", "gan-tiny", "vae-attn-tiny", "vae-attn-refine-tiny",
                                    "vae-layers-tiny", "vae-sprites-tiny"])
def test_seed_determinism_and_save_load_identity(shapes, preset, tmp_path):
    _, vocab, _ = shapes
    torch.manual_seed(1)
    model = create_generator(preset, vocab)
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
    assert isinstance(loaded, Generator) and loaded.config == model.config
    assert torch.equal(loaded.generate(PROMPTS, n=3, seed=7), a)
    # shipped form: fp16, drawing weights only -> loads and draws nearly the same
    model.save(tmp_path / "small", half=True, full=False)
    small = load_model(tmp_path / "small")
    diff = (small.generate(PROMPTS, n=3, seed=7) - a).abs()
    if model.config.decoder == "layers":  # each pixel takes its most likely layer: fp16 may flip near-ties
        assert float((diff > 0.02).float().mean()) < 0.02
    else:
        assert diff.max() < 0.02


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


def test_train_generator_with_engine(shapes, tmp_path):
    from img2text2img.train.engine import TrainConfig
    from img2text2img.train.generator import train_generator

    ds, _, _ = shapes
    cfg = TrainConfig(out=str(tmp_path / "run"), max_steps=4, batch_size=8, checkpoint_every=2, progress=False)
    summary = train_generator("gan-tiny", str(ds.root), cfg)
    assert summary["steps"] == 4
    assert (tmp_path / "run" / "last" / "samples.png").exists()
    assert (tmp_path / "run" / "samples" / "step000002.png").exists()
    model = load_model(tmp_path / "run")
    assert model.config.kind == "gan"


def test_presets_registered():
    assert {"pixel", "vae", "gan", "pixel-tiny", "vae-tiny", "gan-tiny"} <= set(list_generators())


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
    from img2text2img.models.generator import DEFAULT_MODEL_DIR

    size = sum(p.stat().st_size for p in DEFAULT_MODEL_DIR.iterdir())
    assert size < 5_000_000
    ims = generate_images(["a large red circle in the top left"], n=2, seed=0)
    assert len(ims) == 2 and ims[0].size == (64, 64)
    again = generate_images(["a large red circle in the top left"], n=2, seed=0)
    assert np.array_equal(np.asarray(ims[1]), np.asarray(again[1]))


def _reader(vocab, path):
    """A small captioner checkpoint (random weights are enough: the critic only needs a fixed, differentiable reader)."""
    from img2text2img.models.captioner import create_captioner
    from img2text2img.models.encoders import create_encoder

    torch.manual_seed(1)
    reader = create_captioner("small_cnn+lstm-tiny", vocab, 64, store_encoder=True)
    reader.attach_encoder(create_encoder("small_cnn", pretrained=False))
    return reader.save(path)


@pytest.mark.skipif(not (SHIPPED_SHAPES_CAPTIONER / "config.json").exists(), reason="shapes captioner not shipped")
def test_caption_critic_steers_prior_samples_and_stays_frozen(shapes, tmp_path):
    from img2text2img.models.captioner import load_captioner
    from img2text2img.train.generator import CaptionCritic

    _, vocab, data = shapes
    # The shipped shapes captioner as the reader (a random one barely looks at the image). Its vocabulary was built
    # from 4,000 training images, this test's from 128, so word ids differ and must be mapped through the words.
    reader = load_captioner(SHIPPED_SHAPES_CAPTIONER)
    critic = CaptionCritic(reader, vocab, weight=1.0, target="prior")
    assert [int(critic.lookup[vocab.id(w)]) for w in vocab.itos] == [reader.vocab.id(w) for w in vocab.itos]
    assert reader.vocab.itos != vocab.itos
    frozen = {k: v.clone() for k, v in critic.state_dict().items()}

    torch.manual_seed(0)
    model = create_generator("vae-attn-tiny", vocab).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    dset = ImageCaptionDataset(data)
    ids, _ = collate([dset[i] for i in range(32)])
    z = torch.randn(32, model.config.z_dim, generator=torch.Generator().manual_seed(0))

    def prior_critic() -> float:  # how well the reader reads prompts back from fixed prior draws
        with torch.no_grad():
            return float(critic(model.draw(ids, z), ids))

    start = prior_critic()
    for step, (b_ids, images) in _batches(data, 40):
        _, loss, logs = model(b_ids, images, step, critic=critic)
        assert "critic" in logs
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert prior_critic() < 0.9 * start
    assert all(torch.equal(v, critic.state_dict()[k]) for k, v in frozen.items())  # the reader never moves
    assert not any("captioner" in k for k in model.state_dict())  # and never enters the generator's checkpoint
    critic.train()
    assert not critic.captioner.training  # its BatchNorm and dropout stay in eval mode inside a training loop


def test_train_generator_init_from_and_critic(shapes, tmp_path):
    from img2text2img.train.engine import TrainConfig
    from img2text2img.train.generator import train_generator

    ds, vocab, _ = shapes
    first = train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "a"))
    assert first["steps"] == 2
    start = load_model(tmp_path / "a" / "last")
    cfg = _tiny_config(tmp_path / "b", lr=0.0)
    summary = train_generator("vae-tiny", str(ds.root), cfg, init_from=tmp_path / "a" / "last",
                              critic=_reader(vocab, tmp_path / "reader"), critic_weight=0.5)
    assert summary["critic_weight"] == 0.5 and summary["init_from"].endswith("last")
    assert summary["critic_weights_sha256"] == json.loads((tmp_path / "reader" / "config.json").read_text())["weights_sha256"]
    after = load_model(tmp_path / "b" / "last")
    # lr 0: the decoder weights are exactly those it started from (BatchNorm running statistics may move)
    assert torch.equal(start.decoder.to_rgb.weight, after.decoder.to_rgb.weight)
    with pytest.raises(I2TError, match="not gan"):
        train_generator("gan-tiny", str(ds.root), TrainConfig(out=str(tmp_path / "c"), max_steps=1, progress=False),
                        init_from=tmp_path / "a" / "last")


def test_a_vae_continues_as_a_pixel_generator_that_draws_its_z0_picture(shapes, tmp_path):
    from img2text2img.train.generator import train_generator

    ds, vocab, _ = shapes
    torch.manual_seed(0)
    vae = create_generator("vae-attn-refine-tiny", vocab).eval()
    for p in vae.parameters():  # fresh FiLM / attention outputs are zero: give the z columns something to drop
        p.data.add_(0.05 * torch.randn_like(p))
    pixel = vae.without_latent().eval()
    assert pixel.config.kind == "pixel" and pixel.config.z_dim == 0 and not hasattr(pixel, "image_encoder")
    ids = vae.prompt_ids(PROMPTS)
    z0 = vae.draw(ids, torch.zeros(len(PROMPTS), vae.config.z_dim))
    assert torch.allclose(pixel.draw(ids), z0, atol=1e-6)
    assert not torch.allclose(vae.draw(ids, torch.ones(len(PROMPTS), vae.config.z_dim)), z0, atol=1e-3)
    with pytest.raises(I2TError, match="only a vae"):
        pixel.without_latent()

    vae.save(tmp_path / "a" / "last")
    cfg = _tiny_config(tmp_path / "b")
    summary = train_generator("pixel-tiny", str(ds.root), cfg, init_from=tmp_path / "a" / "last")
    assert summary["steps"] == 2 and load_model(tmp_path / "b" / "last").config.kind == "pixel"


def test_critic_total_variation_term_penalises_textures_not_flat_ground():
    from img2text2img.models.generator import Generator

    ids = torch.ones(2, 3, dtype=torch.long)
    flat = torch.full((2, 3, 8, 8), 0.5)
    lattice = flat.clone()
    lattice[..., ::2, ::2] = 1.0
    logs: dict = {}

    class Reader:  # the critic's own loss is irrelevant here (weight 0); only the penalty is measured
        weight, tv_weight = 0.0, 1.0

        def __call__(self, images, ids):
            return images.sum() * 0

    assert float(Generator._critic_term(Reader(), flat, ids, logs)) == 0.0
    assert float(Generator._critic_term(Reader(), lattice, ids, logs)) > 0.4
    assert logs["tv"] > 0.4


def test_learned_prior_and_adversarial_term_train_and_round_trip(shapes, tmp_path):
    _, vocab, data = shapes
    dset = ImageCaptionDataset(data)
    fixed = collate([dset[i] for i in range(32)])
    torch.manual_seed(0)
    model = create_generator("vae-tiny", vocab, prior="learned", adv_weight=0.1).train()
    g_opt = torch.optim.Adam(model.generator_parameters(), lr=3e-3)
    d_opt = torch.optim.Adam(model.discriminator.parameters(), lr=2e-3, betas=(0.5, 0.999))

    def fixed_terms() -> tuple[float, float]:
        with torch.no_grad():
            logs = model(*fixed, step=10_000)[2]
        return logs["recon"], logs["kl"]

    recon0, _ = fixed_terms()
    d_before = model.discriminator.out.parametrizations.weight.original.detach().clone()
    d_losses = []
    for step, (ids, images) in _batches(data, 50):
        fake, loss, _, prior_fake = model(ids, images, step, return_prior=True)
        assert prior_fake.shape == fake.shape
        d_loss, g_fn = model.adversarial_losses(ids, images, torch.cat([fake, prior_fake]), torch.cat([ids, ids]))
        d_opt.zero_grad()
        d_loss.backward()
        d_opt.step()
        g_adv, adv_logs = g_fn()
        g_opt.zero_grad()
        (loss + model.config.adv_weight * g_adv).backward()
        g_opt.step()
        d_losses.append(adv_logs["d"])
    recon1, _ = fixed_terms()
    assert recon1 < 0.5 * recon0
    assert np.isfinite(d_losses).all()  # (that the hinge loss teaches the discriminator: the gan test)
    assert not torch.equal(d_before, model.discriminator.out.parametrizations.weight.original)
    # the prior has moved off N(0, I): its mean now depends on the sentence
    with torch.no_grad():
        mu, _ = model._prior(model.encode_text(fixed[0]))
    assert float(mu.abs().mean()) > 1e-3 and float((mu[0] - mu[1]).abs().sum()) > 0
    a = model.generate(PROMPTS, n=2, seed=3)
    model.save(tmp_path / "full")
    assert torch.equal(load_model(tmp_path / "full").generate(PROMPTS, n=2, seed=3), a)
    model.save(tmp_path / "small", full=False)  # drawing weights keep the prior net, drop the discriminator
    small = load_model(tmp_path / "small")
    assert not hasattr(small, "discriminator") or small.config.adv_weight > 0
    assert torch.equal(small.generate(PROMPTS, n=2, seed=3), a)


def test_init_from_adds_a_neutral_learned_prior_and_discriminator(shapes, tmp_path):
    from img2text2img.train.generator import train_generator

    ds, _, _ = shapes
    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "a"))
    start = load_model(tmp_path / "a" / "last")
    cfg = _tiny_config(tmp_path / "b", 3, lr=0.0)
    summary = train_generator("vae-tiny", str(ds.root), cfg, init_from=tmp_path / "a" / "last", prior="learned",
                              adv_weight=0.1)
    assert summary["steps"] == 3
    after = load_model(tmp_path / "b" / "last")
    assert after.config.prior == "learned" and after.config.adv_weight == 0.1
    # lr 0 and a zero-initialised prior: the extended model draws exactly what it started from
    # (BatchNorm running statistics move in training mode, so compare with those copied over)
    after.decoder.load_state_dict(start.decoder.state_dict())
    assert torch.equal(after.generate(PROMPTS, n=2, seed=5), start.generate(PROMPTS, n=2, seed=5))
    with pytest.raises(I2TError, match="vae options"):
        create_generator("pixel-tiny", Vocabulary.build(["a red circle"]), prior="learned")


def test_z_dim_and_beta_options_and_continued_runs_refuse_what_they_cannot_change(shapes, tmp_path):
    from img2text2img.train.generator import train_generator

    ds, _, _ = shapes

    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "a"), z_dim=3, beta=2.5)
    made = load_model(tmp_path / "a" / "last")
    assert made.config.z_dim == 3 and made.config.beta == 2.5
    # beta is a loss weight: a run started from another may change it; the code size would change the network
    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "b"), init_from=tmp_path / "a" / "last", beta=6.0)
    assert load_model(tmp_path / "b" / "last").config.beta == 6.0
    with pytest.raises(I2TError, match="--z-dim cannot change when a run starts from --init-from"):
        train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "c"), 
                        init_from=tmp_path / "a" / "last", z_dim=5)
    # resuming with the options the run was started with is fine; with others it is refused, not ignored
    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "a", 3, resume=True),
                    z_dim=3, beta=2.5)
    with pytest.raises(I2TError, match="--beta cannot change when a run resumes"):
        train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "a", resume=True), beta=1.0)
    # a pixel model has no code to size: one line, not a failure at the first training step
    with pytest.raises(I2TError, match="pixel generator has no latent code"):
        train_generator("pixel-tiny", str(ds.root), _tiny_config(tmp_path / "d"), z_dim=4)
    # nor a KL weight: refused rather than accepted and unused
    for preset in ("pixel-tiny", "gan-tiny"):
        with pytest.raises(I2TError, match="--beta weighs a vae's KL term"):
            train_generator(preset, str(ds.root), _tiny_config(tmp_path / "e"), beta=2.0)


def test_feature_loss_is_zero_on_the_real_image_and_trains_the_drawing(shapes, tmp_path):
    from img2text2img.models.encoders import create_encoder
    from img2text2img.train.generator import FeatureLoss, train_generator

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
    small = FeatureLoss(enc, weight=1.0, size=32)  # a smaller reading: still zero on the real image, still a signal
    assert small.size == 32 and float(small(real, real)) == 0.0 and float(small(blurred, real)) > 0

    dset = ImageCaptionDataset(data)
    fixed = collate([dset[i] for i in range(32)])
    model = create_generator("pixel-tiny", vocab).train()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_perceptual() -> float:
        with torch.no_grad():
            return model(*fixed, perceptual=loss)[2]["perceptual"]

    start = fixed_perceptual()
    for step, (ids, images) in _batches(data, 40):
        _, total, _ = model(ids, images, step, perceptual=loss)
        opt.zero_grad()
        total.backward()
        opt.step()
    assert fixed_perceptual() < 0.8 * start

    cfg = _tiny_config(tmp_path / "run")
    summary = train_generator("vae-tiny", str(ds.root), cfg, perceptual="small_cnn", perceptual_weight=0.5,
                              perceptual_size=48)
    assert summary["perceptual"] == "small_cnn" and summary["perceptual_weight"] == 0.5
    assert summary["perceptual_size"] == 48


@pytest.mark.parametrize("option, other_kind", [("z_dropout", "z_dropout is a vae option"),
                                                 ("sentence_dropout", "sentence_dropout is an option of a vae")])
def test_dropout_fractions_are_vae_options_below_one(shapes, option, other_kind):
    vocab = shapes[1]
    with pytest.raises(I2TError, match=other_kind):
        create_generator("pixel-tiny", vocab, **{option: 0.3})
    with pytest.raises(I2TError, match=rf"{option} must be in \[0, 1\)"):
        create_generator("vae-tiny", vocab, **{option: 1.0})


def test_z_dropout_draws_the_dropped_part_of_the_batch_from_the_prior_mean(shapes, tmp_path):
    """With z_dropout the pixel loss also trains the drawing at the prior's mean, so it cannot lean on the posterior."""
    ds, vocab, data = shapes
    _, (ids, images) = next(_batches(data, 1, bs=8))
    torch.manual_seed(0)
    for prior in ("standard", "learned"):
        model = create_generator("vae-tiny", vocab, prior=prior, z_dropout=0.999).train()
        if prior == "learned":  # a prior that is not N(0, I), so "the prior's mean" is not just zeros
            torch.nn.init.normal_(model.prior_net[2].weight, std=0.5)
        with torch.no_grad():
            fake, _, _ = model(ids, images)
            # noise 0 through the prior is its mean; train mode, so both see the same batch statistics
            at_mean = model.draw(ids, torch.zeros(ids.shape[0], model.config.z_dim))
        assert torch.allclose(fake, at_mean, atol=1e-6), prior
    # without it the reconstruction follows the image's code, not the prior's mean
    model = create_generator("vae-tiny", vocab).train()
    with torch.no_grad():
        fake, _, _ = model(ids, images)
        at_mean = model.draw(ids, torch.zeros(ids.shape[0], model.config.z_dim))
    assert not torch.allclose(fake, at_mean, atol=1e-4)
    # the option reaches the model from the trainer and survives a checkpoint
    from img2text2img.train.generator import train_generator

    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "a"), z_dropout=0.25)
    assert load_model(tmp_path / "a" / "last").config.z_dropout == 0.25
    # a loss weight like beta: a run started from another may change it, and the config still checks it
    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "b"), 
                    init_from=tmp_path / "a" / "last", z_dropout=0.5)
    assert load_model(tmp_path / "b" / "last").config.z_dropout == 0.5
    with pytest.raises(I2TError, match="z_dropout must be"):
        train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "c"), 
                        init_from=tmp_path / "a" / "last", z_dropout=1.5)


def test_sentence_dropout_trains_some_drawings_from_the_batch_mean_sentence(shapes, tmp_path):
    """Classifier-free training: a dropped row is drawn from the batch's mean sentence, so with (nearly) every row
    dropped the drawings no longer depend on which sentence went with which picture."""
    ds, vocab, data = shapes
    _, (ids, images) = next(_batches(data, 1, bs=8))
    for p, same in ((0.999, True), (0.0, False)):
        torch.manual_seed(0)
        model = create_generator("vae-tiny", vocab, prior="learned", sentence_dropout=p).train()
        with torch.no_grad():
            torch.manual_seed(1)
            fake, _, _ = model(ids, images)
            torch.manual_seed(1)
            shuffled, _, _ = model(ids.roll(1, dims=0), images)  # same sentences, other pictures
        assert torch.allclose(fake, shuffled, atol=1e-6) == same, p
    # the option reaches the model from the trainer, survives a checkpoint and may change with --init-from
    from img2text2img.train.generator import train_generator

    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "a"), sentence_dropout=0.2)
    assert load_model(tmp_path / "a" / "last").config.sentence_dropout == 0.2
    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "b"), init_from=tmp_path / "a" / "last",
                    sentence_dropout=0.0)
    assert load_model(tmp_path / "b" / "last").config.sentence_dropout == 0.0


def test_leaky_decoder_keeps_a_gradient_through_a_stage_that_relu_kills(shapes):
    """The failure `leak` exists for: when every FiLM shift of a stage is negative, ReLU blocks all gradient to the
    layers before it (the pixel model then draws flat grey for good); a leaky decoder still learns."""
    _, vocab, data = shapes
    _, (ids, images) = next(_batches(data, 1, bs=8))
    grads = {}
    for leak in (0.0, 0.2):
        torch.manual_seed(0)
        model = create_generator("pixel-tiny", vocab, leak=leak).train()
        with torch.no_grad():
            model.decoder.films[-1].bias[model.decoder.films[-1].bias.shape[0] // 2:] = -100.0  # every shift: dead
        _, loss, _ = model(ids, images)
        loss.backward()
        grads[leak] = model.decoder.ups[0].weight.grad.abs().sum().item()
    assert grads[0.0] == 0.0 and grads[0.2] > 0.0
    with pytest.raises(I2TError, match=r"leak must be in \[0, 1\)"):
        create_generator("pixel-tiny", vocab, leak=1.0)
    # the default (0) is the ReLU decoder every shipped model was trained with
    assert create_generator("pixel-tiny", vocab).config.leak == 0.0


def test_a_pixel_generator_gains_a_latent_code_and_draws_as_before(shapes, tmp_path):
    """pixel -> vae keeps every trained weight: until trained on, the VAE draws the pixel model's picture for any z."""
    from img2text2img.train.generator import train_generator

    ds, _, _ = shapes
    cfg = _tiny_config(tmp_path / "pix", 3)
    train_generator("pixel-tiny", str(ds.root), cfg, leak=0.2)
    pixel = load_model(tmp_path / "pix" / "last")
    vae = pixel.with_latent(5, prior="learned").eval()
    assert vae.config.kind == "vae" and vae.config.z_dim == 5 and vae.config.leak == 0.2
    # equal up to float rounding: the z columns are zero, but a wider matmul may sum in another order
    torch.testing.assert_close(vae.generate(PROMPTS, n=3, seed=1), pixel.generate(PROMPTS, n=3, seed=1),
                               rtol=0, atol=1e-5)
    with pytest.raises(I2TError, match="only a pixel generator can gain"):
        vae.with_latent(5)
    # through the trainer: --kind vae --init-from a pixel run; the new code is then trained (its KL warms up)
    cfg = _tiny_config(tmp_path / "vae", 3)
    train_generator("vae-tiny", str(ds.root), cfg, init_from=tmp_path / "pix" / "last", z_dim=4, prior="learned")
    made = load_model(tmp_path / "vae" / "last")
    assert made.config.kind == "vae" and made.config.z_dim == 4 and made.config.prior == "learned"
    assert made.config.kl_warmup == 10  # the vae-tiny preset's warm-up: this code starts untrained


def test_fit_palette_keeps_every_colour_of_the_shapes_set(shapes):
    """A palette generator can only draw colours its palette has: each of the set's exact colours must be in it,
    even the rare ones (a random or farthest-point k-means start merges yellow with orange)."""
    from img2text2img.data.shapes import BACKGROUNDS, COLOURS
    from img2text2img.models.generator import fit_palette

    _, _, data = shapes
    palette = fit_palette(data.images, 16) * 255
    assert palette.shape == (16, 3)
    present = {tuple(c) for c in data.images.permute(0, 2, 3, 1).reshape(-1, 3).unique(dim=0).tolist()}
    wanted = [c for c in [*COLOURS.values(), *BACKGROUNDS.values()] if c in present]
    assert len(wanted) >= 9
    for colour in wanted:
        assert float((palette - torch.tensor(colour, dtype=torch.float32)).norm(dim=1).min()) < 12, colour


def test_palette_generator_learns_draws_only_palette_colours_and_round_trips(shapes, tmp_path):
    from img2text2img.models.generator import fit_palette

    _, vocab, data = shapes
    dset = ImageCaptionDataset(data)
    fixed = collate([dset[i] for i in range(32)])
    torch.manual_seed(0)
    model = create_generator("vae-attn-tiny", vocab, output="palette", palette_size=16).train()
    model.palette.copy_(fit_palette(data.images, 16))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def fixed_recon() -> float:
        with torch.no_grad():
            return model(*fixed, step=10_000)[2]["recon"]

    start = fixed_recon()
    for step, (ids, images) in _batches(data, 50):
        fake, loss, _ = model(ids, images, step)
        assert fake.requires_grad  # straight-through: the critic / perceptual terms can steer the logits
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed_recon() < 0.5 * start
    fake = model(*fixed, step=10_000)[0]  # ... while what they judge is the hard picture a user gets
    assert torch.cdist(fake.detach().permute(0, 2, 3, 1).reshape(-1, 3), model.palette).min(1).values.max() < 1e-3
    a = model.generate(PROMPTS, n=2, seed=3)
    colours = a.permute(0, 2, 3, 1).reshape(-1, 3)
    assert torch.cdist(colours, model.palette).min(1).values.max() < 1e-3  # every pixel one palette colour
    assert torch.equal(a, model.generate(PROMPTS, n=2, seed=3))
    model.save(tmp_path / "ck")
    loaded = load_model(tmp_path / "ck")
    assert loaded.config.output == "palette" and torch.equal(loaded.palette, model.palette)
    assert torch.equal(loaded.generate(PROMPTS, n=2, seed=3), a)
    with pytest.raises(I2TError, match="palette"):
        create_generator("gan-tiny", vocab, output="palette")


def test_init_from_switches_an_rgb_generator_to_palette_output(shapes, tmp_path):
    """Only the output head is new: the decoder's other weights carry over, and the palette is fitted."""
    from img2text2img.train.generator import train_generator

    ds, _, _ = shapes
    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "a"))
    start = load_model(tmp_path / "a" / "last")
    cfg = _tiny_config(tmp_path / "b", lr=0.0)
    train_generator("vae-tiny", str(ds.root), cfg, init_from=tmp_path / "a" / "last", output="palette",
                    palette_size=12)
    after = load_model(tmp_path / "b" / "last")
    assert after.config.output == "palette" and after.palette.shape == (12, 3)
    assert after.decoder.to_rgb.weight.shape[0] == 12 * 4
    assert torch.equal(after.decoder.ups[0].weight, start.decoder.ups[0].weight)  # lr 0: kept as trained
    grey = torch.tensor([128, 128, 128]) / 255  # a shapes background: must be one of the fitted colours
    assert float((after.palette - grey).norm(dim=1).min()) < 0.03


def test_init_from_widens_the_decoder_keeping_what_still_fits(shapes, tmp_path):
    """--channels / --refine on a trained run: the text encoder, image encoder and the decoder stages whose shapes
    are unchanged carry over; the widened stages and the new refining block start afresh."""
    from img2text2img.train.generator import train_generator

    ds, _, _ = shapes
    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "a"))
    start = load_model(tmp_path / "a" / "last")
    wider = (32, 32, 32, 16)  # vae-tiny's (32, 32, 16, 8) widened at 16 and 32 px
    train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "b", lr=0.0), init_from=tmp_path / "a" / "last",
                    channels=wider, refine=1)
    after = load_model(tmp_path / "b" / "last")
    assert after.config.channels == wider and after.config.refine == 1 and len(after.decoder.refiners) == 1
    assert torch.equal(after.decoder.ups[0].weight, start.decoder.ups[0].weight)  # 32 -> 32 at 8 px: kept
    assert torch.equal(after.text.lstm.weight_ih_l0, start.text.lstm.weight_ih_l0)
    assert torch.equal(after.image_encoder[0].weight, start.image_encoder[0].weight)
    assert after.decoder.ups[1].weight.shape != start.decoder.ups[1].weight.shape  # 32 -> 16 became 32 -> 32
    with pytest.raises(I2TError, match="cannot change"):  # a change outside the decoder still has to fit
        train_generator("vae-tiny", str(ds.root), _tiny_config(tmp_path / "c"), init_from=tmp_path / "a" / "last",
                        channels=wider, embed_dim=8)


def test_shift_tolerant_loss_forgives_a_small_shift_only(shapes):
    """A drawing that is the real picture moved by 2 px costs what an exact drawing costs under shift_tolerance 2,
    and more without it; a 4 px move is still paid for."""
    from dataclasses import replace

    import torch.nn.functional as F

    from img2text2img.models.generator import fit_palette

    _, vocab, data = shapes
    real = collate([ImageCaptionDataset(data)[i] for i in range(4)])[1]
    model = create_generator("vae-tiny", vocab, output="palette", palette_size=12)
    model.palette.copy_(fit_palette(real, 12))

    def logits_of(images):  # confident logits for each pixel's nearest palette colour
        return F.one_hot(model.palette_targets(images), 12).permute(0, 3, 1, 2).float() * 20

    def loss(tolerance, drawn):
        model.config = replace(model.config, shift_tolerance=tolerance)
        return float(model._recon(logits_of(drawn), real))

    moved2 = torch.roll(real, shifts=(2, -1), dims=(2, 3))
    moved4 = torch.roll(real, shifts=(4, 0), dims=(2, 3))
    exact = loss(0, real)
    assert loss(2, real) == pytest.approx(exact, abs=1e-6)
    assert loss(0, moved2) > exact + 0.1
    assert loss(2, moved2) < exact + 0.02  # only the wrapped-around rows differ from a replicated edge
    assert loss(2, moved4) > exact + 0.1


def test_layers_decoder_draws_flat_layers_and_starts_from_a_conv_run(shapes, tmp_path):
    """A layers generator paints each picture in at most layers + 1 colours (background and one per layer), its
    training drawing passes the soft composite's gradient to the masks, and --init-from a conv run keeps the text
    encoder and latent code while the decoder starts afresh."""
    from img2text2img.models.generator import Layers
    from img2text2img.train.generator import train_generator

    ds, vocab, data = shapes
    torch.manual_seed(0)
    model = create_generator("vae-layers-tiny", vocab)
    drawn = model.generate(PROMPTS, n=2, seed=3)
    for picture in drawn:
        assert len(picture.flatten(1).T.unique(dim=0)) <= model.config.layers + 1
    ids, _ = next(_batches(data, 1, bs=4))[1]
    out = model.train()._decode(ids, torch.zeros(4, model.config.z_dim))
    assert isinstance(out, Layers) and out.logits.shape == (4, model.config.layers + 1, 64, 64)
    model._image(out).sum().backward()  # straight-through: the hard picture's gradient reaches the mask logits
    assert model.decoder.mask.to_rgb.weight.grad.abs().sum() > 0
    with pytest.raises(I2TError, match="latent code"):
        model.without_latent()
    ordinal = create_generator("vae-layers-tiny", vocab, ordinal=True).train()
    ordinal._image(ordinal._decode(ids, torch.zeros(4, 8))).sum().backward()
    assert ordinal.decoder.objectness.weight.grad.abs().sum() > 0  # the "names a thing" score learns from the picture
    train_generator("vae-attn-tiny", str(ds.root), _tiny_config(tmp_path / "a"))
    start = load_model(tmp_path / "a" / "last")
    train_generator("vae-attn-tiny", str(ds.root), _tiny_config(tmp_path / "b", lr=0.0), init_from=tmp_path / "a" / "last",
                    decoder="layers")
    after = load_model(tmp_path / "b" / "last")
    assert after.config.decoder == "layers" and after.config.word_attention == 0
    assert torch.equal(after.text.lstm.weight_ih_l0, start.text.lstm.weight_ih_l0)
    assert torch.equal(after.posterior.weight, start.posterior.weight)
    # a shipped (drawing-only) conv checkpoint may start a layers run: text encoder and prior kept, the image
    # encoder new, its KL weight warmed up again; the same checkpoint with its decoder kept is refused
    start.save(tmp_path / "shipped", full=False)
    with pytest.raises(I2TError, match="drawing weights only"):
        train_generator("vae-attn-tiny", str(ds.root), _tiny_config(tmp_path / "c"), init_from=tmp_path / "shipped")
    train_generator("vae-attn-tiny", str(ds.root), _tiny_config(tmp_path / "d", lr=0.0), init_from=tmp_path / "shipped",
                    decoder="layers")
    fresh = load_model(tmp_path / "d" / "last")
    assert fresh.config.decoder == "layers" and fresh.config.kl_warmup == generator_config("vae-attn-tiny").kl_warmup
    assert torch.equal(fresh.text.lstm.weight_ih_l0, start.text.lstm.weight_ih_l0)
    assert not torch.equal(fresh.posterior.weight, start.posterior.weight)


def test_sprites_are_fitted_shapes_placed_where_the_conv_mask_is(shapes, tmp_path):
    """fit_sprites cuts the shapes out of the training pictures: from squares and circles it makes one template of
    each (a square's corner is inside, a circle's is not); a sprite is drawn at its conv mask's centroid; a sprites
    generator trains (loss falls), keeps its fitted templates, and draws flat layers."""
    from img2text2img.data.shapes import draw_caption
    from img2text2img.models.generator import SpriteMasks, fit_sprites
    from img2text2img.train.generator import train_generator

    pics = [draw_caption(f"a {size} {colour} {shape} in the {place}", seed=i)
            for i, (size, colour, shape, place) in enumerate(
                (size, colour, shape, place) for size in ("large", "small") for colour in ("red", "blue")
                for shape in ("square", "circle") for place in ("center", "top left"))]
    images = torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1) for p in pics])
    templates = torch.sigmoid(fit_sprites(images, 2))
    corner = templates[:, 23, 23]  # ~0.47 of the template's half-side along both axes
    assert sorted((corner > 0.5).tolist()) == [False, True]  # one square, one circle
    assert (templates[:, 16, 16] > 0.5).all()  # both are filled in the middle
    sprite = SpriteMasks(4, 64, templates=2).eval()
    sprite.templates.copy_(fit_sprites(images, 2))
    placing = torch.full((1, 1, 64, 64), -9.0)
    placing[..., 40:56, 4:20] = 9.0  # the conv mask: a 16 px square, bottom left
    drawn = sprite(torch.zeros(1, 4), placing)[0, 0] > 0
    ys, xs = drawn.nonzero(as_tuple=True)
    assert abs(float(ys.float().mean()) - 47.5) < 1.5 and abs(float(xs.float().mean()) - 11.5) < 1.5

    with pytest.raises(I2TError, match="ordinal layers decoder"):
        generator_config("vae-layers", masks="sprites")
    with pytest.raises(I2TError, match="masks must be conv or sprites"):
        generator_config("vae-sprites", masks="stamps")
    ds, vocab, data = shapes
    summary = train_generator("vae-sprites-tiny", str(ds.root), _tiny_config(tmp_path / "s", 40))
    assert summary["steps"] == 40
    model = load_model(tmp_path / "s" / "last")
    fitted = fit_sprites(load_image_captions(ds, "train", model.vocab).images, 8, seed=0)
    assert torch.equal(model.decoder.sprite.templates, fitted)  # held, not trained
    for picture in model.generate(PROMPTS, n=2, seed=3):
        assert len(picture.flatten(1).T.unique(dim=0)) <= model.config.layers + 1
    torch.manual_seed(0)
    fresh = create_generator("vae-sprites-tiny", vocab).train()
    fresh.decoder.sprite.templates.copy_(fitted)
    fixed = collate([ImageCaptionDataset(data)[i] for i in range(32)])
    with torch.no_grad():
        start = fresh(*fixed, step=10_000)[2]["recon"]
    opt = torch.optim.Adam(fresh.parameters(), lr=3e-3)
    for step, (ids, pictures) in _batches(data, 50):
        _, loss, _ = fresh(ids, pictures, step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert fresh(*fixed, step=10_000)[2]["recon"] < 0.6 * start


def test_count_term_teaches_how_many_things_a_prompt_names(shapes):
    """count_shapes counts the separate shapes of a picture; with count_weight the loss holds the ordinal layers'
    count term (the count against the picture's, and each word's score pushed to 0 or 1), whose gradient reaches the
    objectness scores; the weight is refused on a decoder without them."""
    from img2text2img.data.shapes import draw_caption
    from img2text2img.models.generator import count_shapes

    pics = [draw_caption(t, seed=1) for t in ("a large red circle in the center",
                                              "a small blue star to the left of a small green square",
                                              "a small red cross , a small blue circle and a small yellow star")]
    images = torch.stack([torch.from_numpy(np.array(p)).permute(2, 0, 1) for p in pics]).float() / 255
    assert count_shapes(images).tolist() == [1, 2, 3]
    with pytest.raises(I2TError, match="count_weight"):
        generator_config("vae-layers-tiny", count_weight=0.1)
    _, vocab, data = shapes
    torch.manual_seed(0)
    model = create_generator("vae-sprites-tiny", vocab, count_weight=0.5).train()
    ids, pictures = next(_batches(data, 1, bs=8))[1]
    _, loss, logs = model(ids, pictures, step=100)
    assert logs["count"] > 0
    loss.backward()
    assert model.decoder.objectness.weight.grad.abs().sum() > 0


def test_layer_window_keeps_a_layer_to_its_strongest_place():
    """A layer whose mask says 'here' strongly and 'there' weakly keeps 'here' and loses 'there'; the hard drawing
    of a one-blob layer is untouched."""
    from img2text2img.models.generator import LayeredDecoder

    dec = LayeredDecoder(8, 8, (8, 8, 8, 8), layers=1, window=0.2)
    masks = torch.full((1, 1, 64, 64), -5.0)
    masks[..., 8:20, 8:20] = 8.0  # the shape, top left
    masks[..., 44:56, 44:56] = 3.0  # a fainter copy, bottom right
    kept = masks - dec._outside_window(masks)
    assert (kept[..., 8:20, 8:20] > 0).all()
    assert (kept[..., 44:56, 44:56] < 0).all()
    single = torch.full((1, 1, 64, 64), -5.0)
    single[..., 26:38, 26:38] = 8.0
    assert torch.equal(single - dec._outside_window(single) > 0, single > 0)


def test_guidance_stretches_the_sentence_from_the_training_mean_and_is_saved(shapes, tmp_path):
    from img2text2img.cli import main
    from img2text2img.models.generator import load_generator
    from img2text2img.train.generator import fit_sentence_mean_from, train_generator

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
        s = gen.text(ids)
        want = gen._image(gen.decoder(torch.cat([mean + 2.0 * (s - mean), gen._from_noise(mean + 2.0 * (s - mean), z)], 1)))
        assert torch.equal(gen.draw(ids, z, guidance=2.0), want)  # mean + g * (s - mean), for decoder and prior alike
    plain = gen.generate(PROMPTS, n=2, seed=0)
    assert torch.equal(gen.generate(PROMPTS, n=2, seed=0, guidance=1.0), plain)  # 1 = the model as trained
    louder = gen.generate(PROMPTS, n=2, seed=0, guidance=2.0)
    assert not torch.equal(louder, plain)  # (after two steps the drawing barely reads the sentence yet)

    gen.guided(2.0).save(tmp_path / "guided", full=False)
    again = load_generator(tmp_path / "guided")
    assert again.config.guidance == 2.0 and torch.equal(again.generate(PROMPTS, n=2, seed=0), louder)
    from img2text2img.models.generator import to_pil

    as_trained = generate_images(PROMPTS, model=again, n=2, seed=0, guidance=1.0)  # the library's face of --guidance
    assert [np.asarray(a).tolist() for a in as_trained] == [np.asarray(a).tolist() for a in to_pil(plain)]
    assert again.config.guidance == 2.0  # the caller's model keeps its own setting

    fresh = create_generator("vae-tiny", gen.vocab)  # never trained, never fitted: no mean to push away from
    with pytest.raises(I2TError, match="mean sentence"):
        fresh.guided(2.0)
    assert torch.equal(fresh.guided(1.0).generate(PROMPTS, seed=1), fresh.generate(PROMPTS, seed=1))
    with pytest.raises(I2TError, match="guidance must be"):
        generator_config("vae-tiny", vocab_size=len(gen.vocab), guidance=-1.0)

    out = tmp_path / "g.png"
    assert main(["generate", "a red circle", "--model", str(tmp_path / "run"), "--guidance", "2", "-o", str(out)]) == 0
    fresh.save(tmp_path / "fresh")
    assert main(["generate", "a red circle", "--model", str(tmp_path / "fresh"), "--guidance", "2",
                 "-o", str(tmp_path / "f.png")]) == 2 and not (tmp_path / "f.png").exists()

    rt = {}
    for name, extra in (("plain", []), ("loud", ["--guidance", "3"])):
        assert main(["roundtrip-eval", "--data", str(ds.root), "--limit", "4", "--encoder", "none", "--captioner",
                     str(SHIPPED_SHAPES_CAPTIONER), "--generator", str(tmp_path / "run"), "--out", str(tmp_path / name),
                     *extra]) == 0
        rt[name] = json.loads((tmp_path / name / "roundtrip.json").read_text())["scores"]
    assert rt["loud"]["guidance"] == 3.0 and "guidance" not in rt["plain"]
    # the built-in shapes generator writes scenes: it has no guidance, and says so
    assert main(["roundtrip-eval", "--limit", "2", "--encoder", "none", "--guidance", "2",
                 "--out", str(tmp_path / "scene")]) == 2
