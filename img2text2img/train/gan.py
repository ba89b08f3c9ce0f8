"""What training a GAN needs beyond its losses: an exponential moving average of the generator's weights, and the
collapse watch (how varied 8 drawings of one prompt are, against 8 real photos of one theme).

A GAN's raw weights oscillate with the game; their average draws better and is what a run saves and samples. A
collapsing GAN draws one picture whatever the noise: the watch catches it at a checkpoint instead of after hours.
"""
from __future__ import annotations

import contextlib
import json
import re
import warnings
from collections import Counter
from pathlib import Path

import torch
from torch import nn

from img2text2img.errors import I2TError
from img2text2img.metrics.image import encoder_features
from img2text2img.models.encoders import create_encoder
from img2text2img.models.generator import PromptWarning
from img2text2img.train.engine import TrainTask
from img2text2img.train.generator_data import write_samples

# the raw (training) weights of the averaged parts ride along in a checkpoint under this prefix, so a run resumes
RAW_PREFIX = "raw."
DIVERSITY_SEEDS = 8
STOPWORDS = {"a", "an", "the", "of", "in", "on", "at", "is", "are", "and", "with", "to", "its", "his", "her", "into",
             "two", "one", "some", "while", "for", "by", "from", "their", "through", "near"}


class WeightEMA:
    """ema <- decay * ema + (1 - decay) * raw over the generator's floating-point weights, after each of its steps;
    buffers (BatchNorm statistics) are copied, not averaged. The discriminator is never averaged."""

    def __init__(self, model: nn.Module, decay: float, skip: str = "discriminator."):
        if not 0.0 <= decay < 1.0:
            raise I2TError(f"ema must be in [0, 1), not {decay}")
        self.decay, self.skip = decay, skip
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith(skip)}

    @torch.no_grad()
    def update(self, model: nn.Module, step: int | None = None) -> None:
        """After the generator's step number `step`: early on the decay is lower ((1 + t) / (10 + t)), so a short
        run's average is not stuck at the random initial weights."""
        decay = self.decay if step is None else min(self.decay, (1 + step) / (10 + step))
        params = dict(model.named_parameters())
        for k, v in model.state_dict().items():
            if k in self.shadow:
                if self.shadow[k].device != v.device:  # the model moved (fit puts it on its device)
                    self.shadow[k] = self.shadow[k].to(v.device)
                if k in params and v.is_floating_point():
                    self.shadow[k].lerp_(v.detach(), 1.0 - decay)
                else:
                    self.shadow[k].copy_(v)

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Within: `model` holds the averaged weights; after: its raw ones again."""
        raw = {k: v.detach().clone() for k, v in model.state_dict().items() if k in self.shadow}
        model.load_state_dict(self.shadow, strict=False)
        try:
            yield model
        finally:
            model.load_state_dict(raw, strict=False)

    def checkpoint_state(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The state a checkpoint keeps: averaged weights under the model's own names (what loading draws with),
        the raw ones under `RAW_PREFIX` (what resuming trains on)."""
        state = model.state_dict()
        out = {**state, **{k: v.clone() for k, v in self.shadow.items()}}
        out.update({RAW_PREFIX + k: state[k] for k in self.shadow})
        return out

    def load_checkpoint_state(self, model: nn.Module, state: dict[str, torch.Tensor]) -> None:
        """Inverse of `checkpoint_state`; a checkpoint without raw weights (not EMA-trained) starts the average
        at its weights."""
        raw = {k[len(RAW_PREFIX):]: v for k, v in state.items() if k.startswith(RAW_PREFIX)}
        plain = {k: v for k, v in state.items() if not k.startswith(RAW_PREFIX)}
        model.load_state_dict({**plain, **raw}, strict=True)
        for k in self.shadow:
            self.shadow[k] = plain[k].detach().clone().to(self.shadow[k].device, self.shadow[k].dtype)


def mean_pairwise_distance(features: torch.Tensor) -> float:
    """Mean cosine distance (1 - cos) over all pairs of rows: 0 when every picture looks the same to the encoder."""
    f = torch.nn.functional.normalize(features.float(), dim=1)
    n = f.shape[0]
    if n < 2:
        return 0.0
    cos = f @ f.T
    return float((1 - cos)[~torch.eye(n, dtype=torch.bool)].mean())


def theme_of(prompt: str, captions: list[list[str]], n: int = DIVERSITY_SEEDS) -> tuple[str, list[int]]:
    """The word of `prompt` that the most training pictures' captions share (at least `n` of them; else the
    most common such word) and the first `n` pictures whose captions hold it: real photos of one theme."""
    words = lambda s: set(re.findall(r"[a-z]+", s.lower())) - STOPWORDS
    wanted = words(prompt)
    counts = Counter(w for caps in captions for w in set().union(*map(words, caps)) & wanted)
    if not counts:
        return "", list(range(min(n, len(captions))))
    word = counts.most_common(1)[0][0]
    picked = [i for i, caps in enumerate(captions) if any(word in words(c) for c in caps)][:n]
    return word, picked


