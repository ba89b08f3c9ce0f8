"""The losses the pixel / vae / gan generators are trained with; their weights come from the training recipe.

Kept apart from the network so that a config says what a model is and a recipe how it was taught.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from img2text2img.errors import I2TError
from img2text2img.models.generator.augment import diff_augment, parse_policy


def pixel_loss(drawn: torch.Tensor, real: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    """Mean per-pixel loss, MSE or L1."""
    if kind == "mse":
        return (drawn - real).pow(2).mean()
    if kind == "l1":
        return (drawn - real).abs().mean()
    raise I2TError(f"recon_loss must be mse or l1, not {kind!r}")


# DF-GAN's matching-aware gradient penalty: weight k times the mean p-th power of the gradient norm (k=2, p=6)
MA_GP_POWER = 6


def ma_gradient_penalty(d_real: torch.Tensor, images: torch.Tensor, sentence: torch.Tensor,
                        power: float = MA_GP_POWER) -> torch.Tensor:
    """Zero-centred penalty on the discriminator's gradient at real pictures with their own sentences, with
    respect to both (DF-GAN's MA-GP): flat there, it cannot sharpen its boundary around the training photos, and
    the generator's drawings are pulled towards real matching pairs. `images` and `sentence` must be in the graph
    of `d_real` with requires_grad; the penalty keeps its own graph so it trains the discriminator."""
    gi, gs = torch.autograd.grad(d_real.float().sum(), (images, sentence), create_graph=True)
    sq = gi.float().flatten(1).pow(2).sum(1) + gs.float().flatten(1).pow(2).sum(1)
    return sq.pow(power / 2).mean()  # ||grad||^p without a sqrt, whose gradient at 0 is undefined


def mode_seeking_ratio(a: torch.Tensor, b: torch.Tensor, za: torch.Tensor, zb: torch.Tensor) -> torch.Tensor:
    """How far two drawings of the same sentences are apart per unit of noise apart (MSGAN, Mao et al. 2019): the
    generator is paid to raise it, since a conditional GAN otherwise learns to ignore its noise (one picture per
    sentence, the collapse the first Flickr8k run showed)."""
    return (a - b).abs().mean() / (za - zb).abs().mean()


def matching_hinge(discriminator, ids: torch.Tensor, images: torch.Tensor, fake: torch.Tensor,
                   augment: str | tuple[str, ...] = (), gp_weight: float = 0.0):
    """Hinge losses of a matching-aware discriminator: (d_loss, g_fn), g_fn() -> (g_adv, logs) to be called after
    the discriminator's update so the drawings are scored by the updated discriminator.

    Its negatives are the drawings and real images paired with a mismatched sentence (the batch rolled by one), so
    it must check that the picture fits the sentence, not only that it looks real. `augment`: a DiffAugment policy
    applied to every picture the discriminator sees; `gp_weight` > 0 adds `ma_gradient_penalty`."""
    D = discriminator
    aug = (lambda x: diff_augment(x, augment)) if augment else (lambda x: x)
    real_in, sent = aug(images), D.sentence(ids)
    if gp_weight > 0:
        real_in = real_in.detach().requires_grad_(True)
    d_real = D.score(real_in, sent)
    d_fake = D.score(aug(fake.detach()), sent)
    d_wrong = D.score(real_in, sent.roll(1, dims=0))
    d_loss = F.relu(1 - d_real).mean() + 0.5 * (F.relu(1 + d_fake).mean() + F.relu(1 + d_wrong).mean())
    gp = ma_gradient_penalty(d_real, real_in, sent) if gp_weight > 0 else None
    if gp is not None:
        d_loss = d_loss + gp_weight * gp

    def g_fn():
        g_adv = -D.score(aug(fake), D.sentence(ids)).mean()
        logs = {"d": d_loss.item(), "g_adv": g_adv.item(), "d_real": d_real.mean().item(),
                "d_fake": d_fake.mean().item()}
        if gp is not None:
            logs["gp"] = gp.item()
        return g_adv, logs

    return d_loss, g_fn


class GeneratorLoss:
    """A generator's training loss as a recipe sets it: the pixel loss (+ beta * KL with a linear warm-up for a
    vae, + an optional perceptual term), or for a gan the hinge losses (DiffAugment policy `diff_augment`, MA-GP
    weight `gp_weight`, + an optional pixel term).

    `perceptual`: a callable (drawn, real) -> scalar with a `weight` attribute, e.g. `train.generator.FeatureLoss`.
    The KL is divided by the pixel count, like the mean pixel loss, so beta means the same at any image size."""

    def __init__(self, recon: str = "mse", beta: float = 1.0, kl_warmup: int = 0, recon_weight: float = 0.0,
                 perceptual: Callable | None = None, diff_augment: str = "", gp_weight: float = 0.0,
                 mode_seeking: float = 0.0):
        pixel_loss(torch.zeros(1), torch.zeros(1), recon)  # refuse an unknown kind now, not at the first step
        self.recon, self.beta, self.kl_warmup = recon, beta, kl_warmup
        self.recon_weight, self.perceptual = recon_weight, perceptual
        self.diff_augment, self.gp_weight = parse_policy(diff_augment), gp_weight
        self.mode_seeking = mode_seeking

    def beta_at(self, step: int) -> float:
        return self.beta * min(1.0, step / self.kl_warmup) if self.kl_warmup > 0 else self.beta

    def __call__(self, model, ids: torch.Tensor, images: torch.Tensor, step: int = 0):
        """pixel / vae: -> (drawn, loss, logs). `model` may be a DistributedDataParallel wrapper: it is called once."""
        fake, kl = model(ids, images)
        recon = pixel_loss(fake, images, self.recon)
        loss, logs = recon, {"recon": recon.item()}
        if kl is not None:
            numel = images[0].numel()
            beta = self.beta_at(step)
            loss = loss + beta * kl / numel
            logs.update(kl=kl.item(), beta=beta)
        if self.perceptual is not None and self.perceptual.weight > 0:
            p = self.perceptual(fake, images)
            loss, logs["perceptual"] = loss + self.perceptual.weight * p, p.item()
        return fake, loss, logs

    def gan(self, model, ids: torch.Tensor, images: torch.Tensor, z: torch.Tensor):
        """One GAN step's losses: (d_loss, g_fn) as in `matching_hinge`, for drawings from noise `z`; with
        `mode_seeking` the first half of the batch is drawn a second time (in the same pass) from fresh noise."""
        n, h = ids.shape[0], ids.shape[0] // 2 if self.mode_seeking > 0 else 0
        z2 = torch.randn_like(z[:h])
        both = model.draw(torch.cat([ids, ids[:h]]), torch.cat([z, z2])) if h else model.draw(ids, z)
        fake, again = both[:n], both[n:]
        d_loss, adv_fn = matching_hinge(model.discriminator, ids, images, fake, self.diff_augment, self.gp_weight)

        def g_fn():
            g_loss, logs = adv_fn()
            if self.recon_weight > 0:
                r = pixel_loss(fake, images, self.recon)
                g_loss, logs["recon"] = g_loss + self.recon_weight * r, r.item()
            if h:
                ms = mode_seeking_ratio(fake[:h], again, z[:h], z2)
                g_loss, logs["ms"] = g_loss + self.mode_seeking / (ms + 1e-5), ms.item()
            return g_loss, logs

        return d_loss, g_fn
