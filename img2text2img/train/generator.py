"""Training the pixel / vae / gan generators with the shared engine (`engine.fit`), as a `GeneratorRecipe` says.

The recipe holds everything about how a model is taught (preset, steps, loss weights, the perceptual term); the
network it builds is the preset's `GeneratorConfig`, and the scene kind is trained by `train/scene.py`.
"""
from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from img2text2img.checkpoint import load_checkpoint
from img2text2img.config import check_number
from img2text2img.data import load_dataset
from img2text2img.errors import I2TError
from img2text2img.metrics.image import encoder_features, frechet_feature_distance, paired_cosine_similarity
from img2text2img.models import load_model, resolve_checkpoint_dir
from img2text2img.models.encoders import ENCODERS, create_encoder
from img2text2img.models.gan import latent_gan_presets
from img2text2img.models.generator import (
    Generator,
    GeneratorLoss,
    PromptWarning,
    generator_config,
    load_config,
    load_generator,
)
from img2text2img.models.generator.api import generator_kind, with_steps
from img2text2img.train.engine import StepContext, TrainConfig, fit, seed_everything
from img2text2img.train.engine import train_config as engine_train_config
from img2text2img.train.gan import RAW_PREFIX, DiversityWatch, DrawingTask, WeightEMA, adversarial_step
from img2text2img.train.generator_data import (
    SAMPLE_PROMPTS,
    ImageCaptionDataset,
    ImageCaptions,
    collate,
    generator_augment,
    load_image_captions,
    sample_prompts,
)
from img2text2img.train.generator_recipe import GeneratorRecipe, check_recipe
from img2text2img.train.latent_gan import train_latent_gan
from img2text2img.train.scene import train_scene_generator
from img2text2img.vocab import Vocabulary, load_word_vectors, pad_batch

# The mean sentence that guidance pushes away from is that of the first caption of each of the first this many
# training pictures: enough for a stable mean, cheap to refit at every checkpoint.
MEAN_SENTENCE_PICTURES = 2000

__all__ = [
    "SAMPLE_PROMPTS",
    "FeatureLoss",
    "GeneratorRecipe",
    "GeneratorTask",
    "ImageCaptionDataset",
    "ImageCaptions",
    "collate",
    "evaluate_generator",
    "feature_loss",
    "fit_sentence_mean_from",
    "guide",
    "load_image_captions",
    "sample_prompts",
    "train_generator",
]


