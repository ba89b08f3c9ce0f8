"""Text-to-image generator: a sentence in, a 64x64 RGB picture out, three ways.

All variants share one text encoder (SharedEmbedding -> 2-layer LSTM -> sentence vector) and one upsampling
convolutional decoder; they differ only in what the decoder is given besides the sentence and how it is trained:

- `pixel`: decoder(sentence) trained with a pixel loss (MSE or L1). Deterministic, draws the average picture for a
  sentence, so it is sharp only where the sentence pins the picture down.
- `vae`:   conditional VAE. A conv image encoder gives mu, log sigma^2 of z given (image, sentence); the decoder draws
  from (z, sentence); loss = reconstruction + beta * KL with a linear warm-up. Sampling uses z ~ N(0, I), so the
  model can commit to one layout instead of averaging all layouts a sentence allows.
- `gan`:   conditional DCGAN: decoder(z, sentence) against a spectral-norm discriminator that sees (image, sentence)
  and is matching-aware (a real image with a mismatched sentence is a negative); hinge loss.

Any of pixel / vae can draw in RGB (a colour per pixel under a pixel loss) or from a palette (`output="palette"`:
logits over K colours fitted to the training pictures, cross-entropy, drawn as each pixel's most likely colour), which
keeps edges hard where an RGB decoder averages the outlines it is unsure of. With `decoder="layers"` the picture is
instead a background colour and a few flat-coloured masks, one per thing the prompt names (`LayeredDecoder`).

Any of pixel / vae / gan can draw with `guidance` g > 1: from mean + g * (s - mean) instead of the sentence vector
s, the mean being that of the training captions (stored with every checkpoint), so what sets a sentence apart from
the average one is drawn louder (`Generator._decode`).

The public entry points are `Generator.generate(prompts, n, seed)` (a tensor in [0, 1], deterministic for a seed
through a private `torch.Generator`) and `generate_images(prompts, model, n, seed)` (PIL images; `model=None` loads
the small generator shipped in `img2text2img/pretrained/generator/`).
"""
from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from img2text2img.config import config_from_dict, config_to_dict
from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.registry import Registry
from img2text2img.vocab import PAD_ID, SharedEmbedding, Vocabulary, pad_batch, tokenize

KINDS = ("pixel", "vae", "gan")
MAX_PROMPT_CHARS = 10_000
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "pretrained" / "generator"


class PromptWarning(UserWarning):
    """A prompt was used but not as written (unknown words, truncated); the CLI shows these as warnings."""


