"""The sentence side of every generator: prompts to token ids, and token ids to a sentence vector."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from img2text2img.config import MAX_PER_PROMPT, MAX_TEMPERATURE, check_number
from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.vocab import PAD_ID, SharedEmbedding, Vocabulary, pad_batch
from img2text2img.words import MAX_PROMPT_CHARS, PromptWarning, prompt_tokens  # noqa: F401  (re-exported)


class TextEncoder(nn.Module):
    """Token ids [B, T] (padded with <pad>) -> sentence vector [B, 2*H]: the LSTM's last state and its mean output.

    The last state alone forgets the start of long sentences; the mean alone loses word order; both together are
    cheap and give the decoder what it needs ("a red circle to the left of a blue square")."""

    def __init__(self, vocab_size: int, embed_dim: int, hidden: int, layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.embed = SharedEmbedding(vocab_size, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=layers, batch_first=True, dropout=dropout if layers > 1 else 0.0)
        self.out_dim = 2 * hidden

    def forward(self, ids: torch.Tensor, words: bool = False):
        """-> sentence [B, 2H]; with `words`, also the per-word outputs [B, T, H] and the real-word mask [B, T]."""
        T = ids.shape[1]
        lengths = (ids != PAD_ID).sum(1).clamp(min=1)
        x = self.embed(ids)  # B x T x E
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)  # B x T x H
        mean = out.sum(1) / lengths.unsqueeze(1).to(out.dtype)  # padded steps are zeros
        sentence = torch.cat([h[-1], mean], dim=1)  # B x 2H
        return (sentence, out, ids != PAD_ID) if words else sentence


@torch.no_grad()
def fit_sentence_mean(text: nn.Module, mean: torch.Tensor, ids: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Set the buffer `mean` to `text`'s mean sentence vector over `ids` [N, T] (training captions) and return it:
    what guidance draws away from, for every generator that has one."""
    with evaluating(text):
        total = sum(text(ids[i:i + batch_size].to(mean.device)).double().sum(0)
                    for i in range(0, ids.shape[0], batch_size))
    mean.copy_((total / max(ids.shape[0], 1)).to(mean.dtype))
    return mean


def prepare_prompts(texts: Sequence[str], vocab: Vocabulary, max_tokens: int) -> torch.Tensor:
    """Prompts -> ids [B, T] (with <start>/<end>), checked as `words.prompt_tokens` says."""
    return pad_batch([vocab.encode(tokens) for tokens in prompt_tokens(texts, vocab, max_tokens)])


class PromptedSampling:
    """What every generator kind does before it draws: prompts to token ids, `n` rows per prompt, the default
    temperature. Mixed into each kind's module (it needs `self.vocab`, `self.settings` and a config with
    `max_tokens`) so that the kinds check and read prompts the same way."""

    def prompt_ids(self, texts: Sequence[str]) -> torch.Tensor:
        if self.vocab is None:
            raise I2TError("this generator has no vocabulary attached; load it from a checkpoint")
        return prepare_prompts(texts, self.vocab, self.config.max_tokens)

    def guided(self, guidance: float):
        """This model drawing with `guidance` (see `Generator.decode`); only pixel / vae / gan generators have it."""
        raise I2TError(f"guidance is for pixel, vae and gan generators; a {self.config.kind} generator has none")

    def sampling_ids(self, prompts: Sequence[str] | str | torch.Tensor, n: int,
                     temperature: float | None) -> tuple[torch.Tensor, float]:
        """-> (ids [len(prompts) * n, T], prompt-major; the temperature to sample at, None = the settings')."""
        check_number("n", n, 1, MAX_PER_PROMPT, integer=True)
        if temperature is not None:
            check_number("temperature", temperature, 0.0, MAX_TEMPERATURE)
        ids = prompts if isinstance(prompts, torch.Tensor) else self.prompt_ids(prompts)
        return ids.repeat_interleave(n, dim=0), self.settings.temperature if temperature is None else temperature
