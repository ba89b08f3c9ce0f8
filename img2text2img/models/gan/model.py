"""`LatentGAN`: sentence (+ noise) -> a latent of the frozen autoencoder -> its decoder -> a 64x64 picture.

A GAN that has to learn photo texture from 6,000 photos on a CPU draws blobs; the autoencoder of the diffusion
model (#17) already knows texture, so the GAN only has to learn where things go in a 16x16x4 latent, a 48th of
the pixels. The generator is DF-GAN's one-stage design (Tao et al. 2022): every block upsamples and is scaled and
shifted per channel by the sentence and noise (deep fusion). The discriminator (spectral norm, matching-aware:
it reads the sentence too) judges the latent, or with `judge="pixel"` the decoded picture. A folder holds the
decoder's weights, so it loads and draws alone like every generator.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from img2text2img.checkpoint import Checkpoint, save_model
from img2text2img.config import MAX_GUIDANCE, check_number, check_seed, config_from_dict
from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.models.diffusion.autoencoder import Autoencoder
from img2text2img.models.gan.config import LatentGANConfig
from img2text2img.models.generator.config import DrawSettings
from img2text2img.models.generator.decoder import down_stack
from img2text2img.models.generator.text import PromptedSampling, TextEncoder, fit_sentence_mean
from img2text2img.vocab import Vocabulary

# the autoencoder's encoder half: training caches the photos' latents with it; drawing needs the decoder only
AE_ENCODER = tuple(f"autoencoder.{p}." for p in ("conv_in", "down", "enc_out"))
# weights only training needs ("raw.": the un-averaged generator weights a resumed run trains on)
TRAINING_ONLY = ("discriminator.", "raw.", *AE_ENCODER)


class TextAffine(nn.Module):
    """x * gamma(c) + beta(c) per channel, from the condition c (sentence + noise); starts as the identity."""

    def __init__(self, cond_dim: int, channels: int):
        super().__init__()
        self.gamma, self.beta = nn.Linear(cond_dim, channels), nn.Linear(cond_dim, channels)
        for lin, bias in ((self.gamma, 1.0), (self.beta, 0.0)):
            nn.init.zeros_(lin.weight)
            nn.init.constant_(lin.bias, bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return x * self.gamma(c)[:, :, None, None] + self.beta(c)[:, :, None, None]


class FusionBlock(nn.Module):
    """DF-GAN's up block: 2x nearest upsample, then (fuse, LeakyReLU, 3x3 conv) twice, added to a 1x1 skip."""

    def __init__(self, cin: int, cout: int, cond_dim: int):
        super().__init__()
        self.fuse1, self.conv1 = TextAffine(cond_dim, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.fuse2, self.conv2 = TextAffine(cond_dim, cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        h = self.conv1(F.leaky_relu(self.fuse1(x, c), 0.2))
        h = self.conv2(F.leaky_relu(self.fuse2(h, c), 0.2))
        return self.skip(x) + h


class LatentDecoder(nn.Module):
    """Condition [B, D] -> latent [B, C, s, s] (unit variance per channel, as the autoencoder normalises it)."""

    def __init__(self, cond_dim: int, channels: Sequence[int], latent_channels: int):
        super().__init__()
        self.c0 = channels[0]
        self.fc = nn.Linear(cond_dim, self.c0 * 16)
        self.blocks = nn.ModuleList(FusionBlock(ci, co, cond_dim) for ci, co in pairwise(channels))
        self.out = nn.Sequential(nn.LeakyReLU(0.2), nn.Conv2d(channels[-1], latent_channels, 3, padding=1))

    def forward(self, c: torch.Tensor) -> torch.Tensor:
        x = self.fc(c).view(c.shape[0], self.c0, 4, 4)
        for block in self.blocks:
            x = block(x, c)
        return self.out(x)


class LatentDiscriminator(nn.Module):
    """(latent or picture, sentence) -> score [B]: a spectral-norm conv stack, the sentence joined at 4x4 px; its
    own text encoder, so it cannot pull the generator's. `sentence` / `score` are split for the gradient penalty
    (`losses.matching_hinge` calls them)."""

    def __init__(self, cfg: LatentGANConfig):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.text = TextEncoder(cfg.vocab_size, cfg.embed_dim, cfg.text_hidden, cfg.text_layers)
        self.pixels = cfg.judge == "pixel"
        if self.pixels:  # [0, 1] pictures
            self.features = down_stack(cfg.d_channels, spectral=True)
        else:
            c = cfg.d_channels
            layers = [sn(nn.Conv2d(cfg.latent_channels, c[0], 3, padding=1)), nn.LeakyReLU(0.2)]
            for ci, co in pairwise((c[0], *c)):
                layers += [sn(nn.Conv2d(ci, co, 4, stride=2, padding=1)), nn.LeakyReLU(0.2)]
            self.features = nn.Sequential(*layers)
        side = (cfg.image_size if self.pixels else cfg.latent_side) // 2 ** len(cfg.d_channels)
        c = cfg.d_channels[-1]
        self.text_proj = nn.Linear(self.text.out_dim, 128)
        self.joint = nn.Sequential(sn(nn.Conv2d(c + 128, c, 3, padding=1)), nn.LeakyReLU(0.2))
        self.out = sn(nn.Linear(c * side * side, 1))

    def sentence(self, ids: torch.Tensor) -> torch.Tensor:
        return self.text_proj(self.text(ids))

    def score(self, x: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        f = self.features(x * 2 - 1 if self.pixels else x)
        t = sentence[:, :, None, None].expand(-1, -1, f.shape[2], f.shape[3])
        return self.out(self.joint(torch.cat([f, t], 1)).flatten(1)).squeeze(1)

    def forward(self, x: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        return self.score(x, self.sentence(ids))


class LatentGAN(PromptedSampling, nn.Module):
    """Sentence -> 64x64 picture; `generate(prompts, n, seed)` like every generator (see the module docstring)."""

    def __init__(self, config: LatentGANConfig, vocab: Vocabulary | None = None,
                 settings: DrawSettings | None = None):
        super().__init__()
        if vocab is not None and len(vocab) != config.vocab_size:
            raise I2TError(f"vocabulary has {len(vocab)} words but the config says vocab_size={config.vocab_size}")
        self.config, self.vocab, self.settings = config, vocab, settings or DrawSettings()
        self.text = TextEncoder(config.vocab_size, config.embed_dim, config.text_hidden, config.text_layers)
        self.net = LatentDecoder(self.text.out_dim + config.z_dim, config.g_channels, config.latent_channels)
        self.autoencoder = Autoencoder(config.ae_channels, config.latent_channels, config.ae_blocks)
        self.autoencoder.requires_grad_(False)  # frozen: trained by the diffusion run, shipped inside this model
        self.discriminator = LatentDiscriminator(config)
        self.register_buffer("sentence_mean", torch.zeros(self.text.out_dim))  # what guidance pushes away from

    def train(self, mode: bool = True) -> LatentGAN:
        super().train(mode)
        self.autoencoder.eval()  # frozen: its GroupNorms have no running statistics, but keep it in eval anyway
        return self

    # -- drawing -----------------------------------------------------------------------------------------------

    def latent(self, ids: torch.Tensor, z: torch.Tensor, guidance: float = 1.0) -> torch.Tensor:
        """ids [B, T] + noise z [B, z_dim] -> latents [B, C, s, s]; `guidance` as `Generator.draw` has it."""
        s = self.text(ids)
        if guidance != 1.0:
            self.check_guidance(guidance)
            s = self.sentence_mean + guidance * (s - self.sentence_mean)
        return self.net(torch.cat([s, z], 1))

    def judged(self, latents: torch.Tensor) -> torch.Tensor:
        """What the discriminator sees of latents: themselves, or (judge="pixel") their decoded pictures."""
        return self.autoencoder.decode(latents) if self.config.judge == "pixel" else latents

    def draw(self, ids: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """A training forward: what the discriminator judges of the drawings (`losses.GeneratorLoss.gan` calls it)."""
        return self.judged(self.latent(ids, z))

    def check_guidance(self, guidance: float) -> None:
        check_number("guidance", guidance, 0.0, MAX_GUIDANCE)
        if guidance != 1.0 and not bool(self.sentence_mean.any()):
            raise I2TError("this generator has no mean sentence vector, which guidance needs")

    def guided(self, guidance: float) -> LatentGAN:
        self.check_guidance(guidance)
        self.settings = replace(self.settings, guidance=float(guidance))
        return self

    def fit_sentence_mean(self, ids: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Set `sentence_mean` to the mean sentence vector of `ids` [N, T] (training captions) and return it."""
        return fit_sentence_mean(self.text, self.sentence_mean, ids, batch_size)

    @torch.inference_mode()
    def generate(self, prompts: Sequence[str] | str | torch.Tensor, n: int = 1, seed: int = 0,
                 temperature: float | None = None, batch_size: int = 64, guidance: float | None = None) -> torch.Tensor:
        """`n` pictures per prompt, prompt-major, [len(prompts) * n, 3, S, S] in [0, 1]; the noise is drawn on the
        CPU from `seed`, so a seed gives the same pictures on any device."""
        ids, temperature = self.sampling_ids(prompts, n, temperature)
        guidance = self.settings.guidance if guidance is None else float(guidance)
        device = self.sentence_mean.device
        z = torch.randn(ids.shape[0], self.config.z_dim, generator=torch.Generator().manual_seed(check_seed(seed)))
        z = z * temperature
        out = []
        with evaluating(self):
            for i in range(0, ids.shape[0], batch_size):
                lat = self.latent(ids[i:i + batch_size].to(device), z[i:i + batch_size].to(device), guidance)
                out.append(self.autoencoder.decode(lat).float().cpu())
        return torch.cat(out)

    def generator_parameters(self) -> list[nn.Parameter]:
        """The trained generator's weights (text encoder + latent decoder): not the discriminator's, not the
        frozen autoencoder's."""
        return [*self.text.parameters(), *self.net.parameters()]

    # -- persistence -------------------------------------------------------------------------------------------

    def load_autoencoder(self, state: dict[str, torch.Tensor]) -> None:
        """The frozen autoencoder's weights from a diffusion checkpoint's state dict (keys `autoencoder.*`)."""
        ae = {k[len("autoencoder."):]: v for k, v in state.items() if k.startswith("autoencoder.")}
        try:
            self.autoencoder.load_state_dict(ae, strict=True)
        except RuntimeError as e:
            raise I2TError(f"the autoencoder's weights do not fit this config ({str(e).splitlines()[0]})") from None

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """What drawing needs: no discriminator, no raw weights, no autoencoder encoder."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(TRAINING_ONLY)}

    def save(self, path: str | Path, *, metrics: dict | None = None, info: dict | None = None, half: bool = False,
             full: bool = True) -> Path:
        state = self.state_dict() if full else self.inference_state_dict()
        return save_model(self, path, state, kind="generator", metrics=metrics, info=info, half=half)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> LatentGAN:
        config = config_from_dict(LatentGANConfig, ckpt.config)
        settings = config_from_dict(DrawSettings, ckpt.inference) if ckpt.inference else None
        model = cls(config, ckpt.vocab, settings)
        missing, unexpected = model.load_state_dict(ckpt.state_dict, strict=False)
        missing = [k for k in missing if not k.startswith(TRAINING_ONLY)]
        unexpected = [k for k in unexpected if not k.startswith("raw.")]
        if missing or unexpected:
            raise I2TError(f"{ckpt.path}: weights do not match the latent GAN config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.eval()