def train_config(recipe: GeneratorRecipe, out: str | Path, **engine) -> TrainConfig:
    """The engine's settings for `recipe` (`engine`: resume, force, device, precision, progress, ...)."""
    return engine_train_config(recipe, out=str(out), max_steps=recipe.steps, warmup_steps=min(50, recipe.steps // 10),
                               log_every=25, **engine)


class FeatureLoss(torch.nn.Module):
    """Perceptual term: how far a frozen encoder's activations of the drawing are from those of the real image.

    A blob and a star cost about the same in pixels; a network that has learned to tell them apart sees the
    difference. Each block's output is unit-normalised over channels (as LPIPS does, so no layer dominates by
    scale) and the squared distance is averaged over positions and blocks. Frozen, in eval mode whatever the
    training loop does, never saved with the generator. `size`: the side drawings are resized to first."""

    def __init__(self, encoder, weight: float = 1.0, blocks: int | None = None, size: int | None = None):
        super().__init__()
        pre = encoder.preprocess
        self.size = size or pre.image_size
        self.register_buffer("mean", torch.tensor(pre.mean).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(pre.std).view(1, 3, 1, 1))
        self.weight = float(weight)
        self.encoder = encoder.eval().requires_grad_(False)
        self.blocks = encoder.blocks[:blocks] if blocks else encoder.blocks

    def train(self, mode: bool = True):
        return super().train(False)

    def encoder_input(self, images: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] in [0, 1] -> the encoder's input size and normalisation (differentiable)."""
        if images.shape[-1] != self.size:
            images = torch.nn.functional.interpolate(images, size=(self.size, self.size), mode="bilinear",
                                                     align_corners=False)
        return (images - self.mean) / self.std

    def forward(self, drawn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        acts: list[torch.Tensor] = []
        hooks = [b.register_forward_hook(lambda _m, _i, out: acts.append(out)) for b in self.blocks]
        try:
            self.encoder.feature_map(self.encoder_input(torch.cat([drawn, real])))
        finally:
            for h in hooks:
                h.remove()
        n = drawn.shape[0]
        total = drawn.new_zeros(())
        for a in acts:
            a = a / (a.pow(2).sum(1, keepdim=True).sqrt() + 1e-6)
            total = total + (a[:n] - a[n:].detach()).pow(2).sum(1).mean()
        return total / max(len(acts), 1)


def feature_loss(source: str | Path, weight: float = 1.0, size: int | None = None) -> FeatureLoss:
    """A `FeatureLoss` on an encoder by name (with its pretrained weights) or on a captioner checkpoint's encoder."""
    if str(source) in ENCODERS.names():
        return FeatureLoss(create_encoder(str(source), pretrained=True), weight, size=size)
    return FeatureLoss(load_model(source, kind="captioner").ensure_encoder(), weight, size=size)


class GeneratorTask(DrawingTask):
    """pixel / vae: one optimizer on `GeneratorLoss`; gan: alternating discriminator and generator steps, the
    discriminator at its own learning rate `d_lr`, an `ema` of the generator's weights that samples, checkpoints
    and validation use, and an optional `watch` (`gan.DiversityWatch`) at each checkpoint."""

    kind = "generator"
    main_metric = None  # a generator's quality is judged from samples and the round trip, not one val number

    def __init__(self, model: Generator, train: ImageCaptions, loss: GeneratorLoss, val: ImageCaptions | None = None,
                 seed: int = 0, augment=False, prompts: list[str] | None = None, d_lr: float | None = None,
                 ema: float = 0.0, watch: DiversityWatch | None = None):
        self.model, self.vocab, self.objective = model, model.vocab, loss
        gan = model.config.kind == "gan"
        self.d_lr, self.watch = d_lr, watch if gan else None
        self.ema = WeightEMA(model, ema) if gan and ema > 0 else None
        self.diversity: dict[str, float] = {}
        self.train, self.val, self.seed, self.augment = train, val, seed, augment
        self.prompts = prompts or SAMPLE_PROMPTS["shapes"]
        self.mean_ids = pad_batch([c[0] for c in train.captions[:MEAN_SENTENCE_PICTURES]])

    def train_dataset(self) -> Dataset:
        return ImageCaptionDataset(self.train, self.seed, self.augment)

    def collate(self, items: list):
        return collate(items)

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        m = self.model
        if m.config.kind == "gan":  # DCGAN practice: beta1 = 0.5 for both players
            return {"gen": torch.optim.Adam(m.generator_parameters(), lr=cfg.lr, betas=(0.5, 0.999)),
                    "disc": torch.optim.Adam(m.discriminator.parameters(), lr=self.d_lr or cfg.lr, betas=(0.5, 0.999))}
        return {"main": torch.optim.AdamW(m.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)}

    def loss(self, model, batch):
        ids, images = batch
        _, loss, logs = self.objective(model, ids, images)
        return loss, logs

    def training_step(self, batch, step: int, ctx: StepContext) -> dict[str, float]:
        ids, images = batch
        m = getattr(ctx.model, "module", ctx.model)
        if self.objective.perceptual is not None:
            self.objective.perceptual.to(ids.device)
        if m.config.kind != "gan":
            _, loss, logs = self.objective(ctx.model, ids, images, step)
            ctx.backward_step(loss, "main")
            return {"loss": float(loss.detach()), **logs}
        return adversarial_step(m, ids, images, self.objective, self.ema, self.diversity, ctx, step)

    def evaluate(self, model) -> dict[str, float]:
        """Mean pixel MSE on (up to 256) validation images, drawing from z = 0: a cheap trend line, nothing more."""
        if self.val is None:
            return {}
        n = min(256, len(self.val.captions))
        ids = pad_batch([c[0] for c in self.val.captions[:n]])
        dev = next(model.parameters()).device
        with self.drawing():  # (model is self.model, maybe on another device)
            fake = model(ids.to(dev)).fake
        real = self.val.images[:n].float().to(dev) / 255.0
        return {"val_mse": float(((fake - real) ** 2).mean())}


def build_model(recipe: GeneratorRecipe, ds, cfg: TrainConfig, init_from: str | Path | None) -> tuple[Generator, bool]:
    """The model a run trains: resumed from out/last, started from `init_from`'s weights, or fresh from the preset.
    Also says whether its latent code is already trained (then the KL weight needs no warm-up)."""
    last = Path(cfg.out) / "last"
    network = {k: v for k, v in (("z_dim", recipe.z_dim), ("prior", recipe.prior)) if v not in (None, "standard")}
    if cfg.resume and (last / "config.json").exists():
        ck = load_checkpoint(last, kind="generator")
        model = Generator(load_config(ck.config, {})[0], vocab=ck.vocab)
        changed = sorted(k for k, v in network.items() if getattr(model.config, k) != v)
        if changed:
            raise I2TError(f"{', '.join('--' + k.replace('_', '-') for k in changed)} cannot change when a run "
                           "resumes (its saved config is kept)")
        return model, True
    if init_from is not None:
        ck = load_checkpoint(resolve_checkpoint_dir(init_from), kind="generator")
        parent = Generator.from_checkpoint(ck)
        wanted = generator_config(recipe.kind).kind
        if parent.config.kind != wanted:
            raise I2TError(f"{init_from} is a {parent.config.kind} generator, not {wanted}")
        if recipe.z_dim is not None and recipe.z_dim != parent.config.z_dim:
            raise I2TError("--z-dim cannot change when a run starts from --init-from (the network is kept)")
        if parent.config.prior == "learned" and recipe.prior != "learned":
            raise I2TError(f"{init_from} has a learned prior; pass --prior learned to keep it")
        trained_code = any(k.startswith("posterior.") for k in ck.state_dict)
        if parent.config.kind == "vae" and not trained_code:
            raise I2TError(f"{init_from} holds drawing weights only; start from a training run's last/ checkpoint")
        model = Generator(dataclasses.replace(parent.config, prior=recipe.prior if wanted == "vae" else "standard"),
                          vocab=parent.vocab)
        # a learned prior added here starts as N(0, I) (zero last layer), so the model draws what it drew
        # an EMA-trained parent starts the run from its averaged weights (its raw ones are left)
        state = {k: v for k, v in ck.state_dict.items() if not k.startswith(RAW_PREFIX)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        missing = [k for k in missing if not k.startswith("prior_net.") and k != "sentence_mean"]
        if missing or unexpected:
            raise I2TError(f"{init_from}: weights do not fit (missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.train(), trained_code
    vocab = Vocabulary.build(ds.all_captions("train"), min_count=1 if ds.name == "shapes" else 5, max_size=8000)
    overrides = {**network, **({"embed_dim": 50} if recipe.glove else {})}
    model = Generator(generator_config(recipe.kind, vocab_size=len(vocab), **overrides), vocab=vocab)
    if recipe.glove:
        model.text.embed.init_from_vectors(vocab, load_word_vectors())
    return model, False


def train_generator(recipe: GeneratorRecipe | str, data: str, cfg: TrainConfig, *, data_dir: str | Path | None = None,
                    init_from: str | Path | None = None) -> dict:
    """Build vocabulary, model and data for `data` (shapes[:N], flickr8k, or a folder) and run `fit` with `cfg`
    (`train_config` makes it from the recipe). A preset name stands for its default recipe.

    On `cfg.resume` the vocabulary and network come from `out/last`; `init_from` starts a fresh run from another
    run's weights (same kind; a vae may gain a learned prior). The summary's `parents` lists `init_from`."""
    recipe = GeneratorRecipe(kind=recipe) if isinstance(recipe, str) else recipe
    if recipe.kind in latent_gan_presets():  # its own trainer: it feeds on a diffusion autoencoder's latents
        return train_latent_gan(recipe, data, cfg, data_dir=data_dir, init_from=init_from)
    kind = generator_config(recipe.kind).kind
    check_recipe(recipe, kind)
    if kind == "scene":
        if init_from is not None:
            raise I2TError("a scene generator cannot start from --init-from (its reader is fitted to the pictures)")
        summary = train_scene_generator(recipe.kind, data, cfg, data_dir=data_dir, limit=recipe.limit,
                                        fit_pictures=recipe.fit_pictures)
        return {**summary, "recipe": dataclasses.asdict(recipe), "parents": []}
    seed_everything(cfg.seed)  # the model's random init must depend on the seed alone (reproducible runs)
    ds = load_dataset(data, data_dir)
    model, trained_code = build_model(recipe, ds, cfg, init_from)
    size, max_tokens = model.config.image_size, model.config.max_tokens
    train = load_image_captions(ds, "train", model.vocab, size, recipe.limit, max_tokens)
    val = load_image_captions(ds, "val", model.vocab, size, 256, max_tokens) if "val" in ds.splits else None
    feats = None
    if recipe.perceptual is not None:
        feats = feature_loss(recipe.perceptual, recipe.perceptual_weight, recipe.perceptual_size)
    gan = kind == "gan"
    objective = GeneratorLoss(recipe.recon_loss, recipe.beta, 0 if trained_code else recipe.kl_warmup,
                              recipe.recon_weight, feats, recipe.diff_augment if gan else "",
                              recipe.gp_weight if gan else 0.0, recipe.mode_seeking if gan else 0.0)
    prompts = sample_prompts(data, ds)
    watch = None
    if gan and (recipe.min_diversity > 0 or recipe.diversity_encoder != "none"):
        texts = train.texts or [[model.vocab.decode(c) for c in caps] for caps in train.captions]
        watch = DiversityWatch(prompts[0], train.images, texts, recipe.diversity_encoder, recipe.min_diversity,
                               check_from=(cfg.max_steps or recipe.steps) // 10)
    task = GeneratorTask(model, train, objective, val, seed=cfg.seed, augment=generator_augment(recipe.augment, ds),
                         prompts=prompts, d_lr=recipe.d_lr, ema=recipe.ema if gan else 0.0, watch=watch)
    summary = fit(task, cfg)
    summary.update({"recipe": dataclasses.asdict(recipe), "parents": [str(init_from)] if init_from else [],
                    "data": ds.provenance()})
    return summary


def fit_sentence_mean_from(model: Generator, data: str, data_dir: str | Path | None = None,
                           n: int = MEAN_SENTENCE_PICTURES) -> torch.Tensor:
    """Fit `model.sentence_mean` to the first caption of the first `n` training pictures of `data`, as a training
    run does at each checkpoint; for a generator saved before checkpoints carried one."""
    ds = load_dataset(data, data_dir)
    firsts = [ds.captions[im][0] for im in list(ds.split("train"))[:n] if ds.captions.get(im)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptWarning)
        return model.fit_sentence_mean(model.prompt_ids(firsts))


def guide(model, guidance: float, data: str, data_dir: str | Path | None = None):
    """`model.guided(guidance)`; a generator saved before checkpoints carried a mean sentence first gets one from
    `data`'s training captions (`fit_sentence_mean_from`)."""
    if isinstance(model, Generator) and guidance != 1.0 and not bool(model.sentence_mean.any()):
        fit_sentence_mean_from(model, data, data_dir)
    return model.guided(guidance)  # (a scene generator: says it has no guidance)


def evaluate_generator(model: Generator | str | Path | None, data: str = "shapes:5000", split: str = "test",
                       n: int = 500, encoder: str = "mobilenet_v2", size: int | None = 128, seed: int = 0,
                       data_dir: str | Path | None = None, temperature: float | None = None, batch_size: int = 64,
                       guidance: float | None = None, steps: int | None = None) -> dict:
    """Draw one image per test image (from its first caption) and compare the two sets in `encoder` features
    (`steps`: a diffusion generator's denoising steps, None = its own).

    Returns the Fréchet feature distance (lower = closer to the real images; NOT the standard FID), the mean cosine
    similarity of each drawn image to its own real image and to a random other real image (the gap says whether
    pictures follow their sentences), the pixel MSE to the real image, and the drawing speed."""
    check_number("n", n, 2, None, integer=True)
    if size is not None:
        check_number("size", size, 16, 1024, integer=True)
    gen = load_generator(model)
    if steps is not None:
        gen = with_steps(gen, steps)
    if guidance is not None:
        guide(gen, guidance, data, data_dir)
    ds = load_dataset(data, data_dir)
    real = load_image_captions(ds, split, gen.vocab, gen.config.image_size, n, gen.config.max_tokens)
    ids = pad_batch([c[0] for c in real.captions])
    t0 = time.time()
    if generator_kind(gen) == "diffusion":  # draws a whole batch at once: chunked here, seeded per chunk
        fake = torch.cat([gen.generate(ids[i:i + batch_size], n=1, seed=seed + i, temperature=temperature)
                          for i in range(0, len(ids), batch_size)])
    else:
        fake = gen.generate(ids, n=1, seed=seed, temperature=temperature, batch_size=batch_size)
    draw_s = time.time() - t0
    real_f = real.images.float() / 255.0
    enc = create_encoder(encoder, pretrained=True)
    fr = encoder_features(real_f, enc, size=size)
    ff = encoder_features(fake, enc, size=size)
    perm = torch.randperm(len(fr), generator=torch.Generator().manual_seed(seed))
    return {
        "frechet_feature_distance": round(frechet_feature_distance(ff, fr), 3),
        "cosine_to_own_image": round(float(paired_cosine_similarity(ff, fr).mean()), 4),
        "cosine_to_other_image": round(float(paired_cosine_similarity(ff, fr[perm]).mean()), 4),
        "pixel_mse": round(float(((fake - real_f) ** 2).mean()), 5),
        "images": len(fr), "encoder": encoder, "encoder_input": size or enc.preprocess.image_size,
        "data": data, "split": split, "seed": seed,
        "temperature": getattr(gen.settings, "temperature", None) if temperature is None else temperature,
        "guidance": gen.settings.guidance, "kind": generator_kind(gen),
        "sampler_steps": getattr(gen.settings, "steps", None),
        "draw_images_per_s": round(len(fr) / max(draw_s, 1e-9), 1),
    }
