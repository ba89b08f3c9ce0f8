"""`Generator`: a sentence in, a 64x64 RGB picture out, three ways that share one text encoder and one decoder.

- `pixel`: decoder(sentence), trained with a pixel loss; deterministic, draws the average picture for a sentence.
- `vae`:   conditional VAE; a conv image encoder gives q(z | image, sentence), the decoder draws from (z, sentence).
  The prior is N(0, I) or, with `prior="learned"`, predicted from the sentence, so z carries only what the
  sentence leaves open. Sampling lets the model commit to one layout instead of averaging all a sentence allows.
- `gan`:   conditional DCGAN against a spectral-norm, matching-aware discriminator (hinge loss, DiffAugment and a
  matching-aware gradient penalty; `losses.py`); a run saves the moving average of its weights (`train/gan.py`).

Any kind can draw with `guidance` g > 1 (a draw setting, see `decode`). The scene kind is `scene.SceneGenerator`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

from img2text2img.checkpoint import Checkpoint, save_model
from img2text2img.config import MAX_GUIDANCE, check_number, check_seed
from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.models.generator.config import DrawSettings, GeneratorConfig, load_config
from img2text2img.models.generator.decoder import Discriminator, ImageDecoder, down_stack
from img2text2img.models.generator.scene import SceneGenerator
from img2text2img.models.generator.text import PromptedSampling, TextEncoder, fit_sentence_mean
from img2text2img.vocab import Vocabulary

# weights only training needs: a shipped (drawing-only) checkpoint leaves them out
# ("raw.": a GAN run's un-averaged weights, which resuming trains on; the saved ones are their moving average)
TRAINING_ONLY = ("discriminator.", "image_encoder.", "posterior.", "raw.")


class Drawing(NamedTuple):
    """A training forward's output: the drawings [B, 3, S, S] and, for a vae, KL(q || p) in nats per picture."""

    fake: torch.Tensor
    kl: torch.Tensor | None = None


