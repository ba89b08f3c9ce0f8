"""The training recipe of the generators: every setting of `i2t train generator` that says how a model is taught,
declared once (the CLI options are made from these fields). Kept free of torch so the CLI stays fast to start."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from img2text2img.config import option
from img2text2img.errors import I2TError


@dataclass
class GeneratorRecipe:
    """How a generator is trained; `i2t train generator` takes each field as an option."""

    kind: str = option("pixel", "Preset: pixel | vae | gan, or scene for flat-colour pictures such as the shapes set "
                       "(a writer of scenes; train it with --batch-size 64 --lr 1e-3), or latent-gan / "
                       "latent-gan-pixel (a GAN drawing in a diffusion run's --autoencoder latents, its "
                       "discriminator judging latents / decoded pictures); *-tiny presets are for tests.")
    steps: int = option(3000, "Optimizer steps.", min=1)
    batch_size: int = option(32, "Pictures per step.", min=1)
    lr: float = option(2e-3, "Peak learning rate (linear warm-up, then cosine).", min=0.0)
    checkpoint_every: int = option(250, "Steps between checkpoints (each with samples.png).", min=1)
    seed: int = option(0, "Same seed, same run.")
    limit: int | None = option(None, "Use only the first N training pictures.", min=1)
    glove: bool = option(False, "Initialise word vectors from GloVe 6B-50d (embed_dim 50).")
    z_dim: int | None = option(None, "vae/gan: size of the latent code (default: the preset's).", min=1)
    prior: str = option("standard", "vae: 'standard' (z ~ N(0, I)) or 'learned' (predicted from the sentence; "
                        "--init-from a standard vae adds it, starting as N(0, I)).")
    recon_loss: str = option("mse", "Pixel loss: mse or l1.")
    beta: float = option(1.0, "vae: weight of the KL term.", min=0.0)
    kl_warmup: int = option(1000, "vae: steps over which beta ramps up from 0 (none when --init-from brings a "
                            "trained code).", min=0)
    recon_weight: float = option(0.0, "gan: weight of an added pixel-loss term (0 = pure GAN).", min=0.0)
    perceptual: str | None = option(None, "Perceptual term (pixel, vae): an encoder name such as mobilenet_v3_small, "
                                    "or a captioner checkpoint whose encoder compares drawing and real picture.")
    perceptual_weight: float = option(1.0, "Weight of the --perceptual term.", min=0.0)
    perceptual_size: int | None = option(None, "Side the drawing is resized to for the --perceptual encoder "
                                         "(default: the encoder's input size; smaller is faster).", min=32)
    augment: str = option("auto", "pixel/vae/gan: augment training pictures, comma-separated: flip, rot90, "
                          "rotate[=15], shear[=10], zoom[=0.1]; auto = flip for photos, none for the shapes set. A "
                          "caption naming left/right is never mirrored, one naming a direction never turned.")
    d_lr: float | None = option(None, "gan: the discriminator's peak learning rate (two time-scale updates, e.g. "
                                "4x --lr; default: --lr).", min=0.0)
    ema: float = option(0.999, "gan: decay of the moving average of the generator's weights that samples and "
                        "checkpoints use (0 = off, draw with the raw weights).", min=0.0, max=0.99999)
    diff_augment: str = option("color,translation,cutout", "gan: DiffAugment on every picture the discriminator "
                               "sees, real and drawn: any of color, translation, cutout, or none (a latent-gan judging latents "
                               "skips color: a latent has no colours).")
    gp_weight: float = option(2.0, "gan: weight of the matching-aware zero-centred gradient penalty on real "
                              "pictures with their sentences (DF-GAN's MA-GP; 0 = off).", min=0.0)
    mode_seeking: float = option(1.0, "gan: weight of the mode-seeking term (MSGAN): two drawings of one sentence "
                                 "should differ as their noise does, or the generator ignores it (0 = off).", min=0.0)
    min_diversity: float = option(0.1, "gan: stop when 8 drawings of one prompt are less varied than this fraction "
                                  "of 8 real photos of its theme, checked at each checkpoint after the first tenth of the steps "
                                  "(0 = off).", min=0.0)
    diversity_encoder: str = option("mobilenet_v3_small", "gan: the encoder whose pooled features measure "
                                    "diversity (logged at each checkpoint to diversity.jsonl); none = no watch.")
    autoencoder: str | None = option(None, "latent-gan: the frozen autoencoder it draws through, a diffusion "
                                     "run's autoencoder checkpoint (e.g. runs/diffusion-flickr8k/autoencoder/best); "
                                     "its weights go into the GAN's folder.")
    fit_pictures: int = option(3000, "scene: training pictures the palette and sprite templates are fitted to.", min=1)


# recipe fields that mean something for some kinds only: set for another, they are refused rather than ignored
GANS = ("gan", "latent-gan")
ONLY_FOR = {"z_dim": ("vae", *GANS), "prior": ("vae",), "beta": ("vae",), "kl_warmup": ("vae",),
            "recon_weight": ("gan",), "recon_loss": ("pixel", "vae", "gan"), "glove": ("pixel", "vae", "gan"),
            "perceptual": ("pixel", "vae"), "perceptual_weight": ("pixel", "vae"), "perceptual_size": ("pixel", "vae"),
            "fit_pictures": ("scene",), "augment": ("pixel", "vae", "gan"), "d_lr": GANS, "ema": GANS,
            "diff_augment": GANS, "gp_weight": GANS, "min_diversity": GANS, "mode_seeking": GANS,
            "diversity_encoder": GANS, "autoencoder": ("latent-gan",)}


def check_recipe(recipe: GeneratorRecipe, kind: str) -> None:
    for f in dataclasses.fields(recipe):
        kinds = ONLY_FOR.get(f.name)
        if kinds and kind not in kinds and getattr(recipe, f.name) != f.default:
            raise I2TError(f"--{f.name.replace('_', '-')} is a {'/'.join(kinds)} option; a {kind} generator has none")
