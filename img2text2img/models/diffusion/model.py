"""`DiffusionGenerator`: sentence -> 64x64 picture by latent diffusion.

The prompt is read by the project's LSTM `TextEncoder`; the UNet denoises a latent from pure noise in a few DDIM
steps, guided towards the prompt and away from the empty prompt (classifier-free guidance); the autoencoder turns
the latent into pixels. Drawing uses the EMA copy of the text encoder + UNet (`ema`), which gives cleaner pictures
than the raw weights that training moves (`net`); a shipped checkpoint holds the EMA copy only.
"""
from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from img2text2img.checkpoint import Checkpoint, save_model
from img2text2img.config import (
    MAX_GUIDANCE,
    MAX_PER_PROMPT,
    MAX_TEMPERATURE,
    check_number,
    check_seed,
    config_from_dict,
)
from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.models.diffusion.autoencoder import Autoencoder
from img2text2img.models.diffusion.config import DiffusionConfig, DiffusionSettings
from img2text2img.models.diffusion.schedule import ddim_sample
from img2text2img.models.diffusion.unet import UNet
from img2text2img.models.generator.text import TextEncoder, prepare_prompts
from img2text2img.vocab import END_ID, PAD_ID, START_ID, Vocabulary


def empty_prompt_ids(batch: int, length: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """The empty prompt `<start> <end>` padded to `length` [B, length]: what sentence dropout trains on and what
    guidance steers away from."""
    ids = torch.full((batch, max(length, 2)), PAD_ID, dtype=torch.long, device=device)
    ids[:, 0], ids[:, 1] = START_ID, END_ID
    return ids


class Denoiser(nn.Module):
    """Text encoder + UNet: the trained part, kept twice (raw and EMA) by `DiffusionGenerator`."""

    def __init__(self, config: DiffusionConfig):
        super().__init__()
        self.text = TextEncoder(config.vocab_size, config.embed_dim, config.text_hidden, config.text_layers)
        self.unet = UNet(config.latent_channels, config.unet_channels, config.unet_blocks, config.attention_levels,
                         word_dim=config.text_hidden, sentence_dim=self.text.out_dim, heads=config.heads,
                         time_dim=config.time_dim)

    def forward(self, z: torch.Tensor, t: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """(z_t [B, C, h, w], t [B], prompt ids [B, T]) -> predicted v [B, C, h, w]."""
        sentence, words, mask = self.text(ids, words=True)
        return self.unet(z, t, sentence, words, mask)


class DiffusionGenerator(nn.Module):
    """Sentence -> 64x64 picture; `generate(prompts, n, seed, steps, guidance)` -> [B, 3, 64, 64] in [0, 1]."""

    def __init__(self, config: DiffusionConfig, vocab: Vocabulary | None = None,
                 settings: DiffusionSettings | None = None):
        super().__init__()
        if vocab is not None and len(vocab) != config.vocab_size:
            raise I2TError(f"vocabulary has {len(vocab)} words but the config says vocab_size={config.vocab_size}")
        self.config, self.vocab = config, vocab
        self.settings = settings or DiffusionSettings()
        self.autoencoder = Autoencoder(config.ae_channels, config.latent_channels, config.ae_blocks)
        self.net = Denoiser(config)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)

    @torch.no_grad()
    def update_ema(self, decay: float) -> None:
        for e, p in zip(self.ema.parameters(), self.net.parameters()):
            e.lerp_(p.detach(), 1.0 - decay)

    def guided(self, guidance: float) -> DiffusionGenerator:
        """Draw with this guidance scale from now on (a new settings object, so a shallow copy keeps its own)."""
        check_number("guidance", guidance, 0.0, MAX_GUIDANCE)
        self.settings = replace(self.settings, guidance=float(guidance))
        return self

    def prompt_ids(self, texts: Sequence[str]) -> torch.Tensor:
        """Prompts as padded token ids, as every generator gives them (what `--rerank-with` draws from)."""
        if self.vocab is None:
            raise I2TError("this generator has no vocabulary attached; load it from a checkpoint")
        return prepare_prompts(texts, self.vocab, self.config.max_tokens)

    @torch.no_grad()
    def generate(self, prompts: Sequence[str] | str | torch.Tensor, n: int = 1, seed: int = 0,
                 steps: int | None = None, guidance: float | None = None,
                 temperature: float | None = None) -> torch.Tensor:
        """`n` pictures per prompt, prompt-major, [len(prompts) * n, 3, S, S] in [0, 1]; the same seed gives the
        same pictures on any device. `steps` / `guidance` default to the model's `settings`; `temperature`
        scales the starting noise (below 1: plainer, safer pictures)."""
        check_number("n", n, 1, MAX_PER_PROMPT, integer=True)
        check_seed(seed)
        for name, value, hi in (("steps", steps, 1000), ("guidance", guidance, MAX_GUIDANCE),
                                ("temperature", temperature, MAX_TEMPERATURE)):
            if value is not None:
                check_number(name, value, 1 if name == "steps" else 0.0, hi, integer=name == "steps")
        steps = self.settings.steps if steps is None else int(steps)
        guidance = self.settings.guidance if guidance is None else float(guidance)
        if steps < 1:
            raise I2TError(f"steps must be at least 1, got {steps}")
        device = next(self.parameters()).device
        ids = prompts if isinstance(prompts, torch.Tensor) else self.prompt_ids(prompts)
        ids = ids.repeat_interleave(n, dim=0).to(device)
        B, c, side = ids.shape[0], self.config.latent_channels, self.config.latent_side
        gen = torch.Generator().manual_seed(seed)
        noise = torch.randn(B, c, side, side, generator=gen).to(device) * (1.0 if temperature is None else temperature)
        with evaluating(self):
            text = self.ema.text
            sentence, words, mask = text(ids, words=True)
            if guidance != 1.0:  # one batch holds the prompted and the empty-prompt halves
                empty_s, empty_w, empty_m = text(empty_prompt_ids(B, ids.shape[1], device), words=True)
                sentence, words, mask = (torch.cat(p) for p in ((sentence, empty_s), (words, empty_w), (mask, empty_m)))

            def predict_v(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
                if guidance == 1.0:
                    return self.ema.unet(z, t, sentence, words, mask)
                v_cond, v_empty = self.ema.unet(torch.cat([z, z]), torch.cat([t, t]), sentence, words, mask).chunk(2)
                return v_empty + guidance * (v_cond - v_empty)

            z = ddim_sample(predict_v, noise, steps)
            return self.autoencoder.decode(z)

    def save(self, path: str | Path, *, metrics: dict | None = None, info: dict | None = None, half: bool = False,
             full: bool = True) -> Path:
        """A checkpoint folder; `full=False` leaves out the raw (non-EMA) weights, which only training needs."""
        state = self.state_dict()
        if not full:
            state = {k: v for k, v in state.items() if not k.startswith("net.")}
        return save_model(self, path, state, kind="generator", metrics=metrics, info=info, half=half)

    @classmethod
    def from_checkpoint(cls, ckpt: Checkpoint) -> DiffusionGenerator:
        config = config_from_dict(DiffusionConfig, ckpt.config)
        settings = config_from_dict(DiffusionSettings, ckpt.inference) if ckpt.inference else None
        model = cls(config, ckpt.vocab, settings)
        state = dict(ckpt.state_dict)
        if not any(k.startswith("net.") for k in state):  # a shipped model: training would go on from the EMA
            state.update({"net." + k[4:]: v for k, v in state.items() if k.startswith("ema.")})
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise I2TError(f"{ckpt.path}: weights do not match the diffusion config ({str(e).splitlines()[0]})") from None
        return model
