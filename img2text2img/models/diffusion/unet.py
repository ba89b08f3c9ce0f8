"""The denoiser: a small UNet over the latent, told the timestep and the prompt's sentence vector through its
residual blocks and the prompt's words through cross-attention."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from img2text2img.models.diffusion.layers import ResBlock, TransformerBlock, norm, timestep_embedding


class UNet(nn.Module):
    """(z_t [B, C, h, w], t [B], sentence [B, S], words [B, T, W], mask [B, T]) -> v [B, C, h, w]."""

    def __init__(self, latent_channels: int, channels: Sequence[int], blocks: int, attention_levels: Sequence[int],
                 word_dim: int, sentence_dim: int, heads: int, time_dim: int):
        super().__init__()
        c = list(channels)
        self.time_dim = time_dim
        self.time_mlp = nn.Sequential(nn.Linear(time_dim, time_dim), nn.SiLU(), nn.Linear(time_dim, time_dim))
        self.sentence = nn.Linear(sentence_dim, time_dim)
        self.conv_in = nn.Conv2d(latent_channels, c[0], 3, padding=1)

        def stage(cin: int, cout: int, level: int) -> nn.ModuleList:
            parts = [ResBlock(cin, cout, time_dim)]
            if level in attention_levels:
                parts.append(TransformerBlock(cout, word_dim, heads))
            return nn.ModuleList(parts)

        self.down = nn.ModuleList()
        skips, ch = [c[0]], c[0]
        for lv, co in enumerate(c):
            for _ in range(blocks):
                self.down.append(stage(ch, co, lv))
                ch = co
                skips.append(ch)
            if lv < len(c) - 1:
                self.down.append(nn.ModuleList([nn.Conv2d(ch, ch, 3, stride=2, padding=1)]))
                skips.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, time_dim), TransformerBlock(ch, word_dim, heads),
                                  ResBlock(ch, ch, time_dim)])
        self.up = nn.ModuleList()
        for lv in reversed(range(len(c))):
            for _ in range(blocks + 1):
                self.up.append(stage(ch + skips.pop(), c[lv], lv))
                ch = c[lv]
            if lv:
                self.up.append(nn.ModuleList([nn.Upsample(scale_factor=2, mode="nearest"),
                                              nn.Conv2d(ch, ch, 3, padding=1)]))
        self.out = nn.Sequential(norm(ch), nn.SiLU(), nn.Conv2d(ch, latent_channels, 3, padding=1))
        nn.init.zeros_(self.out[2].weight)  # a fresh model predicts v = 0
        nn.init.zeros_(self.out[2].bias)

    @staticmethod
    def run(parts: nn.ModuleList, h: torch.Tensor, emb: torch.Tensor, words: torch.Tensor,
            mask: torch.Tensor) -> torch.Tensor:
        for m in parts:
            if isinstance(m, ResBlock):
                h = m(h, emb)
            elif isinstance(m, TransformerBlock):
                h = m(h, words, mask)
            else:
                h = m(h)
        return h

    def forward(self, z: torch.Tensor, t: torch.Tensor, sentence: torch.Tensor, words: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        emb = self.time_mlp(timestep_embedding(t, self.time_dim)) + self.sentence(sentence)  # B x E
        h = self.conv_in(z)
        hs = [h]
        for parts in self.down:
            h = self.run(parts, h, emb, words, mask)
            hs.append(h)
        h = self.run(self.mid, h, emb, words, mask)
        for parts in self.up:
            if isinstance(parts[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = self.run(parts, h, emb, words, mask)
        return self.out(h)
