"""The training recipe of the latent diffusion generator: every setting of `i2t train diffusion`, declared once
(the CLI options are made from these fields). Kept free of torch so the CLI stays fast to start."""
from __future__ import annotations

from dataclasses import dataclass

from img2text2img.config import option


@dataclass
class DiffusionRecipe:
    """How a diffusion generator is trained (the network is the preset's; drawing settings are its inference)."""

    preset: str = option("diffusion", "network preset: diffusion (photos) or diffusion-tiny (tests)")
    ae_steps: int = option(750, "stage 1: autoencoder training steps", min=1)
    ae_batch_size: int = option(32, "stage 1: pictures per step", min=1)
    ae_lr: float = option(1e-3, "stage 1: peak learning rate", min=0.0)
    perceptual_weight: float = option(1.0, "stage 1: weight of the MobileNetV2-feature term beside L1", min=0.0)
    steps: int = option(6000, "stage 2: denoiser training steps", min=1)
    batch_size: int = option(64, "stage 2: latents per step", min=1)
    lr: float = option(4e-4, "stage 2: peak learning rate", min=0.0)
    sentence_dropout: float = option(0.1, "stage 2: share of captions replaced by the empty prompt (for guidance)",
                                     min=0.0, max=1.0)
    ema_decay: float = option(0.999, "stage 2: decay of the weights' moving average that draws", min=0.0, max=1.0)
    warmup_steps: int = option(200, "steps of linear learning-rate warm-up (each stage)", min=0)
    ae_checkpoint_every: int = option(300, "stage 1: steps between checkpoints and reconstruction grids", min=1)
    checkpoint_every: int = option(500, "stage 2: steps between checkpoints and sample grids", min=1)
    hflip: bool = option(True, "mirror pictures at random (never ones whose caption says left or right)")
    seed: int = option(0, "seed of the initial weights, the data order and the noise")
    min_snr: float = option(0.0, "stage 2: min-SNR-gamma loss weighting (Hang et al. 2023), gamma here; 0 = every "
                            "time weighted alike in v (as the shipped model was trained)", min=0.0)
    autoencoder: str = option("", "start from this diffusion model's trained autoencoder (a folder or shipped name) "
                              "and skip stage 1; '' = train one")
    init_from: str = option("", "start the whole model (autoencoder, text encoder, UNet) from this diffusion model "
                            "(a folder or shipped name) with a fresh optimiser and schedule, and skip stage 1; the "
                            "network and vocabulary are its; '' = a fresh denoiser")
