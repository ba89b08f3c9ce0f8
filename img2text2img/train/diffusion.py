"""Training a latent diffusion generator in two stages with the shared engine (`engine.fit`).

Stage 1 trains the autoencoder alone (L1 + a perceptual term in a frozen MobileNetV2's features) into
`out/autoencoder/`; stage 2 freezes it, fits the latent scale, encodes every training picture once (and its mirror
image) and trains the text encoder + UNet on those latents into `out/denoiser/`, a run folder that loads and ships
like any other generator run (its checkpoints are the whole model). Each stage checkpoints every `checkpoint_every` steps with a
sample grid beside it; `resume` continues whichever stage was interrupted.
"""
from __future__ import annotations

import json
import random
import sys
from dataclasses import asdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from img2text2img.checkpoint import checkpoint_exists, load_checkpoint
from img2text2img.data import load_dataset
from img2text2img.errors import I2TError
from img2text2img.io import write_text_atomic
from img2text2img.models import resolve_checkpoint_dir
from img2text2img.models.diffusion import DiffusionGenerator, diffusion_config, empty_prompt_ids
from img2text2img.models.diffusion.autoencoder import reconstruction_l1
from img2text2img.models.diffusion.schedule import alpha_sigma, noised
from img2text2img.models.encoders import IMAGENET_MEAN, IMAGENET_STD, create_encoder
from img2text2img.models.generator.images import save_grid
from img2text2img.train.diffusion_recipe import DiffusionRecipe
from img2text2img.train.engine import StepContext, TrainConfig, TrainTask, fit, pick_device, seed_everything
from img2text2img.train.generator_data import load_image_captions, sample_prompts, write_samples
from img2text2img.vocab import Vocabulary, pad_batch

AE_DIR, DENOISER_DIR = "autoencoder", "denoiser"
# MobileNetV2 blocks whose outputs the perceptual term compares: edges (1), textures (3) and parts (6)
PERCEPTUAL_BLOCKS = (1, 3, 6)
# Words that a mirror image would make false: pictures captioned with them are never flipped.
SIDE_WORDS = ("left", "right")


# ---------------------------------------------------------------------------------------------------------------
# Data


class PictureDataset(Dataset):
    """Item k = picture k % N as float [3, S, S] in [0, 1], mirrored at random by (seed, epoch, k); `repeats` passes
    over the pictures make one epoch, so epochs are as long as a pass over all captions."""

    def __init__(self, images: torch.Tensor, seed: int, hflip: bool, repeats: int = 1):
        self.images, self.seed, self.hflip, self.repeats, self.epoch = images, seed, hflip, repeats, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images) * self.repeats

    def __getitem__(self, k: int) -> torch.Tensor:
        img = self.images[k % len(self.images)].float() / 255.0
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + k)
        return img.flip(-1) if self.hflip and rng.random() < 0.5 else img


class LatentCaptions(Dataset):
    """Item k = (latent of a picture [C, h, w], one of its captions as ids): every (picture, caption) pair once
    per epoch, the latent of the mirrored picture at random (by seed, epoch, k) unless the caption names a side."""

    def __init__(self, latents: torch.Tensor, captions: list[list[list[int]]], seed: int, hflip: bool,
                 side_ids: set[int]):
        self.latents, self.captions, self.seed, self.hflip, self.side_ids = latents, captions, seed, hflip, side_ids
        self.pairs = [(i, j) for i, caps in enumerate(captions) for j in range(len(caps))]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, k: int) -> tuple[torch.Tensor, list[int]]:
        i, j = self.pairs[k]
        ids = self.captions[i][j]
        rng = random.Random((self.seed * 1_000_003 + self.epoch) * 10_000_019 + k)
        flip = self.hflip and rng.random() < 0.5 and not self.side_ids.intersection(ids)
        return self.latents[i, int(flip)], ids


def collate_latents(items: list) -> tuple[torch.Tensor, torch.Tensor]:
    """[(latent, ids)] -> (latents [B, C, h, w], ids [B, T])."""
    return torch.stack([z for z, _ in items]), pad_batch([ids for _, ids in items])


# ---------------------------------------------------------------------------------------------------------------
# Stage 1: the autoencoder


