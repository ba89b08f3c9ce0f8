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
from img2text2img.vocab import START_ID

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
def word_attention(decoder, pooled: torch.Tensor, grid: torch.Tensor, ids: list[int]) -> torch.Tensor:
    """The attention weights [len(ids), cells] of one image's caption `ids` (its words, without <start>/<end>):
    row t is what the decoder attended to when it chose word t."""
    state = decoder.init_state(pooled, grid)
    prefix = torch.full((1, 1), START_ID, dtype=torch.long, device=pooled.device)
    rows = []
    for tok in ids:
        e = decoder.att_v(torch.tanh(state["att"] + decoder.att_h(state["h"])[:, None])).squeeze(-1)
        rows.append(torch.softmax(e.float(), dim=-1)[0])
        _, state = decoder.step(state, prefix)
        prefix = torch.cat([prefix, prefix.new_tensor([[tok]])], 1)
    return torch.stack(rows) if rows else pooled.new_zeros(0, grid.shape[1])


def caption_with_attention(model: Captioner, image: Image.Image, beam_size: int | None = None
                           ) -> tuple[CaptionResult, AttentionMaps | None]:
    """Caption one RGB image as `caption_loaded` does (plain encoder, the model's beam) and, when the decoder has
    attention, each word's map over the photo."""
    enc = model.ensure_encoder()
    device = next(model.decoder.parameters()).device
    with torch.inference_mode(), evaluating(model):
        x = enc.transform()(prepare_image(image))[None].to(device)
        pooled, grid = enc(x)
        result = model.decode_features(pooled, grid, beam_size=beam_size)[0]
        if not has_attention(model) or grid is None or not result.tokens:
            return result, None
        cells = grid.shape[1]
        side = math.isqrt(cells)
        if side * side != cells:  # a grid of a non-square crop: no picture to lay the weights on
            return result, None
        ids = [model.vocab.id(w) for w in result.tokens]
        alpha = word_attention(model.decoder, pooled.float(), grid.float(), ids)[:, :cells]
    return result, AttentionMaps(words=list(result.tokens), maps=alpha.cpu().tolist(), grid=(side, side),
                                 box=crop_box(image.size, getattr(enc, "preprocess", None)))
