"""The building blocks the autoencoder and the UNet share: residual conv blocks, attention, timestep codes."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def norm(channels: int) -> nn.GroupNorm:
    # GroupNorm, not BatchNorm: a picture's output must not depend on the rest of its batch (CFG doubles the batch)
    return nn.GroupNorm(8, channels)  # (at 8 channels a group is one channel: too few for the autoencoder to learn)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """t [B] in [0, 1] -> sinusoidal code [B, dim] (as for 1000 discrete steps)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * 1000.0 * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


class ResBlock(nn.Module):
    """norm-SiLU-conv twice with a skip; with `emb_dim`, a per-picture vector (timestep + sentence) scales and
    shifts the second norm, which is how the UNet tells each block how noisy its input is."""

    def __init__(self, cin: int, cout: int, emb_dim: int = 0):
        super().__init__()
        self.norm1, self.conv1 = norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout) if emb_dim else None
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.norm2(h)
        if self.emb is not None:
            scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
            h = h * (1 + scale) + shift
        return self.skip(x) + self.conv2(F.silu(h))


class Attention(nn.Module):
    """Multi-head attention of tokens x [B, L, D] over a context [B, T, C] (x itself when None); `mask` [B, T]
    marks the context tokens that exist (the prompt's words, not padding)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim, bias=False)
        self.kv = nn.Linear(context_dim or dim, 2 * dim, bias=False)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        B, L, D = x.shape
        ctx = x if context is None else context
        q = self.q(x).view(B, L, self.heads, -1).transpose(1, 2)  # B x h x L x d
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, self.heads, -1).permute(2, 0, 3, 1, 4)  # B x h x T x d each
        att_mask = None if mask is None else mask[:, None, None, :]  # True = attend
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=att_mask)
        return self.out(out.transpose(1, 2).reshape(B, L, D))


class TransformerBlock(nn.Module):
    """Self-attention over the feature map's positions, cross-attention to the prompt's words, then an MLP (the
    latent-diffusion "spatial transformer"); the output projection starts at zero, so a fresh block is the identity."""

    def __init__(self, channels: int, word_dim: int, heads: int):
        super().__init__()
        self.norm = norm(channels)
        self.ln1, self.self_att = nn.LayerNorm(channels), Attention(channels, heads)
        self.ln2, self.cross_att = nn.LayerNorm(channels), Attention(channels, heads, word_dim)
        self.ln3 = nn.LayerNorm(channels)
        self.mlp = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x).flatten(2).transpose(1, 2)  # B x HW x C
        h = h + self.self_att(self.ln1(h))
        h = h + self.cross_att(self.ln2(h), words, mask)
        h = h + self.mlp(self.ln3(h))
        return x + self.proj(h).transpose(1, 2).reshape(B, C, H, W)
