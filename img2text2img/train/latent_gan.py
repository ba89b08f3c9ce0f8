"""Training the latent GAN (`models.gan`) with the shared engine: the frozen autoencoder of a diffusion run
encodes every training photo (and its mirror image) once, and the GAN learns to draw such latents from captions.

With the latents cached, a discriminator step costs a few small convolutions instead of a pass over 64x64 pictures,
which is what makes a GAN trainable on photos on a CPU. The GAN parts are those of `--kind gan` (hinge loss,
matching-aware discriminator with its gradient penalty, DiffAugment, two time-scale learning rates, mode seeking,
the weights' moving average and the collapse watch); only the data and the network differ.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch.utils.data import Dataset

from img2text2img.checkpoint import checkpoint_exists, load_checkpoint
from img2text2img.data import load_dataset
from img2text2img.errors import I2TError
from img2text2img.models import resolve_checkpoint_dir
from img2text2img.models.gan import LatentGAN, latent_gan_config
from img2text2img.models.generator import GeneratorLoss
from img2text2img.models.generator.augment import parse_policy
from img2text2img.train.diffusion import SIDE_WORDS, LatentCaptions, collate_latents, encode_pictures
from img2text2img.train.engine import StepContext, TrainConfig, fit, pick_device, seed_everything
from img2text2img.train.gan import DiversityWatch, DrawingTask, WeightEMA, adversarial_step
from img2text2img.train.generator_data import load_image_captions, sample_prompts
from img2text2img.train.generator_recipe import GeneratorRecipe, check_recipe
from img2text2img.vocab import Vocabulary, pad_batch

# the mean sentence guidance pushes away from: first captions of this many training pictures (as train/generator.py)
MEAN_SENTENCE_PICTURES = 2000
# DF-GAN's Adam betas for both players (no momentum: the game moves too fast for it)
BETAS = (0.0, 0.9)


class LatentGANTask(DrawingTask):
    """Alternating discriminator and generator steps on cached latents; an `ema` of the generator's weights draws
    the samples, checkpoints and the `watch`'s diversity."""

    kind = "generator"

    def __init__(self, model: LatentGAN, latents: torch.Tensor, captions: list[list[list[int]]],
                 objective: GeneratorLoss, prompts: list[str], seed: int = 0, d_lr: float | None = None,
                 ema: float = 0.0, watch: DiversityWatch | None = None):
        self.model, self.vocab, self.objective, self.prompts = model, model.vocab, objective, prompts
        self.latents, self.captions, self.seed, self.d_lr, self.watch = latents, captions, seed, d_lr, watch
        self.ema = WeightEMA(model, ema) if ema > 0 else None
        self.side_ids = {model.vocab.id(w) for w in SIDE_WORDS if w in model.vocab}
        self.mean_ids = pad_batch([c[0] for c in captions[:MEAN_SENTENCE_PICTURES]])
        self.diversity: dict[str, float] = {}

    def train_dataset(self) -> Dataset:
        return LatentCaptions(self.latents, self.captions, self.seed, True, self.side_ids)

    def collate(self, items: list):
        return collate_latents(items)

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        m = self.model
        return {"gen": torch.optim.Adam(m.generator_parameters(), lr=cfg.lr, betas=BETAS),
                "disc": torch.optim.Adam(m.discriminator.parameters(), lr=self.d_lr or cfg.lr, betas=BETAS)}

    def training_step(self, batch, step: int, ctx: StepContext) -> dict[str, float]:
        latents, ids = batch
        m = getattr(ctx.model, "module", ctx.model)
        with torch.no_grad():
            real = m.judged(latents)
        return adversarial_step(m, ids, real, self.objective, self.ema, self.diversity, ctx, step)


def new_model(recipe: GeneratorRecipe, vocab: Vocabulary) -> LatentGAN:
    """A fresh latent GAN sized for `vocab`, holding the frozen autoencoder of `recipe.autoencoder`."""
    if recipe.autoencoder is None:
        raise I2TError("a latent-gan run needs --autoencoder: a diffusion run's autoencoder checkpoint "
                       "(i2t train diffusion writes it to OUT/autoencoder/best)")
    ck = load_checkpoint(resolve_checkpoint_dir(recipe.autoencoder), kind="generator")
    if ck.config.get("kind") != "diffusion" or not any(k.startswith("autoencoder.") for k in ck.state_dict):
        raise I2TError(f"--autoencoder {recipe.autoencoder}: not a diffusion checkpoint with an autoencoder")
    sizes = {k: ck.config[k] for k in ("image_size", "ae_channels", "ae_blocks", "latent_channels") if k in ck.config}
    network = {"z_dim": recipe.z_dim} if recipe.z_dim is not None else {}
    model = LatentGAN(latent_gan_config(recipe.kind, vocab_size=len(vocab), **sizes, **network), vocab)
    model.load_autoencoder(ck.state_dict)
    return model


def train_latent_gan(recipe: GeneratorRecipe, data: str, cfg: TrainConfig, *, data_dir: str | Path | None = None,
                     init_from: str | Path | None = None) -> dict:
    """Train a latent GAN on `data` into `cfg.out` (resumable: `cfg.resume` continues from out/last, whose
    autoencoder and latent scale it keeps); returns the run's summary."""
    check_recipe(recipe, "latent-gan")
    if init_from is not None:
        raise I2TError("a latent-gan run cannot start from --init-from; --resume continues one")
    ds = load_dataset(data, data_dir)
    last = Path(cfg.out) / "last"
    resumed = cfg.resume and checkpoint_exists(last)
    seed_everything(cfg.seed)  # the initial weights depend on the seed alone
    if resumed:
        model = LatentGAN.from_checkpoint(load_checkpoint(last, kind="generator"))
        if recipe.z_dim is not None and recipe.z_dim != model.config.z_dim:
            raise I2TError("--z-dim cannot change when a run resumes (its saved config is kept)")
    else:
        vocab = Vocabulary.build(ds.all_captions("train"), min_count=1 if ds.name == "shapes" else 5, max_size=8000)
        model = new_model(recipe, vocab)
    model.to(pick_device(cfg.device)).train()
    train = load_image_captions(ds, "train", model.vocab, model.config.image_size, recipe.limit,
                                model.config.max_tokens)
    latents = encode_pictures(model, train.images, fit_scale=not resumed)  # N x 2 (picture, mirror) x C x s x s
    policy = [p for p in parse_policy(recipe.diff_augment) if p != "color" or model.config.judge == "pixel"]
    objective = GeneratorLoss(diff_augment=",".join(policy), gp_weight=recipe.gp_weight,
                              mode_seeking=recipe.mode_seeking)
    prompts = sample_prompts(data, ds)
    watch = None
    if recipe.min_diversity > 0 or recipe.diversity_encoder != "none":
        watch = DiversityWatch(prompts[0], train.images, train.texts, recipe.diversity_encoder, recipe.min_diversity,
                               check_from=(cfg.max_steps or recipe.steps) // 10)
    task = LatentGANTask(model, latents, train.captions, objective, prompts, seed=cfg.seed, d_lr=recipe.d_lr,
                         ema=recipe.ema, watch=watch)
    summary = fit(task, cfg)
    parents = [str(recipe.autoencoder)] if recipe.autoencoder else []
    summary.update({"recipe": dataclasses.asdict(recipe), "parents": parents, "data": ds.provenance()})
    return summary