class Generator(PromptedSampling, nn.Module):
    """Sentence -> 64x64 image. `config.kind` picks pixel / vae / gan; see the module docstring."""

    def __init__(self, config: GeneratorConfig, vocab: Vocabulary | None = None, settings: DrawSettings | None = None):
        super().__init__()
        if vocab is not None and len(vocab) != config.vocab_size:
            raise I2TError(f"vocabulary has {len(vocab)} words but the config says vocab_size={config.vocab_size}")
        self.config, self.vocab, self.settings = config, vocab, settings or DrawSettings()
        self.text = TextEncoder(config.vocab_size, config.embed_dim, config.text_hidden, config.text_layers,
                                config.dropout)
        self.decoder = ImageDecoder(self.text.out_dim + config.z_dim, config.channels, config.film)
        # The mean sentence vector of the training captions (fit_sentence_mean), what `guidance` pushes away from.
        self.register_buffer("sentence_mean", torch.zeros(self.text.out_dim))
        if config.kind == "vae":
            self.image_encoder = down_stack(config.enc_channels, spectral=False)
            side = config.image_size // 2 ** len(config.enc_channels)
            self.posterior = nn.Linear(config.enc_channels[-1] * side * side + self.text.out_dim, 2 * config.z_dim)
            if config.prior == "learned":
                # Zero-initialised last layer: the learned prior starts as N(0, I), so it can be added to a trained VAE.
                self.prior_net = nn.Sequential(nn.Linear(self.text.out_dim, 256), nn.ReLU(inplace=True),
                                               nn.Linear(256, 2 * config.z_dim))
                nn.init.zeros_(self.prior_net[2].weight)
                nn.init.zeros_(self.prior_net[2].bias)
        if config.kind == "gan":
            self.discriminator = Discriminator(config)

    # -- drawing -----------------------------------------------------------------------------------------------

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] -> sentence vectors [B, 2*text_hidden]."""
        return self.text(ids)

    def prior(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sentence vectors -> the prior's (mu, logvar) over z."""
        if self.config.prior != "learned":
            zero = s.new_zeros(s.shape[0], self.config.z_dim)
            return zero, zero
        mu, logvar = self.prior_net(s).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def from_noise(self, s: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Standard-normal noise -> a draw of z from the prior for these sentences (the identity for N(0, I))."""
        if self.config.prior != "learned":
            return noise
        mu, logvar = self.prior(s)
        return mu + noise * torch.exp(0.5 * logvar)

    def draw(self, ids: torch.Tensor, z: torch.Tensor | None = None, guidance: float = 1.0) -> torch.Tensor:
        """ids [B, T] (+ noise z [B, z_dim], standard normal times the temperature) -> images [B, 3, S, S] in [0, 1].

        `guidance` g draws from mean + g * (s - mean) instead of the sentence vector s, the mean being that of the
        training captions. Why: trained to be close to every photo a sentence fits, the decoder draws mostly what
        all sentences share; stretching what sets this sentence apart, the way classifier-free guidance does, draws
        it louder. g = 1 is the model as trained; training never uses g. A learned prior maps the noise, so a
        temperature scales the spread around what the sentence predicts."""
        s = self.text(ids)
        if guidance != 1.0:
            self.check_guidance(guidance)
            s = self.sentence_mean + guidance * (s - self.sentence_mean)
        if self.config.z_dim:
            if z is None:
                raise ValueError("this generator needs z")
            s = torch.cat([s, self.from_noise(s, z)], dim=1)
        return self.decoder(s)

    def guided(self, guidance: float) -> Generator:
        """This generator, drawing with `guidance` from now on (a draw setting, saved with it)."""
        self.check_guidance(guidance)
        self.settings = replace(self.settings, guidance=float(guidance))
        return self

    def check_guidance(self, guidance: float) -> None:
        check_number("guidance", guidance, 0.0, MAX_GUIDANCE)
        if guidance != 1.0 and not bool(self.sentence_mean.any()):
            raise I2TError("this generator has no mean sentence vector, which guidance needs (checkpoints saved by "
                           "training have one; otherwise fit it with Generator.fit_sentence_mean)")

    def fit_sentence_mean(self, ids: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Set `sentence_mean` to the mean sentence vector of `ids` [N, T] (training captions) and return it."""
        return fit_sentence_mean(self.text, self.sentence_mean, ids, batch_size)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str] | str | torch.Tensor, n: int = 1, seed: int = 0,
                 temperature: float | None = None, batch_size: int = 64, guidance: float | None = None) -> torch.Tensor:
        """Draw `n` images per prompt -> FloatTensor [len(prompts) * n, 3, S, S] in [0, 1], prompt-major order.

        `prompts` are strings or token ids [B, T]. The noise comes from a `torch.Generator` seeded with `seed` (drawn
        on the CPU, so a seed gives the same noise on any device), scaled by `temperature`; a pixel model draws the
        same picture n times. None = the model's `settings`. Runs in eval mode and restores the previous mode."""
        ids, temperature = self.sampling_ids(prompts, n, temperature)
        guidance = self.settings.guidance if guidance is None else float(guidance)
        device = next(self.parameters()).device
        rng = torch.Generator().manual_seed(check_seed(seed))
        z = torch.randn(ids.shape[0], self.config.z_dim, generator=rng) * temperature if self.config.z_dim else None
        out = []
        with evaluating(self):
            for i in range(0, ids.shape[0], batch_size):
                zi = z[i : i + batch_size].to(device) if z is not None else None
                out.append(self.draw(ids[i : i + batch_size].to(device), zi, guidance).float().cpu())
        return torch.cat(out).clamp_(0, 1)

    # -- training ----------------------------------------------------------------------------------------------

    def forward(self, ids: torch.Tensor, images: torch.Tensor | None = None) -> Drawing:
        """Training forward: a pixel model's drawing; a vae's reconstruction from the posterior's z and its KL.
        Without images (or for a gan) it draws from z = 0. The losses are `losses.GeneratorLoss`'s."""
        cfg = self.config
        if images is None or cfg.kind != "vae":
            z = torch.zeros(ids.shape[0], cfg.z_dim, device=ids.device) if cfg.z_dim else None
            return Drawing(self.draw(ids, z))
        s = self.text(ids)
        h = self.image_encoder(images * 2 - 1).flatten(1)
        mu, logvar = self.posterior(torch.cat([h, s], 1)).chunk(2, dim=1)  # B x Z each
        logvar = logvar.clamp(-10, 10)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        p_mu, p_logvar = self.prior(s)  # KL(q(z | image, sentence) || p(z | sentence))
        kl_terms = p_logvar - logvar + (logvar.exp() + (mu - p_mu).pow(2)) * torch.exp(-p_logvar) - 1
        return Drawing(self.decoder(torch.cat([s, z], 1)), 0.5 * kl_terms.sum(1).mean())

    def generator_parameters(self) -> list[nn.Parameter]:
        """Everything but the discriminator (the GAN's generator optimizer gets these)."""
        return [p for n, p in self.named_parameters() if not n.startswith("discriminator.")]

    # -- persistence -------------------------------------------------------------------------------------------

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights needed to draw: no discriminator, no VAE image encoder or posterior."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(TRAINING_ONLY)}

    def save(self, path: str | Path, *, metrics: dict | None = None, info: dict | None = None, half: bool = False,
             full: bool = True) -> Path:
        """Write a checkpoint folder; `full=False` keeps only what drawing needs (`inference_state_dict`)."""
        state = self.state_dict() if full else self.inference_state_dict()
        return save_model(self, path, state, kind="generator", metrics=metrics, info=info, half=half)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> Generator | SceneGenerator:
        """Any generator checkpoint, the scene kind included (both are saved as kind "generator")."""
        if ckpt.config.get("kind") == "scene":
            return SceneGenerator.from_checkpoint(ckpt)
        config, settings = load_config(ckpt.config, ckpt.inference)
        model = cls(config, vocab=ckpt.vocab, settings=settings)
        missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
        # A drawing-only checkpoint leaves out the training-only parts; one saved before guidance existed has no
        # mean sentence (it stays zero, and guidance says so).
        missing = [k for k in missing if not k.startswith(TRAINING_ONLY) and k != "sentence_mean"]
        unexpected = [k for k in unexpected if not k.startswith("raw.")]
        if missing or unexpected:
            raise I2TError(f"{ckpt.path}: weights do not match the generator config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.eval()