class PerceptualLoss(nn.Module):
    """Mean squared distance of channel-normalised MobileNetV2 features (LPIPS without its learned weights), at
    twice the picture's side so the early blocks still see the picture's detail. Frozen; not saved with the model."""

    def __init__(self, blocks: tuple[int, ...] = PERCEPTUAL_BLOCKS):
        super().__init__()
        trunk = create_encoder("mobilenet_v2", pretrained=True).model.features  # torchvision MobileNetV2
        self.trunk = trunk[: max(blocks) + 1].eval().requires_grad_(False)
        self.blocks = set(blocks)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True) -> PerceptualLoss:
        return super().train(False)  # BatchNorm keeps its ImageNet statistics

    def features(self, images: torch.Tensor) -> list[torch.Tensor]:
        x = F.interpolate(images, scale_factor=2, mode="bilinear", align_corners=False)
        x = (x - self.mean) / self.std
        out = []
        for i, layer in enumerate(self.trunk):
            x = layer(x)
            if i in self.blocks:
                out.append(x / (x.pow(2).sum(1, keepdim=True).sqrt() + 1e-6))
        return out

    def forward(self, drawn: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Pictures in [0, 1], [B, 3, S, S] each -> a scalar."""
        with torch.no_grad():
            want = self.features(real)
        return sum((a - b).pow(2).sum(1).mean() for a, b in zip(self.features(drawn), want)) / len(want)


class AutoencoderTask(TrainTask):
    kind = "generator"

    def __init__(self, model: DiffusionGenerator, images: torch.Tensor, recipe: DiffusionRecipe,
                 shown: torch.Tensor):
        self.model, self.vocab, self.recipe = model, model.vocab, recipe
        self.images, self.shown = images, shown  # shown: fixed pictures whose reconstructions each checkpoint shows
        self.perceptual = PerceptualLoss() if recipe.perceptual_weight > 0 else None

    def train_dataset(self) -> Dataset:
        return PictureDataset(self.images, self.recipe.seed, self.recipe.hflip, repeats=5)

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {"main": torch.optim.AdamW(self.model.autoencoder.parameters(), lr=cfg.lr, weight_decay=0.0)}

    def loss(self, model, images: torch.Tensor):
        recon = model.autoencoder(images)
        l1 = reconstruction_l1(recon, images)
        logs = {"l1": float(l1.detach())}
        loss = l1
        if self.perceptual is not None:
            self.perceptual.to(images.device)
            p = self.perceptual(((recon + 1) / 2).clamp(0, 1), images)
            loss = loss + self.recipe.perceptual_weight * p
            logs["perceptual"] = float(p.detach())
        return loss, logs

    def on_checkpoint(self, path: Path, step: int) -> None:
        """Fixed pictures (top row) over their reconstructions (bottom row)."""
        ae = self.model.autoencoder
        with torch.no_grad():
            x = self.shown.to(next(ae.parameters()).device)
            recon = ((ae(x) + 1) / 2).clamp(0, 1)
        grid = torch.cat([x, recon]).cpu()
        save_grid(grid, Path(path) / "samples.png", ncol=len(x), scale=2)
        save_grid(grid, Path(path).parent / "samples" / f"step{step:06d}.png", ncol=len(x), scale=2)


# ---------------------------------------------------------------------------------------------------------------
# Stage 2: the denoiser


@torch.no_grad()
def encode_pictures(model: DiffusionGenerator, images: torch.Tensor, batch: int = 256,
                    fit_scale: bool = False) -> torch.Tensor:
    """uint8 pictures [N, 3, S, S] -> unit-variance latents of each picture and its mirror image [N, 2, C, h, w];
    `fit_scale` first fits the autoencoder's latent shift and scale to them."""
    ae = model.autoencoder.eval()
    device = next(ae.parameters()).device
    raw = []
    for lo in range(0, len(images), batch):
        x = images[lo:lo + batch].to(device).float() / 255.0
        raw.append(torch.stack([ae.encode_raw(x), ae.encode_raw(x.flip(-1))], dim=1).cpu())
    raw = torch.cat(raw)  # N x 2 x C x h x w
    if fit_scale:
        ae.fit_latent_scale(raw.flatten(0, 1))
    mean, std = ae.latent_mean.cpu()[:, None, None], ae.latent_std.cpu()[:, None, None]
    return (raw - mean) / std


class DenoiserTask(TrainTask):
    kind = "generator"

    def __init__(self, model: DiffusionGenerator, latents: torch.Tensor, captions: list[list[list[int]]],
                 recipe: DiffusionRecipe, prompts: list[str]):
        self.model, self.vocab, self.recipe, self.prompts = model, model.vocab, recipe, prompts
        self.latents, self.captions = latents, captions
        model.autoencoder.requires_grad_(False)
        self.side_ids = {model.vocab.id(w) for w in SIDE_WORDS if w in model.vocab}

    def train_dataset(self) -> Dataset:
        return LatentCaptions(self.latents, self.captions, self.recipe.seed, self.recipe.hflip, self.side_ids)

    def collate(self, items: list):
        return collate_latents(items)

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {"main": torch.optim.AdamW(self.model.net.parameters(), lr=cfg.lr, weight_decay=0.0)}

    def loss(self, model, batch):
        z0, ids = batch
        B = z0.shape[0]
        drop = torch.rand(B, device=z0.device) < self.recipe.sentence_dropout
        ids = torch.where(drop[:, None], empty_prompt_ids(B, ids.shape[1], z0.device), ids)
        t = torch.rand(B, device=z0.device)
        zt, v = noised(z0, t, torch.randn_like(z0))
        err = (model.net(zt, t, ids) - v).pow(2)
        if self.recipe.min_snr > 0:  # weight min(SNR, gamma) on the z0 error is that over (SNR + 1) on the v error
            a, s = alpha_sigma(t)
            snr = (a / s.clamp(min=1e-4)).pow(2)
            err = err * snr.clamp(max=self.recipe.min_snr) / (snr + 1)
        return err.mean(), {}

    def training_step(self, batch, step: int, ctx: StepContext) -> dict[str, float]:
        logs = super().training_step(batch, step, ctx)
        # the usual EMA warm-up: early weights are forgotten fast, so the average is not stuck at the random init
        self.model.update_ema(min(self.recipe.ema_decay, (1 + step) / (10 + step)))
        return logs

    def on_checkpoint(self, path: Path, step: int) -> None:
        write_samples(self.model, self.prompts, path, step)


# ---------------------------------------------------------------------------------------------------------------
# The two stages


def stage_config(out: Path, recipe: DiffusionRecipe, *, steps: int, batch_size: int, lr: float, every: int,
                 resume: bool, device: str, log_every: int, progress: bool, stop_at: int | None = None) -> TrainConfig:
    return TrainConfig(out=str(out), epochs=1, max_steps=steps, batch_size=batch_size, lr=lr, grad_clip=1.0,
                       warmup_steps=recipe.warmup_steps, checkpoint_every=every, seed=recipe.seed,
                       device=device, resume=resume, progress=progress, log_every=log_every, stop_at=stop_at)


def has_checkpoint(path: Path) -> bool:
    return checkpoint_exists(path)  # also the backup an interrupted save leaves


def fresh_model(ds, recipe: DiffusionRecipe) -> DiffusionGenerator:
    """`recipe`'s preset with the vocabulary of `ds`'s training captions; the initial weights depend on the seed
    alone."""
    vocab = Vocabulary.build(ds.all_captions("train"), min_count=1 if ds.name == "shapes" else 5, max_size=8000)
    seed_everything(recipe.seed)
    return DiffusionGenerator(diffusion_config(recipe.preset, vocab_size=len(vocab)), vocab)


def load_source(source: str | Path) -> DiffusionGenerator:
    """Diffusion model `source` (a folder or shipped name) that a run starts from."""
    return DiffusionGenerator.from_checkpoint(load_checkpoint(resolve_checkpoint_dir(source), kind="generator"))


def on_autoencoder(source: str | Path, model: DiffusionGenerator, recipe: DiffusionRecipe) -> DiffusionGenerator:
    """Fresh `model` on the trained autoencoder (and latent scale) of diffusion model `source`, so stage 1 need not
    run again."""
    src = load_source(source)
    fields = ("image_size", "ae_channels", "ae_blocks", "latent_channels")
    differ = [f for f in fields if getattr(src.config, f) != getattr(model.config, f)]
    if differ:
        raise I2TError(f"--autoencoder {source}: its autoencoder differs from preset {recipe.preset}'s "
                       f"({', '.join(differ)})")
    model.autoencoder.load_state_dict(src.autoencoder.state_dict())
    return model


def from_model(source: str | Path) -> DiffusionGenerator:
    """Diffusion model `source` to train on (its network, vocabulary and latent scale kept): a shipped folder's
    drawing weights become the trained ones too."""
    src = load_source(source)
    src.net.load_state_dict(src.ema.state_dict())  # a run's raw weights lag its EMA; drawing is what is carried on
    return src


def train_diffusion(data: str, out: str | Path, recipe: DiffusionRecipe | None = None, *,
                    data_dir: str | Path | None = None, resume: bool = False, device: str = "auto",
                    log_every: int = 50, progress: bool = True, command: list[str] | None = None,
                    stop_at: int | None = None) -> dict:
    """Train both stages on `data` (flickr8k, shapes[:N] or a caption folder) into `out`; returns a summary (also
    written to `out/denoiser/summary.json`, with the command, for `i2t ship`). `resume` continues an interrupted run;
    `stop_at` ends this invocation at that denoiser step (checkpointed, resumable)."""
    recipe = recipe or DiffusionRecipe()
    out = Path(out)
    if not resume and out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise I2TError(f"{out} already exists; pass --resume to continue a run there or choose another --out")
    if recipe.autoencoder and recipe.init_from:
        raise I2TError("--autoencoder and --init-from both choose the start: pass one (--init-from keeps its "
                       "autoencoder too)")
    ds = load_dataset(data, data_dir)
    ae_dir, run = out / AE_DIR, out / DENOISER_DIR
    opts = {"resume": False, "device": device, "log_every": log_every, "progress": progress}
    summary: dict = {"command": command or sys.argv, "parents": [], "recipe": asdict(recipe)}
    in_stage2 = resume and has_checkpoint(run / "last")
    start = recipe.init_from or recipe.autoencoder
    train_ae = not in_stage2 and not start  # with --autoencoder or --init-from, stage 1 is that model's
    if start:
        summary["parents"] = [str(resolve_checkpoint_dir(start))]

    if in_stage2:
        model = DiffusionGenerator.from_checkpoint(load_checkpoint(run / "last", kind="generator"))
    elif recipe.init_from:
        model = from_model(recipe.init_from)
    elif recipe.autoencoder:
        model = on_autoencoder(recipe.autoencoder, fresh_model(ds, recipe), recipe)
    else:
        resume1 = resume and has_checkpoint(ae_dir / "last")
        if resume1:
            model = DiffusionGenerator.from_checkpoint(load_checkpoint(ae_dir / "last", kind="generator"))
        else:
            model = fresh_model(ds, recipe)
    train = load_image_captions(ds, "train", model.vocab, model.config.image_size, max_tokens=model.config.max_tokens)

    if train_ae:
        shown = train.images[torch.linspace(0, len(train.images) - 1, 8).long()].float() / 255.0
        task = AutoencoderTask(model.train(), train.images, recipe, shown)
        summary["autoencoder"] = fit(task, stage_config(ae_dir, recipe, steps=recipe.ae_steps,
                                                        batch_size=recipe.ae_batch_size, lr=recipe.ae_lr,
                                                        every=recipe.ae_checkpoint_every,
                                                        **{**opts, "resume": resume1}))
        # stage 2 starts from the finished autoencoder (and the seeded initial denoiser saved beside it)
        model = DiffusionGenerator.from_checkpoint(load_checkpoint(ae_dir / "best", kind="generator"))
    model.to(pick_device(device))
    latents = encode_pictures(model, train.images, fit_scale=train_ae)
    task = DenoiserTask(model.train(), latents, train.captions, recipe, sample_prompts(data))
    summary["denoiser"] = fit(task, stage_config(run, recipe, steps=recipe.steps, batch_size=recipe.batch_size,
                                                 lr=recipe.lr, every=recipe.checkpoint_every, stop_at=stop_at,
                                                 **{**opts, "resume": in_stage2}))
    if stop_at is not None and summary["denoiser"]["steps"] < recipe.steps:
        return summary  # cut on purpose: the run is not finished, so there is nothing to ship yet
    write_text_atomic(run / "summary.json", json.dumps(summary, indent=2, default=str))
    return summary
