"""Sample-and-rerank drawing: a stochastic generator draws several candidates per sentence and a captioner keeps the
one it finds the sentence most likely for.

Why: a VAE or GAN can draw many pictures for one sentence, and some are much clearer than others (a square that looks
like a square, a dog that reads as a dog). A captioner is exactly a model of "how well does this sentence describe
this picture", so its likelihood of the prompt is a natural way to pick among them (the same idea as reranking
text-to-image samples with a contrastive model). It costs `candidates` drawings and captioner passes per picture.

The reranker must not be the captioner that later grades the pictures (a round-trip judge): it would then be
choosing exactly what it is about to score. `reranked(..., judge=)` refuses a reranker whose weights are the judge's.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch

from img2text2img.errors import I2TError
from img2text2img.models import load_model, weights_sha256
from img2text2img.models.generator.images import to_pil
from img2text2img.vocab import PAD_ID


class RerankedGenerator:
    """A `Generator` that draws `candidates` samples per requested picture and keeps the reranker's favourite.

    It offers the generator's own drawing API (`generate`, `config`, `settings`, `vocab`, `prompt_ids`), so anything
    that takes a generator (round trips, the Fréchet evaluation, `i2t generate`) takes this too."""

    def __init__(self, generator, reranker, candidates: int = 8, chunk: int = 64):
        if candidates < 1:
            raise I2TError(f"candidates must be at least 1, got {candidates}")
        # a pixel generator has no noise (z_dim 0); a scene generator samples its scene, so it has no z_dim at all
        if candidates > 1 and getattr(generator.config, "z_dim", None) == 0:
            raise I2TError(f"a {generator.config.kind} generator draws one picture per sentence; "
                           "there is nothing to rerank (use a vae, gan or scene generator)")
        self.generator, self.reranker, self.candidates, self.chunk = generator, reranker, candidates, chunk
        self.config, self.settings, self.vocab = generator.config, generator.settings, generator.vocab

    def prompt_ids(self, texts: Sequence[str]) -> torch.Tensor:
        return self.generator.prompt_ids(texts)

    def texts(self, prompts: Sequence[str] | str | torch.Tensor) -> list[str]:
        """The sentences as text for the reranker: token ids (the Fréchet evaluation passes those) are read back
        through the generator's vocabulary, so words it does not know are left out."""
        if isinstance(prompts, str):
            return [prompts]
        if isinstance(prompts, torch.Tensor):
            return [" ".join(self.vocab.decode_tokens(row[row != PAD_ID][1:].tolist())) for row in prompts]
        return list(prompts)

    def scored(self, prompts: Sequence[str] | str | torch.Tensor, seed: int = 0, temperature: float | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """All candidates and their scores: images [B, candidates, 3, S, S] in [0, 1], log-probabilities
        [B, candidates]. Deterministic for a seed."""
        texts = self.texts(prompts)
        ids = prompts if isinstance(prompts, torch.Tensor) else self.generator.prompt_ids(texts)
        k = self.candidates
        images, scores = [], []
        for i in range(0, len(texts), self.chunk):  # bounded memory: chunk x k pictures at a time
            drawn = self.generator.generate(ids[i:i + self.chunk], n=k, seed=seed + i, temperature=temperature)
            wanted = [t for t in texts[i:i + self.chunk] for _ in range(k)]  # prompt-major, as drawn
            lp = self.reranker.text_logprob(to_pil(drawn), wanted)
            images.append(drawn.view(-1, k, *drawn.shape[1:]))
            scores.append(lp.view(-1, k))
        return torch.cat(images), torch.cat(scores)

    def generate(self, prompts: Sequence[str] | str | torch.Tensor, n: int = 1, seed: int = 0,
                 temperature: float | None = None, batch_size: int = 64) -> torch.Tensor:
        """Like `Generator.generate`: [len(prompts) * n, 3, S, S] in [0, 1], prompt-major; each picture is the best
        of `candidates` samples. `batch_size` is accepted for the same signature (drawing goes in chunks)."""
        if n < 1:
            raise I2TError(f"n must be at least 1, got {n}")
        texts = self.texts(prompts)
        if n > 1:  # n pictures per prompt: each is its own best-of-k, drawn from its own noise
            prompts = [t for t in texts for _ in range(n)] if not isinstance(prompts, torch.Tensor) \
                else prompts.repeat_interleave(n, dim=0)
        images, scores = self.scored(prompts, seed=seed, temperature=temperature)
        best = scores.argmax(1)
        return images[torch.arange(len(best)), best]


def reranked(generator, reranker, candidates: int = 8, judge: str | Path | None = None) -> RerankedGenerator:
    """Wrap `generator` with a reranking captioner given as a `Captioner` or a checkpoint / run folder. With `judge`
    (the folder of the captioner that will score the drawings), a reranker holding the judge's weights is refused."""
    if isinstance(reranker, (str, Path)):
        sha = weights_sha256(reranker)
        if judge is not None and sha is not None and sha == weights_sha256(judge):
            raise I2TError(f"the reranker {reranker} has the judge's weights: it would pick exactly what it then "
                           "scores; rerank with another captioner")
        reranker = load_model(reranker, kind="captioner")
    return RerankedGenerator(generator, reranker, candidates)