class DiversityWatch:
    """diversity = mean pairwise distance in `encoder` features between DIVERSITY_SEEDS drawings of `prompt`,
    relative to that of DIVERSITY_SEEDS training photos of the prompt's theme (1 = as varied as real photos)."""

    def __init__(self, prompt: str, train_images: torch.Tensor, train_captions: list[list[str]],
                 encoder: str = "mobilenet_v3_small", floor: float = 0.0, check_from: int = 0):
        self.prompt, self.floor, self.check_from = prompt, floor, check_from
        # small_cnn (tests) has no weights file; every other encoder is measured with its ImageNet weights
        self.encoder = create_encoder(encoder, pretrained=encoder != "small_cnn").eval()
        self.word, idx = theme_of(prompt, train_captions)
        real = train_images[idx].float() / 255.0
        self.real = mean_pairwise_distance(encoder_features(real, self.encoder))

    @torch.no_grad()
    def measure(self, generator) -> dict[str, float]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PromptWarning)
            drawn = generator.generate([self.prompt], n=DIVERSITY_SEEDS, seed=0)
        fake = mean_pairwise_distance(encoder_features(drawn, self.encoder))
        return {"diversity": round(fake / max(self.real, 1e-9), 4), "diversity_drawn": round(fake, 5),
                "diversity_real": round(self.real, 5)}

    def check(self, result: dict[str, float], step: int) -> None:
        """Stop the run (a one-line I2TError) when the diversity is below the floor, from step `check_from` on: a
        fresh generator has not learned to use its noise yet (a tiny one starts near 0.001)."""
        if self.floor > 0 and step >= self.check_from and result["diversity"] < self.floor:
            raise I2TError(f"the GAN collapsed at step {step}: {DIVERSITY_SEEDS} drawings of {self.prompt!r} are "
                           f"{result['diversity']:.3f} as varied as real photos of {self.word or 'one theme'!r} "
                           f"(--min-diversity {self.floor}); see the run's samples/; raise --mode-seeking or "
                           "--gp-weight, or lower --lr")


def adversarial_step(m, ids: torch.Tensor, real: torch.Tensor, objective, ema: WeightEMA | None,
                     diversity: dict, ctx, step: int) -> dict[str, float]:
    """One GAN update, the same for the pixel and the latent GAN: the discriminator on `real` (pictures or latents)
    against a fresh draw, then the generator, then the EMA; the logs carry the last diversity figure."""
    z = torch.randn(ids.shape[0], m.config.z_dim, device=ids.device)
    d_loss, g_fn = objective.gan(m, ids, real, z)
    ctx.backward_step(d_loss, "disc")
    g_loss, logs = g_fn()
    ctx.backward_step(g_loss, "gen")
    if ema is not None:
        ema.update(m, step)
    return {"loss": float(g_loss.detach()), **logs, **{k: v for k, v in diversity.items() if k == "diversity"}}


def drawing_weights(ema: WeightEMA | None, model: nn.Module):
    """A context in which `model` holds the weights a checkpoint saves: the EMA's when there is one."""
    return ema.applied(model) if ema is not None else contextlib.nullcontext(model)


class DrawingTask(TrainTask):
    """What the generator trainings (pixel / VAE / GAN, and the latent GAN) share around their steps: checkpoints
    hold the EMA weights when there is an EMA (raw ones kept for an exact resume) and the text encoder's mean
    sentence, and each checkpoint writes a sample grid and, with a watch, the diversity figure. Subclasses set
    `model`, `ema`, `mean_ids`, `prompts`, `watch` and `diversity`."""

    def drawing(self):
        """Within: the model draws with the weights a checkpoint saves (the EMA's, when there is one)."""
        return drawing_weights(self.ema, self.model)

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        # Every checkpoint carries the mean sentence of its own text encoder, so guidance works on any of them;
        # it is never trained on, so fitting it here changes nothing in the run.
        if self.ema is None:
            self.model.fit_sentence_mean(self.mean_ids)
            return self.model.state_dict()
        with self.drawing():
            self.ema.shadow["sentence_mean"].copy_(self.model.fit_sentence_mean(self.mean_ids))
        return self.ema.checkpoint_state(self.model)

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        if self.ema is not None:
            self.ema.load_checkpoint_state(self.model, state)
        else:  # a run resumed without --ema trains on on the raw weights
            raw = {k[len(RAW_PREFIX):]: v for k, v in state.items() if k.startswith(RAW_PREFIX)}
            self.model.load_state_dict({**{k: v for k, v in state.items() if not k.startswith(RAW_PREFIX)}, **raw})

    def on_checkpoint(self, path: Path, step: int) -> None:
        with self.drawing():
            write_samples(self.model, self.prompts, path, step)
            if self.watch is None or self.diversity.get("step") == step:  # best/ of the same step: measured
                return
            self.diversity = {"step": step, **self.watch.measure(self.model)}
        line = {**self.diversity, "prompt": self.watch.prompt, "theme": self.watch.word}
        with open(Path(path).parent / "diversity.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
        self.watch.check(self.diversity, step)
