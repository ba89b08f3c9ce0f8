"""A caption with the attention map of each of its words, for the page's "hover a word" view.

The captioner's searches keep no attention weights, so the caption's own words are fed back through the decoder's
step interface (teacher forcing, as the search took them) and the weights over the grid are recomputed from the
decoder's own layers at every step: the state depends only on the words before, so each map is the one the model
used when it chose that word. Only the soft-attention decoder has maps; other decoders get None.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from PIL import Image

from img2text2img.data.images import prepare_image
from img2text2img.models import evaluating
from img2text2img.models.captioner import Captioner, CaptionResult
from img2text2img.vocab import PAD_ID, START_ID

ATTENTION_LAYERS = ("att_h", "att_v", "step", "init_state")  # what the soft-attention decoder has and others lack


@dataclass
class AttentionMaps:
    words: list[str]  # the caption's words (the <end> step is left out)
    maps: list[list[float]]  # per word, its weights over the h*w grid cells, row-major (the rest went to detected words)
    grid: tuple[int, int]  # (h, w) of the encoder's feature grid
    box: tuple[float, float, float, float]  # the part of the photo the encoder saw (its centre crop): x0, y0, x1, y1 in 0..1

    def to_json(self, digits: int = 4) -> dict:
        return {"words": self.words, "grid": list(self.grid), "box": [round(v, 4) for v in self.box],
                "maps": [[round(a, digits) for a in m] for m in self.maps]}


def has_attention(model: Captioner) -> bool:
    """Whether the captioner's decoder is one soft-attention decoder (an ensemble's members are not shown)."""
    return all(hasattr(model.decoder, a) for a in ATTENTION_LAYERS)


def crop_box(size: tuple[int, int], preprocess) -> tuple[float, float, float, float]:
    """The centre square the encoder's resize + centre crop keeps of a `size` (w, h) photo, as fractions of it."""
    w, h = size
    keep = min(1.0, preprocess.image_size / preprocess.resize_size) * min(w, h) if preprocess else min(w, h)
    fx, fy = keep / w, keep / h
    return ((1 - fx) / 2, (1 - fy) / 2, (1 + fx) / 2, (1 + fy) / 2)


@torch.inference_mode()
def word_attention(decoder, pooled: torch.Tensor, grid: torch.Tensor, ids: list[list[int]]) -> list[torch.Tensor]:
    """Per image b, the attention weights [len(ids[b]), cells] of its caption `ids[b]` (words, without <start> or
    <end>): row t is what the decoder attended to when it chose word t. Images run together, shorter captions
    padded (their extra rows are dropped)."""
    B, T = len(ids), max((len(r) for r in ids), default=0)
    tokens = torch.full((B, max(T, 1)), PAD_ID, dtype=torch.long, device=pooled.device)
    for b, row in enumerate(ids):
        tokens[b, :len(row)] = torch.tensor(row, dtype=torch.long)
    state = decoder.init_state(pooled, grid)
    prefix = torch.full((B, 1), START_ID, dtype=torch.long, device=pooled.device)
    rows = []
    for t in range(T):
        e = decoder.att_v(torch.tanh(state["att"] + decoder.att_h(state["h"])[:, None])).squeeze(-1)
        rows.append(torch.softmax(e.float(), dim=-1))
        _, state = decoder.step(state, prefix)
        prefix = torch.cat([prefix, tokens[:, t:t + 1]], 1)
    alpha = torch.stack(rows, 1) if rows else pooled.new_zeros(B, 0, grid.shape[1])
    return [alpha[b, :len(row)] for b, row in enumerate(ids)]


def captions_with_attention(model: Captioner, images: list[Image.Image], beam_size: int | None = None,
                            attention: list[bool] | None = None) -> list[tuple[CaptionResult, AttentionMaps | None]]:
    """Caption RGB images together (plain encoder, the model's beam, as `caption_loaded` does for a few) and, when
    the decoder has attention, each word's map over the photo for the images whose `attention` flag is set."""
    if not images:
        return []
    enc = model.ensure_encoder()
    device = next(model.decoder.parameters()).device
    want = attention if attention is not None else [True] * len(images)
    with torch.inference_mode(), evaluating(model):
        tf = enc.transform()
        x = torch.stack([tf(prepare_image(im)) for im in images]).to(device)
        pooled, grid = enc(x)
        results = model.decode_features(pooled, grid, beam_size=beam_size)
        maps: list[AttentionMaps | None] = [None] * len(images)
        cells = grid.shape[1] if grid is not None else 0
        side = math.isqrt(cells)
        rows = [i for i, r in enumerate(results) if want[i] and r.tokens]
        # a grid of a non-square crop has no picture to lay the weights on
        if has_attention(model) and rows and side * side == cells:
            ids = [[model.vocab.id(w) for w in results[i].tokens] for i in rows]
            alphas = word_attention(model.decoder, pooled[rows].float(), grid[rows].float(), ids)
            for i, alpha in zip(rows, alphas):
                maps[i] = AttentionMaps(words=list(results[i].tokens), maps=alpha[:, :cells].cpu().tolist(),
                                        grid=(side, side), box=crop_box(images[i].size, getattr(enc, "preprocess", None)))
    return list(zip(results, maps))


def caption_with_attention(model: Captioner, image: Image.Image, beam_size: int | None = None
                           ) -> tuple[CaptionResult, AttentionMaps | None]:
    """One image's caption and its words' maps (see `captions_with_attention`)."""
    return captions_with_attention(model, [image], beam_size=beam_size)[0]