@dataclass
class GeneratorConfig:
    kind: str = "pixel"  # pixel | vae | gan
    vocab_size: int = 0  # must equal len(vocab)
    embed_dim: int = 64  # word vector size (50 to initialise from GloVe 6B-50d)
    text_hidden: int = 128  # LSTM hidden size; the sentence vector is 2 * text_hidden (last state + mean)
    text_layers: int = 2
    max_tokens: int = 40  # prompts longer than this many words are truncated (with a warning)
    z_dim: int = 0  # latent/noise size for vae and gan; 0 for pixel
    image_size: int = 64
    channels: tuple[int, ...] = (128, 64, 32, 16)  # decoder widths at 4, 8, 16, 32 px (a pixel shuffle makes 64)
    enc_channels: tuple[int, ...] = (16, 32, 64, 128)  # vae image encoder / gan discriminator widths, 64 -> 4
    recon_loss: str = "mse"  # mse | l1 (pixel and vae)
    beta: float = 1.0  # vae: KL weight (KL summed over z, divided by the pixel count, like the mean pixel loss)
    kl_warmup: int = 1000  # vae: steps over which beta ramps up linearly from 0
    recon_weight: float = 0.0  # gan: optional pixel-loss term for the generator (0 = pure GAN)
    dropout: float = 0.0  # between LSTM layers
    film: bool = False  # condition every decoder stage on the sentence (FiLM); see ImageDecoder
    sample_temperature: float = 1.0  # vae/gan: default scale of z ~ N(0, I) when drawing (lower = cleaner, less varied)
    guidance: float = 1.0  # drawing: the sentence vector is taken this many times as far from the mean sentence (_decode)
    fg_weight: float = 0.0  # extra pixel-loss weight where a pixel differs from the image's border colour (see _recon)
    word_attention: int = 0  # the first N decoder stages (8 px, 16 px, ..) attend over the prompt's words (WordAttention)
    refine: int = 0  # the last N decoder stages get a residual 3x3 conv after their upsampling (ImageDecoder)
    prior: str = "standard"  # vae: "standard" z ~ N(0, I), or "learned" z ~ N(mu(s), sigma(s)) from the sentence
    adv_weight: float = 0.0  # vae: weight of a matching-aware discriminator's hinge loss on its drawings (VAE-GAN)
    z_dropout: float = 0.0  # vae: fraction of training drawings made from the prior's mean instead of the posterior's z
    sentence_dropout: float = 0.0  # vae: fraction of training sentences replaced by the batch's mean sentence (forward)
    leak: float = 0.0  # negative slope of the decoder's activations (0 = ReLU); see ImageDecoder
    output: str = "rgb"  # rgb: a colour per pixel (pixel loss) | palette: a choice among palette colours (see below)
    palette_size: int = 16  # palette output: colours in the palette, fitted to the training images (fit_palette)
    shift_tolerance: int = 0  # pixel/vae: the pixel loss is taken against the real image shifted by up to this
    # many pixels, whichever shift fits the drawing best (see _recon)
    decoder: str = "conv"  # conv: one decoder draws the whole picture | layers: one layer per thing named (LayeredDecoder)
    layers: int = 3  # layers decoder: how many layers (things a prompt can name) over the background
    ordinal: bool = False  # layers decoder: layer k takes the k-th thing the prompt names (LayeredDecoder)
    window: float = 0.0  # layers decoder: > 0 keeps each layer within this radius (fraction of the side) of its peak
    masks: str = "conv"  # layers decoder: conv (a conv net draws each layer's mask) | sprites (SpriteMasks)
    sprites: int = 16  # sprites masks: how many template masks the layers choose among
    count_weight: float = 0.0  # ordinal layers: weight of (things read from the prompt - shapes in the picture)^2

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise I2TError(f"unknown generator kind {self.kind!r}; choose from: {', '.join(KINDS)}")
        if self.kind != "pixel" and self.z_dim <= 0:
            raise I2TError(f"a {self.kind} generator needs z_dim > 0")
        if self.kind == "pixel" and self.z_dim != 0:
            raise I2TError("a pixel generator has no latent code: z_dim must be 0 (use vae or gan for one)")
        n_up = int(math.log2(self.image_size // 4))
        if 4 * 2**n_up != self.image_size or len(self.channels) != n_up:
            raise I2TError(f"image_size {self.image_size} needs {n_up} decoder channel widths (4 px doubling up to S/2)")
        if not 0 <= self.word_attention <= len(self.channels) - 1:
            raise I2TError(f"word_attention must be between 0 and {len(self.channels) - 1}")
        if not 0 <= self.refine <= len(self.channels) - 1:
            raise I2TError(f"refine must be between 0 and {len(self.channels) - 1}")
        if self.prior not in ("standard", "learned"):
            raise I2TError(f"prior must be standard or learned, not {self.prior!r}")
        if self.kind != "vae" and (self.prior != "standard" or self.adv_weight):
            raise I2TError("a learned prior and adv_weight are vae options (a gan is adversarial already)")
        if self.adv_weight < 0:
            raise I2TError("adv_weight must be >= 0")
        if self.guidance < 0:
            raise I2TError(f"guidance must be >= 0, not {self.guidance}")
        if not 0.0 <= self.z_dropout < 1.0:
            raise I2TError(f"z_dropout must be in [0, 1), not {self.z_dropout}")
        if self.kind != "vae" and self.z_dropout:
            raise I2TError("z_dropout is a vae option (the other kinds have no posterior to drop)")
        if not 0.0 <= self.sentence_dropout < 1.0:
            raise I2TError(f"sentence_dropout must be in [0, 1), not {self.sentence_dropout}")
        if self.sentence_dropout and (self.kind != "vae" or self.word_attention):
            raise I2TError("sentence_dropout is an option of a vae without word attention (its code must be able to "
                           "carry the whole picture when the sentence is dropped)")
        if not 0.0 <= self.leak < 1.0:
            raise I2TError(f"leak must be in [0, 1), not {self.leak}")
        if self.recon_loss not in ("mse", "l1"):
            raise I2TError(f"recon_loss must be mse or l1, not {self.recon_loss!r}")
        if self.output not in ("rgb", "palette"):
            raise I2TError(f"output must be rgb or palette, not {self.output!r}")
        if self.output == "palette" and self.kind == "gan":
            raise I2TError("palette output is trained by its cross-entropy; a gan has no such loss (use rgb)")
        if not 2 <= self.palette_size <= 256:
            raise I2TError(f"palette_size must be between 2 and 256, not {self.palette_size}")
        if self.decoder not in ("conv", "layers"):
            raise I2TError(f"decoder must be conv or layers, not {self.decoder!r}")
        if self.decoder == "layers" and (self.output != "rgb" or self.word_attention):
            raise I2TError("a layers decoder draws rgb layers bound to words already (no palette, no word_attention)")
        if self.masks not in ("conv", "sprites"):
            raise I2TError(f"masks must be conv or sprites, not {self.masks!r}")
        if self.masks == "sprites" and (self.decoder != "layers" or not self.ordinal):
            raise I2TError("sprite masks are an ordinal layers decoder's (decoder='layers', ordinal=True)")
        if self.count_weight < 0 or (self.count_weight and not (self.decoder == "layers" and self.ordinal)):
            raise I2TError("count_weight is an ordinal layers decoder's (decoder='layers', ordinal=True), >= 0")
        if not 1 <= self.sprites <= 256:
            raise I2TError(f"sprites must be between 1 and 256, not {self.sprites}")
        if not 1 <= self.layers <= 8:
            raise I2TError(f"layers must be between 1 and 8, not {self.layers}")
        if not 0 <= self.shift_tolerance <= 8:
            raise I2TError(f"shift_tolerance must be between 0 and 8 pixels, not {self.shift_tolerance}")


# ---------------------------------------------------------------------------------------------------------------
# Presets, built by name


GENERATORS: Registry = Registry("generator preset")


def _preset(name: str, **kw):
    GENERATORS.add(name, lambda **over: GeneratorConfig(**{**kw, **over}))


_preset("pixel", kind="pixel", film=True)
_preset("vae", kind="vae", z_dim=32, film=True)
_preset("gan", kind="gan", z_dim=64, film=True)
_preset("vae-attn", kind="vae", z_dim=32, film=True, word_attention=2, fg_weight=4.0)
_preset("pixel-attn", kind="pixel", film=True, word_attention=2, fg_weight=4.0)
_preset("vae-attn-refine", kind="vae", z_dim=32, film=True, word_attention=2, fg_weight=4.0, refine=1,
        channels=(128, 64, 32, 32))
_preset("vae-layers", kind="vae", z_dim=8, film=True, leak=0.2, prior="learned", beta=2.0, fg_weight=4.0,
        decoder="layers")
_preset("vae-sprites", kind="vae", z_dim=8, film=True, leak=0.2, prior="learned", beta=2.0, fg_weight=4.0,
        decoder="layers", ordinal=True, masks="sprites")
_TINY = dict(film=True, embed_dim=16, text_hidden=32, channels=(32, 32, 16, 8), enc_channels=(8, 16, 16, 32))
_preset("pixel-tiny", kind="pixel", **_TINY)
_preset("vae-tiny", kind="vae", z_dim=8, kl_warmup=10, **_TINY)
_preset("gan-tiny", kind="gan", z_dim=8, **_TINY)
_preset("vae-attn-tiny", kind="vae", z_dim=8, kl_warmup=10, word_attention=2, **_TINY)
_preset("vae-attn-refine-tiny", kind="vae", z_dim=8, kl_warmup=10, word_attention=2, refine=1, **_TINY)
_preset("vae-layers-tiny", kind="vae", z_dim=8, kl_warmup=10, prior="learned", decoder="layers", leak=0.2, **_TINY)
_preset("vae-sprites-tiny", kind="vae", z_dim=8, kl_warmup=10, prior="learned", decoder="layers", ordinal=True,
        masks="sprites", sprites=8, leak=0.2, **_TINY)


def list_generators() -> list[str]:
    return GENERATORS.names()


def generator_config(name: str, **overrides) -> GeneratorConfig:
    """A preset config by name (`pixel`, `vae`, `gan`, `*-tiny`), fields overridden by keyword."""
    return GENERATORS.get(name)(**overrides)


def create_generator(name: str, vocab: Vocabulary, **overrides) -> Generator:
    """A fresh (untrained) generator from a preset, sized for `vocab`."""
    return Generator(generator_config(name, vocab_size=len(vocab), **overrides), vocab=vocab)


# ---------------------------------------------------------------------------------------------------------------
# Building blocks


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
        B, T = ids.shape
        lengths = (ids != PAD_ID).sum(1).clamp(min=1)
        x = self.embed(ids)  # B x T x E
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, (h, _) = self.lstm(packed)
        out, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)  # B x T x H
        mean = out.sum(1) / lengths.unsqueeze(1).to(out.dtype)  # padded steps are zeros
        sentence = torch.cat([h[-1], mean], dim=1)  # B x 2H
        return (sentence, out, ids != PAD_ID) if words else sentence


class WordAttention(nn.Module):
    """Each position of a decoder feature map looks up the words of the prompt and adds what it finds.

    A sentence vector squeezes "a small blue star above a large orange star" into one code, and a 4x4 start map
    must then untangle which colour goes where. Letting every position query the words directly (queries from the
    features plus a learned position code, keys and values from the text LSTM's per-word outputs) binds words to
    places, the idea behind AttnGAN. The output projection starts at zero, so a fresh model draws as without it."""

    def __init__(self, channels: int, word_dim: int, side: int, dim: int = 64):
        super().__init__()
        self.q = nn.Conv2d(channels, dim, 1)
        self.pos = nn.Parameter(torch.randn(1, dim, side, side) * 0.1)
        self.k = nn.Linear(word_dim, dim)
        self.v = nn.Linear(word_dim, dim)
        self.out = nn.Conv2d(dim, channels, 1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.scale = dim ** -0.5

    def forward(self, x: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, _, h, w = x.shape
        q = (self.q(x) + self.pos).flatten(2).transpose(1, 2)  # B x hw x d
        att = torch.bmm(q, self.k(words).transpose(1, 2)) * self.scale  # B x hw x T
        att = att.masked_fill(~mask[:, None, :], float("-inf")).softmax(-1)
        ctx = torch.bmm(att, self.v(words)).transpose(1, 2).reshape(B, -1, h, w)  # B x d x h x w
        return x + self.out(ctx)


class ImageDecoder(nn.Module):
    """Vector [B, D] -> image [B, 3, S, S] in [0, 1] (or, with `logits` K > 0, raw logits [B, K, S, S]: a palette
    generator's per-pixel choice among K colours, a layer's mask).

    dense -> C0 x 4 x 4 -> (2x transposed conv, BN, ReLU) per stage up to S/2 -> 3x3 conv to 3*4 channels ->
    pixel shuffle to S. The last, most expensive doubling is a free reshuffle of channels into pixels, which keeps
    edges sharp (unlike a bilinear upsample) at a quarter of the cost of a full-resolution conv stage.

    With `film`, each stage's BatchNorm output is scaled and shifted per channel by the conditioning vector
    (x * (1 + gamma(v)) + beta(v)), so words like "red" reach every layer directly instead of only through the
    4x4 map; on shapes this is what makes the colours appear within a few hundred steps."""

    def __init__(self, in_dim: int, channels: Sequence[int], film: bool = False, word_dim: int = 0,
                 word_attention: int = 0, refine: int = 0, leak: float = 0.0, logits: int = 0):
        super().__init__()
        self.logits = logits  # > 0: that many per-pixel logits instead of RGB
        c0 = channels[0]
        self.leak = leak
        self.fc = nn.Sequential(nn.Linear(in_dim, c0 * 16))  # a Sequential so checkpoints keep the key "fc.0"
        self.c0 = c0
        # A stride-2 4x4 transposed conv upsamples and mixes in one op: 16 MACs per input pixel and channel pair,
        # against 36 for nearest-upsample + 3x3 conv; on a CPU that difference is the training budget.
        self.ups = nn.ModuleList(nn.ConvTranspose2d(ci, co, 4, stride=2, padding=1, bias=False) for ci, co in zip(channels[:-1], channels[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(co) for co in channels[1:])
        self.films = nn.ModuleList(nn.Linear(in_dim, 2 * co) for co in channels[1:]) if film else None
        if film:
            for f in self.films:
                nn.init.zeros_(f.weight)
                nn.init.zeros_(f.bias)
        self.attend = nn.ModuleList(WordAttention(co, word_dim, 8 * 2**i)
                                    for i, co in enumerate(channels[1:1 + word_attention]))
        # A transposed conv alone gives each output pixel a fixed 2x2 pattern of taps; drawing a star's points or a
        # triangle's corner needs a few pixels of neighbourhood at full detail, hence a residual 3x3 conv per late
        # stage (BN and the last layer start at zero, so a fresh block is the identity).
        n_stages = len(channels) - 1
        self.refine_from = n_stages - refine
        self.refiners = nn.ModuleList(_Refine(co, leak) for co in channels[1 + self.refine_from:])
        self.to_rgb = nn.Conv2d(channels[-1], (logits or 3) * 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, v: torch.Tensor, words: torch.Tensor | None = None, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = _activate(self.fc(v), self.leak).view(v.shape[0], self.c0, 4, 4)  # B x C0 x 4 x 4
        for i, (up, norm) in enumerate(zip(self.ups, self.norms)):
            x = norm(up(x))  # B x C_i x 2s x 2s
            if self.films is not None:
                gamma, beta = self.films[i](v)[:, :, None, None].chunk(2, dim=1)
                x = x * (1 + gamma) + beta
            x = _activate(x, self.leak)
            if i < len(self.attend):
                x = self.attend[i](x, words, mask)
            if i >= self.refine_from:
                x = self.refiners[i - self.refine_from](x)
        out = self.shuffle(self.to_rgb(x))  # B x 3 x S x S, or B x K x S x S palette logits
        return out if self.logits else torch.sigmoid(out)


class Layers(NamedTuple):
    """A `LayeredDecoder`'s output: per-pixel logits of which layer shows [B, L+1, S, S] (0 = the background) and
    each layer's one colour [B, L+1, 3] in [0, 1]."""

    logits: torch.Tensor
    colours: torch.Tensor
    objectness: torch.Tensor | None = None  # ordinal: each word's "names a thing" score [B, T] (0 at padding)

    def soft(self) -> torch.Tensor:
        """The expected picture [B, 3, S, S]: what the pixel loss is taken of, so masks get a gradient at edges."""
        return torch.einsum("blhw,blc->bchw", self.logits.softmax(1), self.colours.to(self.logits.dtype))

    def hard(self) -> torch.Tensor:
        """Each pixel in the colour of its most likely layer [B, 3, S, S]: hard edges, flat fills."""
        B, _, H, W = self.logits.shape
        idx = self.logits.argmax(1).flatten(1)  # B x HW
        picked = torch.gather(self.colours, 1, idx[..., None].expand(-1, -1, 3))  # B x HW x 3
        return picked.transpose(1, 2).reshape(B, 3, H, W)


class LayeredDecoder(nn.Module):
    """(sentence [+ z] vector [B, D], the prompt's words) -> `Layers`: a background colour and L layers, each one
    flat colour under a mask, composed by a per-pixel softmax over the layers.

    Why: one decoder drawing "a small red star to the left of a large blue circle" must bind, at every position,
    which of the named shapes belongs there; on shapes the single-decoder models read back one-shape prompts well
    and lose most of their round trip on two-shape ones, whose shapes they draw as blobs of the wrong kind. Here L
    learned slot queries first take their words (a small transformer decoder over the text LSTM's per-word outputs,
    self-attention letting the slots share them out), then one shared conv decoder draws each slot's mask on its
    own, as it would a one-shape picture; the slot's colour and the background's are single RGB values, so fills
    are flat by construction."""

    def __init__(self, in_dim: int, word_dim: int, channels: Sequence[int], layers: int = 3, slot_dim: int = 64,
                 film: bool = True, refine: int = 0, leak: float = 0.0, ordinal: bool = False, window: float = 0.0,
                 masks: str = "conv", sprites: int = 16, side: int = 64):
        super().__init__()
        self.layers = layers
        self.window = window
        self.nhead = 4
        # ordinal: each word gets a learned "names a thing" score o_t; slot k's attention is pushed towards words
        # where the running count of things named reaches k + 1 (the k-th noun, whose LSTM state has read its
        # adjectives), so slots take the things named in order instead of having to discover a way to share them.
        self.objectness = nn.Linear(word_dim, 1) if ordinal else None
        if ordinal:  # start with few words counted (o ~ 0.12): a score of 0.5 everywhere counts every other word as
            # a thing named, all layers are then present, attention settles on fixed word offsets and o never learns
            nn.init.constant_(self.objectness.bias, -2.0)
        self.queries = nn.Parameter(torch.randn(layers, slot_dim) * 0.5)
        self.cond = nn.Linear(in_dim, slot_dim)
        self.words = nn.Linear(word_dim, slot_dim)
        block = nn.TransformerDecoderLayer(slot_dim, nhead=self.nhead, dim_feedforward=2 * slot_dim, dropout=0.0,
                                           batch_first=True)
        self.binder = nn.TransformerDecoder(block, num_layers=2)
        self.mask = ImageDecoder(in_dim + slot_dim, channels, film=film, refine=refine, leak=leak, logits=1)
        # A sprite's shape is chosen from the word that names its thing alone: given z as well, the VAE's code
        # (which has seen the picture) told the shape, and drawings from the prior then picked it at random.
        self.sprite = SpriteMasks(word_dim, side, sprites) if masks == "sprites" else None
        # A layer's colour is read from its slot alone: given the sentence too, the easy fit is the colour of the
        # whole prompt, the blend of all the colours named, the same for every layer.
        self.colour = nn.Linear(slot_dim, 3)
        self.background = nn.Linear(in_dim, 3)

    def forward(self, v: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> Layers:
        B, L = v.shape[0], self.layers
        slots = self.queries.unsqueeze(0) + self.cond(v).unsqueeze(1)  # B x L x d
        bias = present = None
        if self.objectness is not None:
            o = torch.sigmoid(self.objectness(words).squeeze(2)) * mask  # B x T
            count = o.cumsum(1)  # things named up to and including word t
            k = torch.arange(1, L + 1, device=v.device, dtype=o.dtype)[None, :, None]  # 1 x L x 1
            bias = torch.log(o + 1e-4)[:, None, :] - 4.0 * (count[:, None, :] - k) ** 2  # B x L x T
            # Layer k shows only if the prompt names at least k things: without this gate the spare layers of a
            # one-shape prompt draw copies of its shape elsewhere (their attention falls on the only noun there is).
            present = (count[:, -1:] - k[:, :, 0] + 1).clamp(0, 1)  # B x L
            bias = bias.masked_fill(~mask[:, None, :], float("-inf"))
            pointer = bias.softmax(2)  # B x L x T: which word names layer k's thing
            bias = bias.repeat_interleave(self.nhead, 0)
        slots = self.binder(slots, self.words(words), memory_mask=bias,
                            memory_key_padding_mask=None if bias is not None else ~mask)  # B x L x d
        per_slot = torch.cat([v.unsqueeze(1).expand(-1, L, -1), slots], 2).flatten(0, 1)  # BL x (D + d)
        drawn = self.mask(per_slot)  # BL x 1 x S x S mask logits
        if self.sprite is not None:
            named = torch.einsum("blt,btd->bld", pointer, words).flatten(0, 1)  # BL x word_dim
            drawn = self.sprite(named, drawn)
        masks = drawn.view(B, L, *drawn.shape[2:])
        if self.window > 0:
            masks = masks - self._outside_window(masks)
        if present is not None:
            # soft in training (so the count learns); when drawing, a layer is on or off: a faint spare layer
            # still wins the pixels where its mask is confident and draws a shape the prompt never named
            gate = torch.log(present + 1e-4) if self.training else torch.where(present >= 0.5, 0.0, -1e4)
            masks = masks + gate.to(masks.dtype)[:, :, None, None]
        logits = torch.cat([masks.new_zeros(B, 1, *masks.shape[2:]), masks], 1)
        colours = torch.cat([self.background(v).unsqueeze(1), self.colour(slots)], 1)
        return Layers(logits, torch.sigmoid(colours), None if self.objectness is None else o)

    def _outside_window(self, masks: torch.Tensor) -> torch.Tensor:
        """Penalty [B, L, S, S] on a layer's logits beyond `window` of its peak (the soft-argmax of its own logits,
        held fixed): one layer, one thing. Without it a layer unsure where its shape goes draws it at two or three
        of the places it might be, and the judge counts shapes the prompt never named."""
        S = masks.shape[-1]
        with torch.no_grad():
            pos = (torch.arange(S, device=masks.device, dtype=torch.float32) + 0.5) / S
            p = masks.float().flatten(2).softmax(-1).view_as(masks)  # B x L x S x S
            cy = (p.sum(3) * pos).sum(2)[:, :, None, None]
            cx = (p.sum(2) * pos).sum(2)[:, :, None, None]
            dist = ((pos[None, None, :, None] - cy) ** 2 + (pos[None, None, None, :] - cx) ** 2).sqrt()
            return (400.0 * F.relu(dist - self.window) ** 2).to(masks.dtype)


class SpriteMasks(nn.Module):
    """(layer vectors [N, D], the layer's conv mask logits [N, 1, S, S]) -> mask logits [N, 1, S, S]: one of K
    template masks, put where the conv mask is (its centroid) at the size its area says.

    Why: a conv net drawing each mask has to learn every shape again at every place and size; on shapes its stars,
    crosses and triangles stayed blobs after thousands of steps, and the judge read them as circles and diamonds.
    A template is one shape cut from the pictures, and moving or scaling it keeps its corners. The conv mask still
    says where and how big (it learns that quickly, and a sprite placed by its own regression gets no gradient
    towards a place it does not yet overlap). The templates are cut from the training
    pictures (fit_sprites) and held; the choice among them is hard, straight-through in training, so a layer draws
    one whole shape, never a blend of two."""

    OUTSIDE = 8.0  # mask logit beyond a template's box: the layer does not show there

    def __init__(self, in_dim: int, side: int, templates: int = 16, resolution: int = 32, hidden: int = 128):
        super().__init__()
        self.side = side
        # Fitted to the training pictures before training (fit_sprites) and then held: trained on, a template
        # shared by layers placed a pixel or two apart learns their average, and its corners blur (a buffer, so it
        # is saved with the weights, like a palette).
        self.register_buffer("templates", torch.zeros(templates, resolution, resolution))  # K x R x R mask logits
        # box half-size per template as a multiple of the square root of the mask's area (a square's side)
        self.scale = nn.Parameter(torch.full((templates,), math.log(2.0)))  # the frame fit_sprites cuts shapes in
        self.pick = nn.Sequential(nn.Linear(in_dim, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, templates))

    def forward(self, v: torch.Tensor, placing: torch.Tensor) -> torch.Tensor:
        """v: what picks the template [N, D]; placing: the conv mask logits that place it [N, 1, S, S]."""
        N, S = v.shape[0], self.side
        soft = self.pick(v).float().softmax(1)  # N x K
        hard = F.one_hot(soft.argmax(1), soft.shape[1]).to(soft.dtype)
        choice = hard + soft - soft.detach() if self.training else hard
        template = torch.einsum("nk,khw->nhw", choice, self.templates.float()).unsqueeze(1)  # N x 1 x R x R
        # how much of each pixel the conv mask covers -> where it is and how big
        cx, cy, half = sprite_frame(torch.sigmoid(placing.float())[:, 0])
        s = (half / 2 * (choice @ self.scale).exp()).clamp(min=0.02)  # box half-size / half-side
        zero = torch.zeros_like(s)
        # a picture point p samples the template at (p - centre) / s
        theta = torch.stack([torch.stack([1 / s, zero, -cx / s], 1), torch.stack([zero, 1 / s, -cy / s], 1)], 1)
        grid = F.affine_grid(theta, [N, 1, S, S], align_corners=False)
        drawn = F.grid_sample(template + self.OUTSIDE, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        return (drawn - self.OUTSIDE).to(placing.dtype)  # N x 1 x S x S


def _activate(x: torch.Tensor, leak: float) -> torch.Tensor:
    """The decoder's activation. With plain ReLU a pixel generator on shapes can lose a whole stage early on: the
    FiLM shift of every channel goes negative while the loss is still learning the background, no gradient passes a
    dead ReLU, and the model draws flat grey for good. A small leak keeps a gradient path open."""
    return F.leaky_relu(x, leak) if leak else F.relu(x)


class _Refine(nn.Module):
    """x -> relu(x + BN(conv3x3(relu(conv3x3(x))))): a residual block that starts as the identity."""

    def __init__(self, c: int, leak: float = 0.0):
        super().__init__()
        self.leak = leak
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(c)
        nn.init.zeros_(self.norm.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _activate(x + self.norm(self.conv2(_activate(self.conv1(x), self.leak))), self.leak)


def _down_stack(channels: Sequence[int], spectral: bool) -> nn.Sequential:
    """Image [B, 3, 64, 64] -> [B, C_last, 4, 4] with stride-2 4x4 convs (one per halving)."""
    wrap = nn.utils.parametrizations.spectral_norm if spectral else (lambda m: m)
    layers, cin = [], 3
    for i, cout in enumerate(channels):
        layers.append(wrap(nn.Conv2d(cin, cout, 4, stride=2, padding=1)))
        if not spectral and i > 0:
            layers.append(nn.BatchNorm2d(cout))
        layers.append(nn.LeakyReLU(0.2, inplace=True))
        cin = cout
    return nn.Sequential(*layers)


class Discriminator(nn.Module):
    """(image [B, 3, 64, 64], ids [B, T]) -> score [B]; its own text encoder so it cannot pull the generator's."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        sn = nn.utils.parametrizations.spectral_norm
        self.text = TextEncoder(cfg.vocab_size, cfg.embed_dim, cfg.text_hidden, cfg.text_layers, cfg.dropout)
        self.features = _down_stack(cfg.enc_channels, spectral=True)
        c = cfg.enc_channels[-1]
        n_down = len(cfg.enc_channels)
        self.side = cfg.image_size // 2**n_down
        self.text_proj = nn.Linear(self.text.out_dim, 128)
        self.joint = nn.Sequential(sn(nn.Conv2d(c + 128, c, 1)), nn.LeakyReLU(0.2, inplace=True))
        self.out = sn(nn.Linear(c * self.side * self.side, 1))

    def forward(self, images: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        f = self.features(images * 2 - 1)  # B x C x s x s
        t = self.text_proj(self.text(ids))[:, :, None, None].expand(-1, -1, f.shape[2], f.shape[3])
        return self.out(self.joint(torch.cat([f, t], 1)).flatten(1)).squeeze(1)  # B


def _kmeans(points: torch.Tensor, centres: torch.Tensor, iters: int) -> torch.Tensor:
    """Lloyd's iterations from the given centres [k, D] over points [N, D]; an empty cluster keeps its centre."""
    c = centres
    for _ in range(iters):
        assign = torch.cdist(points, c).argmin(1)
        sums = torch.zeros_like(c).index_add_(0, assign, points)
        n = torch.bincount(assign, minlength=len(c)).unsqueeze(1)
        c = torch.where(n > 0, sums / n.clamp(min=1), c)
    return c


def _farthest_point_kmeans(points: torch.Tensor, k: int, gen: torch.Generator, iters: int) -> torch.Tensor:
    """k-means over points [M, D] -> centres [k, D], started from one random point and then each next the farthest
    from those taken: rare kinds (a shape few pictures hold) get a centre of their own instead of being merged."""
    centres = [points[int(torch.randint(len(points), (1,), generator=gen))]]
    dist = (points - centres[0]).pow(2).sum(1)
    while len(centres) < k:
        centres.append(points[dist.argmax()])
        dist = torch.minimum(dist, (points - centres[-1]).pow(2).sum(1))
    return _kmeans(points, torch.stack(centres), iters)


def _unit_float(images: torch.Tensor) -> torch.Tensor:
    """Pictures as uint8 or floats -> floats in [0, 1]."""
    return images.float() / 255.0 if images.dtype == torch.uint8 else images.float()


def fit_palette(images: torch.Tensor, k: int, seed: int = 0, sample: int = 200_000, iters: int = 15,
                separation: float = 0.12) -> torch.Tensor:
    """The `k` colours a palette generator draws with: k-means over the pixels of `images` ([N, 3, H, W], uint8 or
    [0, 1]) -> [k, 3] in [0, 1].

    Started from the densest colours rather than at random or at the farthest ones: the most common colours (on a
    coarse grid), each at least `separation` away from those already taken. The colour of one small shape is a
    tiny share of the pixels, yet far denser than the blends along its edges; a random or farthest-point start
    spends centres on those blends and lets k-means merge yellow with orange, after which the generator could
    never draw either. Farthest points fill up if too few dense colours are far enough apart."""
    x = _unit_float(images)
    px = x.permute(0, 2, 3, 1).reshape(-1, 3)
    gen = torch.Generator().manual_seed(int(seed))
    if px.shape[0] > sample:
        px = px[torch.randint(px.shape[0], (sample,), generator=gen)]
    bins, inverse, counts = (px * 31).round().unique(dim=0, return_inverse=True, return_counts=True)
    means = torch.zeros(len(bins), 3).index_add_(0, inverse, px) / counts.unsqueeze(1)
    centres: list[torch.Tensor] = []
    for i in counts.argsort(descending=True).tolist():
        if len(centres) == k:
            break
        if all(float((means[i] - c).norm()) >= separation for c in centres):
            centres.append(means[i])
    dist = torch.cdist(px, torch.stack(centres)).min(1).values.pow(2)
    while len(centres) < k:
        centres.append(px[dist.argmax()])
        dist = torch.minimum(dist, (px - centres[-1]).pow(2).sum(1))
    return _kmeans(px, torch.stack(centres), iters).clamp(0, 1)


def sprite_frame(cover: torch.Tensor, eps: float = 1e-3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How much of each pixel a shape covers [N, S, S] -> its centroid x, y in [-1, 1] and the half-size of the box a
    sprite template spans, 2 * sqrt(area) / S, each [N]: one frame for the templates fit_sprites cuts and the
    places SpriteMasks draws them (the default scale, 2, leaves the box as cut)."""
    S = cover.shape[-1]
    mass = cover.sum((1, 2)) + eps
    pos = (torch.arange(S, device=cover.device, dtype=cover.dtype) + 0.5) / S * 2 - 1
    return (cover.sum(1) * pos).sum(1) / mass, (cover.sum(2) * pos).sum(1) / mass, 2 * mass.sqrt() / S


def _cut_frames(cover: torch.Tensor, resolution: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coverage maps [M, S, S] -> each cut out in its own sprite frame ([M, R, R]), and that frame's centroid x, y and
    half-size (`sprite_frame`), each [M]: how templates are cut from pictures."""
    cx, cy, half = sprite_frame(cover, eps=0.0)  # callers pass regions of min_pixels or more
    zero = torch.zeros_like(half)
    theta = torch.stack([torch.stack([half, zero, cx], 1), torch.stack([zero, half, cy], 1)], 1)
    grid = F.affine_grid(theta, [len(cover), 1, resolution, resolution], align_corners=False)
    cuts = F.grid_sample(cover.unsqueeze(1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return cuts[:, 0], cx, cy, half


def _components(fg: torch.Tensor) -> torch.Tensor:
    """Foreground masks [N, S, S] (bool) -> connected-component labels [N, S, S] (0 = background): each pixel takes
    the largest pixel number among its 8 neighbours until nothing changes (no scipy needed)."""
    N, S, _ = fg.shape
    keep = fg.float()
    lab = torch.arange(1, S * S + 1, dtype=torch.float32).view(1, S, S).expand(N, -1, -1) * keep
    for _ in range(S * S):
        grown = F.max_pool2d(lab.unsqueeze(1), 3, stride=1, padding=1).squeeze(1) * keep
        if torch.equal(grown, lab):
            break
        lab = grown
    return lab.long()


def _border_colour(x: torch.Tensor) -> torch.Tensor:
    """Pictures [N, 3, S, S] -> the median colour of each one's border pixels [N, 3]: its background, on shapes."""
    return torch.cat([x[:, :, 0], x[:, :, -1], x[:, :, :, 0], x[:, :, :, -1]], 2).median(2).values


def _foreground(x: torch.Tensor, threshold: float = 0.15) -> torch.Tensor:
    """Pictures [N, 3, S, S] in [0, 1] -> [N, S, S] bool: pixels away from the picture's border colour."""
    return (x - _border_colour(x)[:, :, None, None]).abs().amax(1) > threshold


def count_shapes(images: torch.Tensor, min_pixels: int = 12) -> torch.Tensor:
    """Pictures [N, 3, S, S] in [0, 1] -> how many separate regions of at least `min_pixels` stand off the border
    colour in each [N] (shapes that touch count once): what the count term of a layers generator is taught."""
    labels = _components(_foreground(images.float()))
    counts = []
    for lab in labels:
        _, sizes = lab[lab > 0].unique(return_counts=True)
        counts.append(int((sizes >= min_pixels).sum()))
    return torch.tensor(counts, dtype=images.dtype, device=images.device)


def fit_sprites(images: torch.Tensor, k: int, resolution: int = 32, seed: int = 0, sample: int = 2000,
                iters: int = 15, threshold: float = 0.15, min_pixels: int = 12) -> torch.Tensor:
    """The template masks a sprites generator starts from: k-means over the shapes cut out of `images` ([N, 3, S,
    S], uint8 or [0, 1]) -> mask logits [k, R, R] in the frame `SpriteMasks` draws them in (centred on the shape's
    centroid, half-size 2 * sqrt(area) / S).

    Why: templates that all start as the same disc get the same gradient, and training found one disc for every
    shape; started from the shapes the pictures hold, each template is already a different shape and the layers
    learn which to choose. A shape is a connected region of pixels away from the picture's border colour."""
    x = _unit_float(images)
    gen = torch.Generator().manual_seed(int(seed))
    if x.shape[0] > sample:
        x = x[torch.randperm(x.shape[0], generator=gen)[:sample]]
    N = x.shape[0]
    labels = _components(_foreground(x, threshold))
    masks = []
    for i in range(N):
        for lab in labels[i].unique().tolist():
            m = labels[i] == lab
            if not lab or int(m.sum()) < min_pixels:
                continue
            rows, cols = m.any(1).nonzero(), m.any(0).nonzero()
            h, w = int(rows[-1] - rows[0]) + 1, int(cols[-1] - cols[0]) + 1
            if max(h, w) <= 1.5 * min(h, w):  # not two shapes that touch (one region twice as wide as tall)
                masks.append(m)
    if len(masks) < k:
        raise I2TError(f"only {len(masks)} shapes found in the training pictures; {k} sprites need at least {k}")
    crops = _cut_frames(torch.stack(masks).float(), resolution)[0].flatten(1)  # M x R^2
    c = _farthest_point_kmeans(crops, k, gen, iters)
    return (8.0 * (c - 0.5)).view(k, resolution, resolution)  # +-4: inside / outside


# ---------------------------------------------------------------------------------------------------------------
# Prompts


def prepare_prompts(texts: Sequence[str], vocab: Vocabulary, max_tokens: int) -> torch.Tensor:
    """Prompts -> ids [B, T] (with <start>/<end>). Empty prompts are an error; unknown words and over-long prompts
    are a `PromptWarning` (the picture is still drawn, from the words that are known / kept)."""
    if isinstance(texts, str):
        texts = [texts]
    if len(texts) == 0:
        raise I2TError("no prompt given")
    seqs = []
    for text in texts:
        if not isinstance(text, str) or not text.strip():
            raise I2TError("empty prompt: give a sentence such as 'a red circle on the left'")
        if len(text) > MAX_PROMPT_CHARS:
            warnings.warn(f"prompt is {len(text):,} characters; only the first {MAX_PROMPT_CHARS:,} are read", PromptWarning, stacklevel=3)
            text = text[:MAX_PROMPT_CHARS]
        tokens = tokenize(text)
        if not tokens:
            raise I2TError(f"prompt {text[:40]!r} has no words")
        if len(tokens) > max_tokens:
            warnings.warn(f"prompt has {len(tokens)} words; only the first {max_tokens} are used", PromptWarning, stacklevel=3)
            tokens = tokens[:max_tokens]
        unknown = sorted({t for t in tokens if t not in vocab})
        if unknown:
            shown = ", ".join(unknown[:8]) + (" ..." if len(unknown) > 8 else "")
            warnings.warn(f"words the generator has never seen (read as <unk>): {shown}", PromptWarning, stacklevel=3)
        seqs.append(vocab.encode(tokens))
    return pad_batch(seqs)


class PromptedSampling:
    """What every generator kind does before it draws: prompts to token ids, `n` rows per prompt, the default
    temperature. Mixed into each kind's module (it needs `self.vocab` and a config with `max_tokens` and
    `sample_temperature`) so that the kinds check and read prompts the same way."""

    def prompt_ids(self, texts: Sequence[str]) -> torch.Tensor:
        if self.vocab is None:
            raise I2TError("this generator has no vocabulary attached; load it from a checkpoint")
        return prepare_prompts(texts, self.vocab, self.config.max_tokens)

    def guided(self, guidance: float):
        """This model drawing with `guidance` (see `Generator._decode`); only pixel / vae / gan generators have it."""
        raise I2TError(f"guidance is for pixel, vae and gan generators; a {self.config.kind} generator has none")

    def sampling_ids(self, prompts: Sequence[str] | str | torch.Tensor, n: int,
                     temperature: float | None) -> tuple[torch.Tensor, float]:
        """-> (ids [len(prompts) * n, T], prompt-major; the temperature to sample at, None = the config's)."""
        if n < 1:
            raise I2TError(f"n must be at least 1, got {n}")
        ids = prompts if isinstance(prompts, torch.Tensor) else self.prompt_ids(prompts)
        return ids.repeat_interleave(n, dim=0), self.config.sample_temperature if temperature is None else temperature


# ---------------------------------------------------------------------------------------------------------------
# The model


class Generator(PromptedSampling, nn.Module):
    """Sentence -> 64x64 image. `config.kind` picks pixel / vae / gan; see the module docstring."""

    def __init__(self, config: GeneratorConfig, vocab: Vocabulary | None = None):
        super().__init__()
        if vocab is not None and len(vocab) != config.vocab_size:
            raise I2TError(f"vocabulary has {len(vocab)} words but the config says vocab_size={config.vocab_size}")
        self.config = config
        self.vocab = vocab
        self.text = TextEncoder(config.vocab_size, config.embed_dim, config.text_hidden, config.text_layers, config.dropout)
        in_dim = self.text.out_dim + config.z_dim
        if config.decoder == "layers":
            self.decoder = LayeredDecoder(in_dim, config.text_hidden, config.channels, config.layers, film=config.film,
                                          refine=config.refine, leak=config.leak, ordinal=config.ordinal,
                                          window=config.window, masks=config.masks, sprites=config.sprites,
                                          side=config.image_size)
        else:
            self.decoder = ImageDecoder(in_dim, config.channels, config.film, word_dim=config.text_hidden,
                                        word_attention=config.word_attention, refine=config.refine, leak=config.leak,
                                        logits=config.palette_size if config.output == "palette" else 0)
        # The mean sentence vector of the training captions (fit_sentence_mean), what `guidance` pushes away from.
        self.register_buffer("sentence_mean", torch.zeros(self.text.out_dim))
        if config.output == "palette":
            # Fitted to the training pictures before training (fit_palette); a buffer, so it is saved with the weights.
            self.register_buffer("palette", torch.zeros(config.palette_size, 3))
        if config.kind == "vae":
            self.image_encoder = _down_stack(config.enc_channels, spectral=False)
            side = config.image_size // 2 ** len(config.enc_channels)
            self.posterior = nn.Linear(config.enc_channels[-1] * side * side + self.text.out_dim, 2 * config.z_dim)
            if config.prior == "learned":
                # Zero-initialised last layer: the learned prior starts as N(0, I), so it can be added to a trained VAE.
                self.prior_net = nn.Sequential(nn.Linear(self.text.out_dim, 256), nn.ReLU(inplace=True),
                                               nn.Linear(256, 2 * config.z_dim))
                nn.init.zeros_(self.prior_net[2].weight)
                nn.init.zeros_(self.prior_net[2].bias)
        if config.kind == "gan" or config.adv_weight > 0:
            self.discriminator = Discriminator(config)

    # -- pieces -----------------------------------------------------------------------------------------------

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        """ids [B, T] -> sentence vectors [B, 2*text_hidden]."""
        return self.text(ids)

    def _text(self, ids: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """Sentence vector, and the decoder's word inputs when it reads words (attention, layers)."""
        if not self.config.word_attention and self.config.decoder != "layers":
            return self.text(ids), {}
        s, words, mask = self.text(ids, words=True)
        return s, {"words": words, "mask": mask}

    def _prior(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sentence vectors -> the prior's (mu, logvar) over z."""
        if self.config.prior != "learned":
            zero = s.new_zeros(s.shape[0], self.config.z_dim)
            return zero, zero
        mu, logvar = self.prior_net(s).chunk(2, dim=1)
        return mu, logvar.clamp(-10, 10)

    def _from_noise(self, s: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Standard-normal noise -> a draw of z from the prior for these sentences (the identity for N(0, I))."""
        if self.config.prior != "learned":
            return noise
        mu, logvar = self._prior(s)
        return mu + noise * torch.exp(0.5 * logvar)

    def draw(self, ids: torch.Tensor, z: torch.Tensor | None = None, guidance: float = 1.0) -> torch.Tensor:
        """ids [B, T] (+ noise z [B, z_dim], standard normal times the temperature) -> images [B, 3, S, S] in [0, 1].

        With a learned prior the noise is mapped through it, so a temperature scales the spread around what the
        sentence predicts rather than around the origin. `guidance`: see `_decode`."""
        return self._image(self._decode(ids, z, guidance))

    def _decode(self, ids: torch.Tensor, z: torch.Tensor | None = None, guidance: float = 1.0) -> torch.Tensor:
        """`draw` before `_image`: the decoder's raw output, which is what the pixel loss is taken of.

        `guidance` g draws from mean + g * (s - mean) instead of the sentence vector s, the mean being that of the
        training captions (`fit_sentence_mean`). Why: trained to be close to every photo a sentence fits, the decoder
        draws mostly what all sentences share (a brownish scene, a dark figure); what sets this sentence apart (the
        grass, the snow, the water) is a small part of its vector. Stretching that part, the way classifier-free
        guidance stretches conditional from unconditional predictions, draws it louder. g = 1 is the model as
        trained; training never uses g."""
        s, words = self._text(ids)
        if guidance != 1.0:
            self._check_guidance(guidance)
            s = self.sentence_mean + guidance * (s - self.sentence_mean)
        if self.config.z_dim:
            if z is None:
                raise ValueError("this generator needs z")
            s = torch.cat([s, self._from_noise(s, z)], dim=1)
        return self.decoder(s, **words)

    def guided(self, guidance: float) -> Generator:
        """This generator, drawing with `guidance` from now on (`config.guidance`, saved with it)."""
        from dataclasses import replace

        self._check_guidance(guidance)
        self.config = replace(self.config, guidance=float(guidance))
        return self

    def _check_guidance(self, guidance: float) -> None:
        if guidance != 1.0 and not bool(self.sentence_mean.any()):
            raise I2TError("this generator has no mean sentence vector, which guidance needs (checkpoints saved by "
                           "training have one; otherwise fit it with Generator.fit_sentence_mean)")

    @torch.no_grad()
    def fit_sentence_mean(self, ids: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Set `sentence_mean` to the mean sentence vector of `ids` [N, T] (training captions) and return it."""
        device = self.sentence_mean.device
        with evaluating(self.text):
            total = sum(self.text(ids[i:i + batch_size].to(device)).double().sum(0)
                        for i in range(0, ids.shape[0], batch_size))
        self.sentence_mean.copy_((total / max(ids.shape[0], 1)).to(self.sentence_mean.dtype))
        return self.sentence_mean

    def _image(self, out: torch.Tensor) -> torch.Tensor:
        """The decoder's output as a picture. RGB output is one already. Palette logits become each pixel's most
        likely colour: the mode, not the mean, so where the model is unsure of an edge it still draws a hard one in
        the dataset's own colours instead of a blend of the possible pictures. In training the gradient is that of
        the expected colour (straight-through), so the critic and perceptual terms judge exactly the picture a user
        gets yet can still steer the logits; judging the soft blend instead would let them reward greys that the
        mode never draws."""
        if isinstance(out, Layers):
            hard = out.hard()
            if not (self.training and torch.is_grad_enabled()):
                return hard
            soft = out.soft()
            return soft + (hard - soft).detach()
        if self.config.output != "palette":
            return out
        palette = self.palette.to(out.dtype)
        hard = palette[out.argmax(1)].permute(0, 3, 1, 2)
        if not (self.training and torch.is_grad_enabled()):
            return hard
        soft = torch.einsum("bkhw,kc->bchw", out.softmax(1), palette)
        return soft + (hard - soft).detach()

    def palette_targets(self, real: torch.Tensor) -> torch.Tensor:
        """Images [B, 3, S, S] in [0, 1] -> index of each pixel's nearest palette colour [B, S, S]."""
        pal = self.palette.to(real.dtype)
        d = (real[:, None] - pal[None, :, :, None, None]).pow(2).sum(2)  # B x K x S x S
        return d.argmin(1)

    def generator_parameters(self) -> list[nn.Parameter]:
        """Everything but the discriminator (the GAN's generator optimizer gets these)."""
        return [p for n, p in self.named_parameters() if not n.startswith("discriminator.")]

    def _recon(self, out: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Mean pixel loss of the decoder's output `out` against `real`, weighted as `_pixel_error` says.

        With `shift_tolerance` t, each drawing is scored against the real image shifted by the (dx, dy) in
        [-t, t]^2 that it fits best (edges replicated). Why: a sentence fixes a shape's cell but not its jitter of a
        pixel or two, and a loss that must pay for every possible jitter is lowest for the per-pixel mode of all of
        them, an eroded shape whose star points and square corners are gone (the blobs of the shapes VAE, even
        from its posterior code). Forgiving a small global shift lets the drawing stay crisp. The best shift is
        chosen without gradient; the loss and its gradient are those of that one shift."""
        t = self.config.shift_tolerance
        if t > 0:
            S = real.shape[-1]
            padded = F.pad(real, (t, t, t, t), mode="replicate")
            shifts = [(dy, dx) for dy in range(2 * t + 1) for dx in range(2 * t + 1)]  # crop corners in `padded`
            with torch.no_grad():
                if self.config.output == "palette":  # each shift's targets are a crop of the padded image's
                    logp = F.log_softmax(out.float(), 1)
                    targets, weights = self.palette_targets(padded), self._fg_weight(padded, real)
                    crops = [(-logp.gather(1, targets[:, None, dy:dy + S, dx:dx + S]), weights[:, :, dy:dy + S, dx:dx + S])
                             for dy, dx in shifts]
                else:
                    crops = [self._pixel_error(out, padded[:, :, dy:dy + S, dx:dx + S]) for dy, dx in shifts]
                best = torch.stack([(e * w).flatten(1).sum(1) / w.flatten(1).sum(1) for e, w in crops], 1).argmin(1)
            real = torch.stack([padded[b, :, dy:dy + S, dx:dx + S]
                                for b, (dy, dx) in enumerate(shifts[i] for i in best.tolist())])
        err, weight = self._pixel_error(out, real)
        return (err * weight).sum() / (weight.sum() * err.shape[1])

    def _pixel_error(self, out: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel loss [B, C, S, S] (MSE / L1 for RGB; for palette logits, C = 1, the cross-entropy against each
        pixel's nearest palette colour) and its weight [B, 1, S, S]. With `fg_weight` > 0, pixels that differ from
        the image's border colour (its median over the outer ring: the background of a shapes picture) weigh
        1 + fg_weight: a small shape is a few percent of the pixels, so an unweighted loss learns the background
        first and the shapes only very slowly."""
        if isinstance(out, Layers):
            out = out.soft()
        if self.config.output == "palette":
            err = F.cross_entropy(out, self.palette_targets(real), reduction="none").unsqueeze(1)  # B x 1 x S x S
        elif self.config.recon_loss == "mse":
            err = (out - real) ** 2
        else:
            err = (out - real).abs()
        return err, self._fg_weight(real, real).to(err.dtype)

    def _fg_weight(self, image: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Per-pixel weight [B, 1, H, W] of `image` (`real`, or a padded copy of it): 1 + fg_weight where a pixel
        differs from `real`'s border colour, else 1."""
        if self.config.fg_weight <= 0:
            return torch.ones_like(image[:, :1])
        bg = _border_colour(real)[:, :, None, None]  # B x 3 x 1 x 1
        fg = ((image - bg).abs().sum(1, keepdim=True) > 0.15).to(image.dtype)  # B x 1 x H x W
        return 1 + self.config.fg_weight * fg

    # -- losses ----------------------------------------------------------------------------------------------

    def forward(self, ids: torch.Tensor, images: torch.Tensor | None = None, step: int = 0, critic=None,
                return_prior: bool = False, perceptual=None):
        """Training forward for pixel / vae: ids [B, T], images [B, 3, S, S] in [0, 1] -> (fake, loss, logs).

        `critic` (optional): a callable (drawn images, ids) -> scalar loss with `weight`, `tv_weight` and `target`
        attributes, such as `train.generator.CaptionCritic`. For a vae, target "posterior" scores the reconstruction
        (anchored by the pixel loss, so the critic cannot be fooled with textures) and "prior" a second drawing from
        z ~ N(0, I) at the sampling temperature (what users get, but free to drift into patterns that please the
        reader). It is computed here rather than by the caller so a DDP-wrapped model sees one forward.

        `perceptual` (optional): a callable (drawn, real) -> scalar with a `weight` attribute, such as
        `train.generator.FeatureLoss`, added for the pixel model's drawing / the vae's reconstruction.

        With `return_prior` (vae) a fourth value is the drawing from the prior for the same sentences (what the
        adversarial term judges besides the reconstruction).

        Without images (or for a gan) this just draws with z = 0 and returns (fake, None, {})."""
        cfg = self.config
        if images is None or cfg.kind == "gan":
            z = torch.zeros(ids.shape[0], cfg.z_dim, device=ids.device) if cfg.z_dim else None
            return self.draw(ids, z), None, {}
        if cfg.kind == "pixel":
            out = self._decode(ids)
            fake, recon = self._image(out), self._recon(out, images)
            logs = {"recon": recon.item()}
            loss = recon + self._perceptual_term(perceptual, fake, images, logs)
            return fake, loss + self._critic_term(critic, fake, ids, logs), logs
        # vae
        s, words = self._text(ids)
        if cfg.sentence_dropout > 0 and self.training:
            # Classifier-free training: some drawings are made from the mean sentence (the batch's, close to the
            # `sentence_mean` that guidance pushes away from), so the decoder learns what to draw when the sentence
            # says nothing beyond what all sentences share, and the code carries the whole picture there. Guidance
            # then extrapolates from a drawing the model was trained to make, not from one it never saw.
            drop = torch.rand(s.shape[0], 1, device=s.device) < cfg.sentence_dropout
            s = torch.where(drop, s.mean(0, keepdim=True).detach(), s)
        h = self.image_encoder(images * 2 - 1).flatten(1)
        mu, logvar = self.posterior(torch.cat([h, s], 1)).chunk(2, dim=1)  # B x Z each
        logvar = logvar.clamp(-10, 10)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        # KL(q(z | image, sentence) || p(z | sentence)); with the standard prior p = N(0, I). A learned prior lets z
        # carry only what the sentence leaves open (where a shape is when it does not say), so a sample from it
        # draws what the sentence says instead of whatever the posterior put in that corner of N(0, I).
        p_mu, p_logvar = self._prior(s)
        if cfg.z_dropout > 0 and self.training:
            # The posterior sees the picture, so it can hand the decoder where the shape is more cheaply than the
            # decoder learns to read "in the top left": z then carries the layout, and samples from the prior put
            # shapes wherever the noise says. Drawing some of the batch from the prior's mean instead, under the
            # same pixel loss, makes the sentence pathway alone draw what the sentence pins down.
            drop = torch.rand(z.shape[0], 1, device=z.device) < cfg.z_dropout
            z = torch.where(drop, p_mu, z)
        out = self.decoder(torch.cat([s, z], 1), **words)
        fake, recon = self._image(out), self._recon(out, images)
        kl_terms = p_logvar - logvar + (logvar.exp() + (mu - p_mu).pow(2)) * torch.exp(-p_logvar) - 1
        kl = 0.5 * kl_terms.sum(1).mean() / images[0].numel()
        beta = cfg.beta * min(1.0, step / cfg.kl_warmup) if cfg.kl_warmup > 0 else cfg.beta
        loss = recon + beta * kl
        logs = {"recon": recon.item(), "kl": kl.item() * images[0].numel(), "beta": beta}
        if cfg.count_weight and isinstance(out, Layers):
            # Learned from pixels alone, the "names a thing" scores come out right in sum but spread thin over every
            # word (o ~ 0.15-0.4), so layer k's pointer to "the k-th thing" covers half the sentence. The picture
            # says how many shapes there are, and o(1 - o) asks each word to name a thing or not: together they
            # leave the count on a few words, the ones the drawing is best served by.
            o = out.objectness
            count = (o.sum(1) - count_shapes(images)).pow(2).mean() + (o * (1 - o)).sum(1).mean()
            loss, logs["count"] = loss + cfg.count_weight * count, count.item()
        loss = loss + self._perceptual_term(perceptual, fake, images, logs)
        prior_fake = None
        if return_prior or (critic is not None and critic.target == "prior"):
            noise = torch.randn_like(z) * cfg.sample_temperature
            prior_fake = self._image(self.decoder(torch.cat([s, self._from_noise(s, noise)], 1), **words))
        if critic is not None:
            drawn = prior_fake if critic.target == "prior" else fake
            loss = loss + self._critic_term(critic, drawn, ids, logs)
        return (fake, loss, logs, prior_fake) if return_prior else (fake, loss, logs)

    @staticmethod
    def _perceptual_term(perceptual, drawn: torch.Tensor, real: torch.Tensor, logs: dict) -> torch.Tensor | float:
        if perceptual is None or perceptual.weight <= 0:
            return 0.0
        p = perceptual(drawn, real)
        logs["perceptual"] = p.item()
        return perceptual.weight * p

    @staticmethod
    def _critic_term(critic, drawn: torch.Tensor, ids: torch.Tensor, logs: dict) -> torch.Tensor | float:
        tv = critic.tv_weight if critic is not None else 0.0
        if critic is None or (critic.weight <= 0 and tv <= 0):
            return 0.0
        c = critic(drawn, ids)
        logs["critic"] = c.item()
        if tv <= 0:
            return critic.weight * c
        # total variation of what the critic read: plain shapes on plain ground have little of it, the textures that
        # fool a reader have a lot, so this lets the reader's gradient shape the objects but not paint the ground
        t = (drawn[..., 1:, :] - drawn[..., :-1, :]).abs().mean() + (drawn[..., 1:] - drawn[..., :-1]).abs().mean()
        logs["tv"] = t.item()
        return critic.weight * c + tv * t

    def adversarial_losses(self, ids: torch.Tensor, images: torch.Tensor, fake: torch.Tensor,
                           fake_ids: torch.Tensor | None = None):
        """Hinge losses of the matching-aware discriminator: returns (d_loss, g_fn) where g_fn() -> (g_adv, logs)
        is called after the discriminator update so the drawings are scored by the updated discriminator.

        The discriminator's negatives are the drawings (`fake`, for `fake_ids`, default `ids`) and real images
        paired with a mismatched sentence (the batch rolled by one), so it must check that the picture fits the
        sentence, not only that it looks real."""
        D = self.discriminator
        fake_ids = ids if fake_ids is None else fake_ids
        d_real = D(images, ids)
        d_fake = D(fake.detach(), fake_ids)
        d_wrong = D(images, ids.roll(1, dims=0))
        d_loss = F.relu(1 - d_real).mean() + 0.5 * (F.relu(1 + d_fake).mean() + F.relu(1 + d_wrong).mean())

        def g_fn():
            g_adv = -D(fake, fake_ids).mean()
            return g_adv, {"d": d_loss.item(), "g_adv": g_adv.item(), "d_real": d_real.mean().item(),
                           "d_fake": d_fake.mean().item()}

        return d_loss, g_fn

    def gan_losses(self, ids: torch.Tensor, images: torch.Tensor, z: torch.Tensor):
        """One GAN step's losses: (d_loss, g_fn) as in `adversarial_losses`, for drawings from noise `z`, plus the
        optional pixel term."""
        fake = self.draw(ids, z)
        d_loss, adv_fn = self.adversarial_losses(ids, images, fake)

        def g_fn():
            g_adv, logs = adv_fn()
            g_loss = g_adv
            if self.config.recon_weight > 0:
                r = self._recon(fake, images)
                g_loss = g_loss + self.config.recon_weight * r
                logs["recon"] = r.item()
            return g_loss, logs

        return d_loss, g_fn

    # -- generation ------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def generate(
        self,
        prompts: Sequence[str] | str | torch.Tensor,
        n: int = 1,
        seed: int = 0,
        temperature: float | None = None,
        batch_size: int = 64,
        guidance: float | None = None,
    ) -> torch.Tensor:
        """Draw `n` images per prompt -> FloatTensor [len(prompts) * n, 3, S, S] in [0, 1], prompt-major order.

        `prompts` are strings or token ids [B, T]. The latent noise comes from a `torch.Generator` seeded with
        `seed` (drawn on the CPU, so a seed gives the same noise on any device), scaled by `temperature` (None =
        `config.sample_temperature`); a `pixel` model is deterministic
        and draws the same picture n times. `guidance` (None = `config.guidance`): see `_decode`. Runs in eval mode
        and restores the previous mode."""
        ids, temperature = self.sampling_ids(prompts, n, temperature)
        guidance = self.config.guidance if guidance is None else float(guidance)
        device = next(self.parameters()).device
        rng = torch.Generator().manual_seed(int(seed))
        z = torch.randn(ids.shape[0], self.config.z_dim, generator=rng) * temperature if self.config.z_dim else None
        out = []
        with evaluating(self):
            for i in range(0, ids.shape[0], batch_size):
                zi = z[i : i + batch_size].to(device) if z is not None else None
                out.append(self.draw(ids[i : i + batch_size].to(device), zi, guidance).float().cpu())
        return torch.cat(out).clamp_(0, 1)

    # -- persistence -----------------------------------------------------------------------------------------

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights needed to draw: the discriminator and the VAE's image encoder stay in the training checkpoint
        only if `full=True` is passed to `save`; a shipped model does not need them."""
        return {k: v for k, v in self.state_dict().items() if not k.startswith(("discriminator.", "image_encoder.", "posterior."))}

    def save(self, path: str | Path, half: bool = False, full: bool = True, metrics: dict | None = None, info: dict | None = None) -> Path:
        from img2text2img.checkpoint import save_checkpoint

        if self.vocab is None:
            raise I2TError("cannot save a generator without its vocabulary")
        state = self.state_dict() if full else self.inference_state_dict()
        return save_checkpoint(path, kind="generator", config=config_to_dict(self.config), state_dict=state,
                               vocab=self.vocab, metrics=metrics, info=info, half=half)

    def without_latent(self) -> Generator:
        """This VAE's drawing network as a pixel generator that draws exactly what the VAE draws at z = 0.

        Why: a VAE's posterior code learns the layout from the photo, so its decoder never has to read the place from
        the sentence, and prior samples then guess it. Training the same network on with no code leaves the sentence
        as the only way to the place, while keeping everything the VAE already draws (on shapes, 750 steps were not
        enough to move the shapes: see docs/RESULTS.md). Every pixel weight is taken from the VAE; the layers that read
        [sentence, z] lose their trailing z columns (z = 0 contributes nothing), and whatever the pixel model has no
        place for (image encoder, posterior, priors, discriminator) is left behind. z = 0 is the standard prior's mean
        (what `draw` gives for zero noise); a learned prior's mean depends on the sentence and is not carried over, so
        such a VAE's zero-noise drawing differs from the pixel model's."""
        from dataclasses import replace

        if self.config.kind != "vae":
            raise I2TError(f"only a vae generator can drop its latent code, not a {self.config.kind}")
        if self.config.decoder == "layers":  # its slot layers read [sentence, z, slot]: no columns to cut or pad
            raise I2TError("a layers decoder cannot drop or gain a latent code; train it as the kind it is")
        pixel = Generator(replace(self.config, kind="pixel", z_dim=0, prior="standard", adv_weight=0.0),
                          vocab=self.vocab)
        source = self.state_dict()
        state = {key: source[key] if source[key].shape == like.shape else source[key][:, :like.shape[1]]
                 for key, like in pixel.state_dict().items()}
        pixel.load_state_dict(state)  # strict, and shapes checked: a slice that does not fit fails here
        return pixel.train(self.training)

    def with_latent(self, z_dim: int, prior: str = "standard") -> Generator:
        """This pixel generator as a VAE that, until trained on, draws exactly what the pixel model draws, for any z.

        Why: a VAE trained from scratch lets its code carry the layout, and its decoder never learns to read places
        from the sentence (docs/RESULTS.md); a pixel model has to, and eventually does. Starting the VAE from it, the
        code only has to carry what the sentence leaves open. The layers that read [sentence, z] get zero columns
        for z; the image encoder, posterior and prior are new."""
        from dataclasses import replace

        if self.config.kind != "pixel":
            raise I2TError(f"only a pixel generator can gain a latent code, not a {self.config.kind}")
        if self.config.decoder == "layers":  # its slot layers read [sentence, z, slot]: no columns to cut or pad
            raise I2TError("a layers decoder cannot drop or gain a latent code; train it as the kind it is")
        vae = Generator(replace(self.config, kind="vae", z_dim=z_dim, prior=prior), vocab=self.vocab)
        source, state = self.state_dict(), vae.state_dict()
        for key, like in state.items():
            if key in source:
                old = source[key]
                if old.shape != like.shape:  # [out, sentence] -> [out, sentence + z], the z columns zero
                    old = torch.cat([old, old.new_zeros(old.shape[0], like.shape[1] - old.shape[1])], dim=1)
                state[key] = old
        vae.load_state_dict(state)  # strict, and shapes checked
        return vae.train(self.training)

    @classmethod
    def from_checkpoint(cls, ckpt) -> Generator:
        if ckpt.config.get("kind") == "scene":  # a scene generator (models/scene_generator.py) is saved as a generator
            from img2text2img.models.scene_generator import SceneGenerator

            return SceneGenerator.from_checkpoint(ckpt)
        config = config_from_dict(GeneratorConfig, ckpt.config)
        model = cls(config, vocab=ckpt.vocab)
        state = ckpt.state_dict
        missing, unexpected = model.load_state_dict(state, strict=False)
        # A drawing-only checkpoint may leave out the discriminator / image encoder, nothing else; one saved before
        # guidance existed has no mean sentence (it stays zero, and guidance says so).
        missing = [k for k in missing if not k.startswith(("discriminator.", "image_encoder.", "posterior."))
                   and k != "sentence_mean"]
        if missing or unexpected:
            raise I2TError(f"{ckpt.path}: weights do not match the generator config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        return model.eval()


# ---------------------------------------------------------------------------------------------------------------
# Library helpers


def load_generator(model: Generator | str | Path | None = None, device: str = "cpu") -> Generator:
    """A `Generator` as given (or anything that draws like one, e.g. `rerank.RerankedGenerator`), loaded from a
    checkpoint / run folder, or (None) the default shipped in the package."""
    if model is not None and not isinstance(model, (str, Path)):
        return model
    from img2text2img.models import load_model

    path = DEFAULT_MODEL_DIR if model is None else Path(model)
    if model is None and not (path / "config.json").exists():
        raise I2TError(f"the default generator is missing from the package ({path}); pass --model DIR")
    return load_model(path, kind="generator", device=device)


def to_pil(images: torch.Tensor) -> list:
    """[B, 3, H, W] in [0, 1] -> list of RGB PIL images."""
    from PIL import Image

    arr = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a, "RGB") for a in arr]


def generate_images(prompts: Sequence[str] | str, model: Generator | str | Path | None = None, n: int = 1, seed: int = 0,
                    temperature: float | None = None, rerank_with=None, candidates: int = 8,
                    guidance: float | None = None) -> list:
    """Draw `n` pictures per prompt as PIL images (prompt-major). `model` None = the default shipped generator.
    `rerank_with` (a captioner or its folder): each picture is the best of `candidates` samples by that captioner's
    likelihood of the prompt (`img2text2img.rerank`); slower by about `candidates` times, clearer pictures.
    `guidance` (pixel / vae / gan; None = the model's own): see `Generator._decode`."""
    import copy

    if isinstance(prompts, str):
        prompts = [prompts]
    gen = load_generator(model)
    if guidance is not None:  # on a shallow copy: a model the caller passed in keeps its own setting
        gen = copy.copy(gen).guided(guidance)
    if rerank_with is not None:
        from img2text2img.rerank import reranked

        gen = reranked(gen, rerank_with, candidates)
    return to_pil(gen.generate(list(prompts), n=n, seed=seed, temperature=temperature))


def make_grid(images: Sequence | torch.Tensor, ncol: int | None = None, pad: int = 2, background: int = 255):
    """PIL images (or a [B, 3, H, W] tensor) -> one PIL image, `ncol` per row (default: near-square)."""
    from PIL import Image

    if isinstance(images, torch.Tensor):
        images = to_pil(images)
    images = list(images)
    if not images:
        raise I2TError("no images to put in a grid")
    if len(images) == 1:
        return images[0].copy()
    ncol = ncol or math.ceil(math.sqrt(len(images)))
    nrow = math.ceil(len(images) / ncol)
    w, h = images[0].size
    grid = Image.new("RGB", (ncol * w + (ncol + 1) * pad, nrow * h + (nrow + 1) * pad), (background,) * 3)
    for i, im in enumerate(images):
        r, c = divmod(i, ncol)
        grid.paste(im.convert("RGB"), (pad + c * (w + pad), pad + r * (h + pad)))
    return grid


def save_grid(images: Sequence | torch.Tensor, path: str | Path, ncol: int | None = None, scale: int = 1) -> Path:
    """Write images as one PNG (a single image as itself), atomically; `scale` enlarges with nearest neighbour."""
    from PIL import Image

    from img2text2img.io import write_bytes_atomic

    grid = make_grid(images, ncol)
    if scale > 1:
        grid = grid.resize((grid.width * scale, grid.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    grid.save(buf, format="PNG")
    write_bytes_atomic(path, buf.getvalue())
    return path
