"""Image captioners: a frozen image encoder + one of three word decoders, with greedy and beam-search decoding.

Decoders (all read words through the shared `SharedEmbedding`, so GloVe initialisation works for every one):

- `lstm` - Show and Tell: the pooled image vector initialises the LSTM state; the LSTM reads the caption.
- `blstm` - the seeds' "merge" model: a bidirectional LSTM reads the caption prefix (forward direction left to right,
  backward direction right to left over the prefix only, so nothing from the future leaks), its two final states are
  concatenated with the image vector and an MLP predicts the next word.
- `attention` - Show, Attend and Tell (soft attention) over the encoder's spatial grid, with the gating scalar and the
  doubly stochastic regularisation `alpha_c * mean((1 - sum_t alpha_t)^2)`.

Training runs on cached encoder features (see `img2text2img.features`), so a checkpoint stores only the decoder, the
vocabulary and the encoder's name and weights fingerprint; the encoder is rebuilt through `create_encoder` at load time.
Encoders without pretrained weights (e.g. `small_cnn`, random init) are stored in the checkpoint so they can be rebuilt
exactly.

Every decoder exposes the same step interface (`init_state`, `step`), so greedy and beam search are written once.
"""
from __future__ import annotations

import math
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from img2text2img.config import config_from_dict, config_to_dict
from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.registry import Registry
from img2text2img.tags import candidate_words
from img2text2img.vocab import END_ID, PAD_ID, SPECIALS, START_ID, SharedEmbedding, Vocabulary, pad_batch

KIND = "captioner"


@dataclass
class CaptionerConfig:
    encoder: str = "mobilenet_v2"  # name for `create_encoder`
    decoder: str = "attention"  # lstm | blstm | attention
    feature_dim: int = 0  # D of the encoder features (filled in from the encoder / feature cache)
    vocab_size: int = 0  # filled in from the vocabulary
    embed_dim: int = 256  # word-embedding size (50 to initialise from the GloVe 50-d slice)
    hidden: int = 512  # LSTM hidden size
    attention_dim: int = 256  # attention MLP size (attention decoder)
    feature_proj: int = 512  # grid features are projected to this size once per image (attention decoder)
    # attention decoder: > 0 runs this many self-attention layers over the projected grid cells, once per image,
    # before the decoder attends to them (see SoftAttentionDecoder); 0: the cells as the frozen CNN left them
    refine_layers: int = 0
    # attention decoder: > 0 adds this many detected words as extra cells to attend to (see SoftAttentionDecoder);
    # `attribute_weight` weighs the word-detection loss (binary cross-entropy, summed over the vocabulary per image)
    attribute_words: int = 0
    attribute_weight: float = 0.02  # the shipped model's; at 0.05 the detector's loss outweighed the captions'
    dropout: float = 0.5
    max_len: int = 20  # longest caption generated (words, without <start>/<end>)
    alpha_c: float = 1.0  # weight of the doubly stochastic attention regulariser
    label_smoothing: float = 0.0
    length_alpha: float = 0.7  # beam search ranks finished captions by logprob / length ** length_alpha
    # the beam width a caption call uses when none is given; with length_alpha, the search chosen on the validation
    # split for this model (scripts/tune_decoding.py), so that a default call decodes the way the model was scored
    beam_size: int = 3
    # > 0: greedy and beam search never write the same run of this many words twice in one caption (3 stops
    # "a man in a blue shirt and a blue shirt and a blue shirt"); 0: off. A decoding choice like the two above
    no_repeat_ngram: int = 0
    # features are the mean of the photo's and its mirror image's (`MirrorAverage`): in training (the feature cache)
    # and in captioning; switching it on for a model trained without it also helps (docs/RESULTS.md)
    mirror_average: bool = False
    encoder_weights_sha256: str = ""  # fingerprint of the encoder weights the decoder was trained on
    store_encoder: bool = False  # random-init and fine-tuned encoders keep their weights in the checkpoint
    # > 0: the pretrained encoder's last N blocks (see `Encoder.blocks`; EfficientNet-Lite0: 2 = its 1x1 head conv and
    # BatchNorm, 3 adds the last MBConv stage) train with the decoder on photos instead of cached features, and the
    # whole encoder is stored in the checkpoint. 0: the frozen ImageNet encoder, rebuilt from its weight file.
    encoder_trainable_blocks: int = 0
    members: int = 1  # > 1: an ensemble of this many decoders of this type, trained apart (`ensemble_captioners`)
    # a mixed ensemble: per member, the MEMBER_FIELDS where it differs from the fields above (e.g. {"decoder": "lstm"})
    member_overrides: tuple[dict, ...] = ()

    def __post_init__(self) -> None:
        if self.encoder_trainable_blocks < 0:
            raise I2TError(f"encoder_trainable_blocks must be >= 0, not {self.encoder_trainable_blocks}")
        if not 0 <= self.attribute_words <= 64:
            raise I2TError(f"attribute_words must be between 0 and 64, not {self.attribute_words}")
        if self.attribute_words and self.decoder != "attention":
            raise I2TError("attribute_words needs the attention decoder")
        if not 0 <= self.refine_layers <= 8:
            raise I2TError(f"refine_layers must be between 0 and 8, not {self.refine_layers}")
        if self.refine_layers and self.feature_proj % 8:
            raise I2TError(f"refine_layers needs feature_proj divisible by 8 (8 heads), not {self.feature_proj}")
        if self.member_overrides:
            if len(self.member_overrides) != self.members:
                raise I2TError(f"member_overrides has {len(self.member_overrides)} entries for {self.members} members")
            bad = sorted({k for o in self.member_overrides for k in o} - set(MEMBER_FIELDS))
            if bad:
                raise I2TError(f"member_overrides may set only {', '.join(MEMBER_FIELDS)}, not {', '.join(bad)}")

    @property
    def uses_grid(self) -> bool:
        return any(o.get("decoder", self.decoder) == "attention" for o in self.member_overrides) \
            or self.decoder == "attention"

    def member_configs(self) -> list[CaptionerConfig]:
        """One single-decoder config per member (the config itself when it is not an ensemble)."""
        if self.members == 1:
            return [self]
        overrides = self.member_overrides or ({},) * self.members
        return [replace(self, members=1, member_overrides=(), **o) for o in overrides]


# The fields that shape one decoder's weights: a run started from another model (--init-from) keeps them.
NETWORK_FIELDS = ("decoder", "embed_dim", "hidden", "attention_dim", "feature_proj", "refine_layers")
# Members of an ensemble may differ in these, and must share everything else that reaches the features (encoder, its
# weights, feature size) and the vocabulary.
MEMBER_FIELDS = (*NETWORK_FIELDS, "dropout", "alpha_c")


@dataclass
class CaptionResult:
    text: str
    tokens: list[str]
    logprob: float  # sum of token log-probabilities, <end> included


# ---------------------------------------------------------------------------------------------------------------
# Named configurations


CAPTIONERS: Registry = Registry("captioner")
DECODERS: Registry = Registry("caption decoder")

ENCODER_NAMES = ("mobilenet_v2", "efficientnet_lite0", "mobilenet_v3_small", "squeezenet1_1", "inception_v3", "googlenet",
                 "fused_lite0_mnv2")
DECODER_PRESETS = {
    "lstm": dict(decoder="lstm", embed_dim=256, hidden=512, dropout=0.5),
    "blstm": dict(decoder="blstm", embed_dim=256, hidden=256, dropout=0.5),
    "attention": dict(decoder="attention", embed_dim=256, hidden=512, attention_dim=256, feature_proj=512, dropout=0.5),
    # small presets for the shapes set, tiny ones for tests
    "lstm-small": dict(decoder="lstm", embed_dim=64, hidden=192, dropout=0.1, max_len=20),
    "attention-small": dict(decoder="attention", embed_dim=64, hidden=192, attention_dim=64, feature_proj=96,
                            dropout=0.1, max_len=20),
    "lstm-tiny": dict(decoder="lstm", embed_dim=32, hidden=64, dropout=0.1, max_len=16),
    "blstm-tiny": dict(decoder="blstm", embed_dim=32, hidden=48, dropout=0.1, max_len=16),
    "attention-tiny": dict(decoder="attention", embed_dim=32, hidden=64, attention_dim=32, feature_proj=64,
                           dropout=0.1, max_len=16),
}


def _register_defaults() -> None:
    for enc in (*ENCODER_NAMES, "small_cnn"):
        for dec, preset in DECODER_PRESETS.items():
            CAPTIONERS.add(f"{enc}+{dec}", lambda enc=enc, preset=preset: CaptionerConfig(encoder=enc, **preset))


_register_defaults()


def list_captioners() -> list[str]:
    return CAPTIONERS.names()


def captioner_config(name: str, **overrides) -> CaptionerConfig:
    """Named configuration (e.g. "mobilenet_v2+attention") with field overrides."""
    cfg = CAPTIONERS.get(name)()
    try:
        return replace(cfg, **overrides)
    except TypeError as e:
        raise I2TError(f"captioner config: {e}") from None


def create_captioner(name: str, vocab: Vocabulary, feature_dim: int, **overrides) -> Captioner:
    """A fresh captioner for `vocab`, on features of size `feature_dim` (encoder attached later, or never)."""
    cfg = captioner_config(name, vocab_size=len(vocab), feature_dim=feature_dim, **overrides)
    return Captioner(cfg, vocab)


# ---------------------------------------------------------------------------------------------------------------
# Decoding one photo: a beam search sends a few rows (its beams) through matrices of up to 2,549 x 512 at every word.
# For 2-8 rows the CPU BLAS here is 1.5-3x slower at x @ W.T (what nn.Linear computes) than at (W @ x.T).T, the
# same product with the weight as the long side; at 1 row and at ~15 rows it is faster, and at 32+ rows the gap is
# small (`python scripts/bench_decode.py`, docs/bench/decode.json). One photo at beam 3 is 3 rows, so searches, which
# run with grad off, take the weight-side form for 2-8 rows: decoding one photo is ~25% faster. With grad on
# (training, self-critical sampling) the ordinary modules run, so autograd is untouched.
FEW_ROWS = range(2, 9)


def _weight_side(x: torch.Tensor) -> bool:
    return not torch.is_grad_enabled() and x.dim() == 2 and x.shape[0] in FEW_ROWS


def decode_linear(layer: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """`layer(x)`, computed as (W @ x.T).T when that is faster (few rows, grad off)."""
    if not _weight_side(x):
        return layer(x)
    xt = x.contiguous().t()  # a column-major [in, rows] view: BLAS is ~2x slower given the same numbers row-major
    y = layer.weight @ xt if layer.bias is None else torch.addmm(layer.bias[:, None], layer.weight, xt)
    return y.t().contiguous()  # row-major out, as the layer's own: later reductions over the last dim stay fast


def decode_lstm_step(owner: nn.Module, x: torch.Tensor, h: torch.Tensor, c: torch.Tensor,
                     suffix: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTM step of an `nn.LSTMCell` (suffix "") or of the first layer of an `nn.LSTM` (suffix "_l0") -> (h, c),
    with the gate products in the faster form when `decode_linear` would use it (gate order i, f, g, o, as torch's)."""
    if not _weight_side(x):
        if isinstance(owner, nn.LSTMCell):
            return owner(x, (h, c))
        _, (h1, c1) = owner(x[:, None], (h[None].contiguous(), c[None].contiguous()))
        return h1[0], c1[0]
    w_ih, w_hh = getattr(owner, f"weight_ih{suffix}"), getattr(owner, f"weight_hh{suffix}")
    bias = getattr(owner, f"bias_ih{suffix}") + getattr(owner, f"bias_hh{suffix}")
    gates = torch.addmm(torch.addmm(bias[:, None], w_ih, x.contiguous().t()), w_hh, h.contiguous().t())
    i, f, g, o = gates.t().contiguous().chunk(4, 1)  # row-major again, so h and c leave row-major
    c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c), c


# ---------------------------------------------------------------------------------------------------------------
# Decoders. Shapes: B batch, T caption length (with <start>/<end>), N grid cells, D feature size, V vocabulary.


class ShowTellDecoder(nn.Module):
    """Show and Tell: h0, c0 = tanh(W v); the LSTM reads <start> w1 .. wn and predicts w1 .. <end>."""

    def __init__(self, cfg: CaptionerConfig):
        super().__init__()
        self.embed = SharedEmbedding(cfg.vocab_size, cfg.embed_dim)
        self.init_h = nn.Linear(cfg.feature_dim, cfg.hidden)
        self.init_c = nn.Linear(cfg.feature_dim, cfg.hidden)
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden, batch_first=True)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(cfg.hidden, cfg.vocab_size)

    def init_state(self, pooled: torch.Tensor, grid: torch.Tensor | None) -> dict[str, torch.Tensor]:
        v = self.drop(pooled)  # [B, D]
        return {"h": torch.tanh(self.init_h(v)), "c": torch.tanh(self.init_c(v))}  # [B, H] each

    def forward(self, pooled, grid, tokens):
        """tokens [B, T] -> logits [B, T-1, V] predicting tokens[:, 1:], and an auxiliary loss (0)."""
        s = self.init_state(pooled, grid)
        x = self.drop(self.embed(tokens[:, :-1]))  # [B, T-1, E]
        y, _ = self.lstm(x, (s["h"].unsqueeze(0).contiguous(), s["c"].unsqueeze(0).contiguous()))  # [B, T-1, H]
        return self.out(self.drop(y)), pooled.new_zeros(())

    def step(self, state, prefix):
        """prefix [B, t] (last column is the input word) -> logits [B, V], new state."""
        h, c = decode_lstm_step(self.lstm, self.embed(prefix[:, -1]), state["h"], state["c"], suffix="_l0")
        return decode_linear(self.out, h), {"h": h, "c": c}


class MergeBLSTMDecoder(nn.Module):
    """The seeds' merge model: [forward LSTM(prefix) ; backward LSTM(reversed prefix) ; image] -> MLP -> next word.

    The backward direction reads only the prefix (w_t, w_{t-1}, .., <start>), recomputed for every prefix, so the
    model stays causal; training batches all B*(T-1) prefixes into one packed LSTM call.
    """

    per_image_state = frozenset({"img"})  # state that depends on the image only (see `beam_search`)

    def __init__(self, cfg: CaptionerConfig):
        super().__init__()
        self.embed = SharedEmbedding(cfg.vocab_size, cfg.embed_dim)
        self.fwd = nn.LSTM(cfg.embed_dim, cfg.hidden, batch_first=True)
        self.bwd = nn.LSTM(cfg.embed_dim, cfg.hidden, batch_first=True)
        self.img = nn.Linear(cfg.feature_dim, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)
        self.merge = nn.Linear(3 * cfg.hidden, cfg.hidden)
        self.out = nn.Linear(cfg.hidden, cfg.vocab_size)

    def _backward_states(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """x [M, L, E] reversed prefixes (left-aligned), lengths [M] -> final backward hidden state [M, H]."""
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        _, (h, _) = self.bwd(packed)
        return h[0]

    def _head(self, f, b, img):
        z = torch.relu(self.merge(self.drop(torch.cat([f, b, img], dim=-1))))
        return self.out(self.drop(z))

    def init_state(self, pooled, grid):
        B, H = pooled.shape[0], self.fwd.hidden_size
        z = pooled.new_zeros(B, H)
        return {"img": torch.relu(self.img(self.drop(pooled))), "h": z, "c": z.clone()}

    def forward(self, pooled, grid, tokens):
        B, T = tokens.shape
        L = T - 1
        img = torch.relu(self.img(self.drop(pooled)))  # [B, H]
        x = self.drop(self.embed(tokens[:, :-1]))  # [B, L, E]
        f, _ = self.fwd(x)  # [B, L, H]: forward state after reading prefix[:t+1]
        # prefix t reversed: x[t], x[t-1], .., x[0]  -> index matrix [L, L], padded with 0 (masked by lengths)
        t = torch.arange(L, device=tokens.device)
        idx = (t[:, None] - t[None, :]).clamp(min=0)  # [L, L]
        rev = x[:, idx]  # [B, L, L, E]
        lengths = (t + 1).repeat(B)  # [B*L]
        nonpad = (tokens[:, :-1] != PAD_ID).reshape(-1)  # only prefixes that end on a real token
        b = x.new_zeros(B * L, f.shape[-1])
        if nonpad.any():
            b[nonpad] = self._backward_states(rev.reshape(B * L, L, -1)[nonpad], lengths[nonpad])
        b = b.view(B, L, -1)
        return self._head(f, b, img[:, None].expand(B, L, -1)), pooled.new_zeros(())

    def step(self, state, prefix):
        x = self.embed(prefix)  # [B, t, E]
        y, (h, c) = self.fwd(x[:, -1:], (state["h"].unsqueeze(0).contiguous(), state["c"].unsqueeze(0).contiguous()))
        _, (hb, _) = self.bwd(torch.flip(x, dims=[1]))
        logits = self._head(y[:, 0], hb[0], state["img"])
        return logits, {"img": state["img"], "h": h[0], "c": c[0]}


class SoftAttentionDecoder(nn.Module):
    """Show, Attend and Tell (soft): each step attends over the N grid cells with the previous hidden state.

    With `refine_layers` > 0 the projected cells first pass through a small transformer encoder (pre-norm
    self-attention + feed-forward, as in the region refiners of AoANet and the M2 transformer): the frozen CNN made
    each cell's features from its own neighbourhood, and a cell that sees the others can say "the dog that holds the
    stick" where it alone says "dog". It runs once per image, on cached features, so it costs little in training or
    in a beam search.

    With `attribute_words` K > 0 (semantic attention, after You et al., CVPR 2016, and Yao et al., ICCV 2017): a
    linear head on the image's mean cell scores every content word of the vocabulary for "appears in this photo's
    captions", trained by binary cross-entropy on the words of its reference captions, and the K best-scoring words
    join the grid as extra cells (their embedding, projected and scaled by the word's probability). Why: the grid
    cells say what the CNN saw; the detected words say it in the caption's own vocabulary, and a word such as
    "snow" or "climbing" is then one attention step away rather than something the LSTM must infer from pixels."""

    per_image_state = frozenset({"feats", "att"})  # state that depends on the image only (see `beam_search`)
    takes_index = True  # forward() accepts features once per image (see Captioner.forward)

    def __init__(self, cfg: CaptionerConfig):
        super().__init__()
        P, A, H = cfg.feature_proj, cfg.attention_dim, cfg.hidden
        self.embed = SharedEmbedding(cfg.vocab_size, cfg.embed_dim)
        self.feat = nn.Linear(cfg.feature_dim, P)
        self.refine = None
        if cfg.refine_layers:
            layer = nn.TransformerEncoderLayer(P, nhead=8, dim_feedforward=2 * P, dropout=0.1, activation="gelu",
                                               batch_first=True, norm_first=True)
            self.refine = nn.TransformerEncoder(layer, cfg.refine_layers, enable_nested_tensor=False)
        self.att_feat = nn.Linear(P, A)
        self.att_h = nn.Linear(H, A)
        self.att_v = nn.Linear(A, 1)
        self.gate = nn.Linear(H, P)
        self.init_h = nn.Linear(P, H)
        self.init_c = nn.Linear(P, H)
        self.cell = nn.LSTMCell(cfg.embed_dim + P, H)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(H, cfg.vocab_size)
        self.alpha_c, self.attribute_weight = cfg.alpha_c, cfg.attribute_weight
        self.attr_head = self.attr_proj = None
        if cfg.attribute_words:
            self.attribute_words = cfg.attribute_words
            self.attr_head = nn.Linear(P, cfg.vocab_size)
            nn.init.constant_(self.attr_head.bias, -4.0)  # a word is in few photos' captions: start near 2%
            self.attr_proj = nn.Linear(cfg.embed_dim, P)
            # which vocabulary ids count as words to detect; all until the captioner sets them from its vocabulary
            self.register_buffer("attr_allowed", torch.ones(cfg.vocab_size, dtype=torch.bool), persistent=False)

    def set_attribute_vocabulary(self, allowed: torch.Tensor) -> None:
        """`allowed` [V] bool: the content words (`tags.candidate_words`) the attribute head may detect."""
        if self.attr_head is not None:
            self.attr_allowed.copy_(allowed)

    def _image_state(self, pooled, grid) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        if grid is None:
            raise I2TError("the attention decoder needs the encoder's spatial grid features")
        feats = self.feat(grid)  # [B, N, P]
        if self.refine is not None:
            feats = self.refine(feats)  # [B, N, P], each cell having looked at the others
        mean = feats.mean(1)  # [B, P]
        attr_logits = None
        if self.attr_head is not None:
            attr_logits = self.attr_head(mean).float().masked_fill(~self.attr_allowed, float("-inf"))  # [B, V]
            p, words = torch.sigmoid(attr_logits).topk(self.attribute_words, dim=-1)  # [B, K]
            cells = self.attr_proj(self.embed(words)) * p[..., None]  # [B, K, P]
            # after `mean`: the initial state reads the grid alone, as in a model trained without the words
            feats = torch.cat([feats, cells.to(feats.dtype)], 1)  # [B, N + K, P]
        return ({"feats": feats, "att": self.att_feat(feats),  # [B, N(+K), A]
                 "h": torch.tanh(self.init_h(mean)), "c": torch.tanh(self.init_c(mean))}, attr_logits)

    def init_state(self, pooled, grid):
        return self._image_state(pooled, grid)[0]

    def _attribute_loss(self, attr_logits: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor | None):
        """Binary cross-entropy of the word detector against the words of each image's captions in the batch
        (with `index`, all of its captions), summed over the allowed words, averaged over images."""
        rows = index if index is not None else torch.arange(tokens.shape[0], device=tokens.device)
        target = torch.zeros_like(attr_logits)
        target[rows[:, None].expand_as(tokens), tokens] = 1.0
        target[:, PAD_ID] = 0.0
        allowed = self.attr_allowed[None]
        logits = attr_logits.masked_fill(~allowed, 0.0)  # -inf would make NaN; these terms are dropped below
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        return (bce * allowed).sum(1).mean()

    def _attend(self, s):
        e = self.att_v(torch.tanh(s["att"] + decode_linear(self.att_h, s["h"])[:, None])).squeeze(-1)  # [B, N]
        alpha = torch.softmax(e, dim=-1)
        ctx = torch.bmm(alpha[:, None], s["feats"])[:, 0]  # [B, P]
        return torch.sigmoid(decode_linear(self.gate, s["h"])) * ctx, alpha

    def forward(self, pooled, grid, tokens, index=None):
        """Steps run on a shrinking batch (captions sorted by length), so padding costs nothing; with `index`
        (see Captioner.forward) the image's grid is projected once for all its captions."""
        B, T = tokens.shape
        lengths = (tokens != PAD_ID).sum(1) - 1  # steps per caption
        order = torch.argsort(lengths, descending=True)
        inv = torch.argsort(order)
        tokens, lengths = tokens[order], lengths[order]
        if index is None:
            s, attr_logits = self._image_state(pooled[order], grid[order])
        else:
            per_image, attr_logits = self._image_state(pooled, grid)
            s = {k: v[index[order]] for k, v in per_image.items()}
        x = self.drop(self.embed(tokens[:, :-1]))  # [B, T-1, E]
        hs = x.new_zeros(B, T - 1, self.cell.hidden_size)
        alphas = x.new_zeros(B, T - 1, s["feats"].shape[1])
        h, c = s["h"], s["c"]
        for t in range(T - 1):
            bt = int((lengths > t).sum())
            if bt == 0:
                break
            st = {"feats": s["feats"][:bt], "att": s["att"][:bt], "h": h[:bt]}
            ctx, alpha = self._attend(st)
            h, c = self.cell(torch.cat([x[:bt, t], ctx], -1), (h[:bt], c[:bt]))
            hs[:bt, t] = h.to(hs.dtype)  # under CPU bf16 autocast the step's products come back in bf16
            alphas[:bt, t] = alpha.to(alphas.dtype)
        reg = ((1.0 - alphas.sum(1)) ** 2).mean()  # doubly stochastic: each cell attended ~once over the caption
        aux = self.alpha_c * reg
        if attr_logits is not None:
            aux = aux + self.attribute_weight * self._attribute_loss(attr_logits, tokens,
                                                                     None if index is None else index[order])
        # one vocabulary projection for all real steps (a single large matmul is far cheaper than T small ones);
        # padded positions keep logits of zero, which the loss ignores
        real = torch.arange(T - 1, device=tokens.device)[None] < lengths[:, None]
        logits = hs.new_zeros(B, T - 1, self.out.out_features)
        logits[real] = self.out(self.drop(hs[real])).to(logits.dtype)
        return logits[inv], aux

    def step(self, state, prefix):
        ctx, _ = self._attend(state)
        h, c = decode_lstm_step(self.cell, torch.cat([self.embed(prefix[:, -1]), ctx], -1), state["h"], state["c"])
        return decode_linear(self.out, h), {**state, "h": h, "c": c}


DECODERS.add("lstm", ShowTellDecoder)
DECODERS.add("blstm", MergeBLSTMDecoder)
DECODERS.add("attention", SoftAttentionDecoder)


class EnsembleDecoder(nn.Module):
    """Decoders trained apart (other seeds), read as one: at every step the members' log-probabilities are averaged
    (a product of experts, renormalised by the search's log-softmax). Members that err differently cancel each
    other's slips; the encoder, which costs most at inference, is shared and runs once.

    It offers the same `init_state` / `step` / `forward` as a single decoder, so every search works unchanged."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.per_image_state = frozenset(f"{i}.{k}" for i, m in enumerate(members)
                                         for k in getattr(m, "per_image_state", ()))

    def init_state(self, pooled, grid):
        return {f"{i}.{k}": v for i, m in enumerate(self.members) for k, v in m.init_state(pooled, grid).items()}

    def _member_state(self, state: dict, i: int) -> dict:
        tag = f"{i}."
        return {k[len(tag):]: v for k, v in state.items() if k.startswith(tag)}

    def step(self, state, prefix):
        logps, new = [], {}
        for i, m in enumerate(self.members):
            logits, st = m.step(self._member_state(state, i), prefix)
            logps.append(torch.log_softmax(logits.float(), -1))
            new.update({f"{i}.{k}": v for k, v in st.items()})
        return torch.stack(logps).mean(0), new

    def forward(self, pooled, grid, tokens):
        outs = [m(pooled, grid, tokens) for m in self.members]
        logp = torch.stack([torch.log_softmax(o[0].float(), -1) for o in outs]).mean(0)
        return logp, torch.stack([o[1] for o in outs]).mean()


# ---------------------------------------------------------------------------------------------------------------
# The captioner


class Captioner(nn.Module):
    """Decoder + vocabulary (+ the encoder, created lazily for captioning photos)."""

    def __init__(self, config: CaptionerConfig, vocab: Vocabulary):
        super().__init__()
        if config.vocab_size != len(vocab):
            raise I2TError(f"captioner config has vocab_size {config.vocab_size} but the vocabulary has {len(vocab)}")
        if config.feature_dim <= 0:
            raise I2TError("captioner config needs feature_dim (the encoder's feature size)")
        self.config = config
        self.vocab = vocab
        if config.members < 1:
            raise I2TError(f"members must be at least 1, not {config.members}")
        built = [DECODERS.get(c.decoder)(c) for c in config.member_configs()]
        if any(c.attribute_words for c in config.member_configs()):
            allowed = torch.tensor([i >= len(SPECIALS) and candidate_words(w) == [w] for i, w in enumerate(vocab.itos)])
            for d in built:
                if hasattr(d, "set_attribute_vocabulary"):
                    d.set_attribute_vocabulary(allowed)
        self.decoder = built[0] if config.members == 1 else EnsembleDecoder(built)
        self.encoder: nn.Module | None = None

    # -- training -----------------------------------------------------------------------------------------------

    def forward(self, tokens: torch.Tensor, pooled: torch.Tensor | None = None, grid: torch.Tensor | None = None,
                images: torch.Tensor | None = None, index: torch.Tensor | None = None):
        """Teacher forcing: tokens [B, T] with features pooled [B, D] (+ grid [B, N, D] for attention), or raw
        images [B, 3, S, S] run through the attached encoder (end-to-end training of small encoders).
        With `index` [B], the features (or images) are given once per image, [U, ...], and caption b belongs to
        image index[b]: the encoder and the attention decoder's projections then run once per image.
        Returns (logits [B, T-1, V] predicting tokens[:, 1:], auxiliary loss [])."""
        if images is not None:
            if self.encoder is None:
                raise I2TError("training on images needs an attached encoder")
            pooled, grid = self.encoder(images)
        if index is None:
            return self.decoder(pooled, grid, tokens)
        if getattr(self.decoder, "takes_index", False):
            return self.decoder(pooled, grid, tokens, index=index)
        return self.decoder(pooled[index], None if grid is None else grid[index], tokens)

    def loss_from_logits(self, logits: torch.Tensor, aux: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Cross-entropy over real target tokens (label smoothing optional) + the decoder's auxiliary loss, weighted
        by the decoder (the attention decoder's alpha_c * attention regulariser and its word-detection loss)."""
        target = tokens[:, 1:]
        # in fp32 even under bf16 autocast: a softmax over thousands of words in 8 mantissa bits is too coarse
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=PAD_ID,
                             label_smoothing=self.config.label_smoothing)
        return ce + aux

    def loss(self, tokens, pooled=None, grid=None, images=None) -> torch.Tensor:
        logits, aux = self(tokens, pooled, grid, images)
        return self.loss_from_logits(logits, aux, tokens)

    # -- encoder ------------------------------------------------------------------------------------------------

    def attach_encoder(self, encoder: nn.Module) -> None:
        """Use `encoder` for `caption_images` (and store it in checkpoints when `config.store_encoder`)."""
        if getattr(encoder, "num_features", self.config.feature_dim) != self.config.feature_dim:
            raise I2TError(f"encoder gives {encoder.num_features}-d features, the decoder expects {self.config.feature_dim}")
        self.encoder = encoder.to(next(self.decoder.parameters()).device).eval()

    def ensure_encoder(self) -> nn.Module:
        """The encoder, built through `create_encoder` with its pretrained weights on first use."""
        if self.encoder is None:
            from img2text2img.models.encoders import create_encoder

            enc = create_encoder(self.config.encoder, pretrained=not self.config.store_encoder)
            want, got = self.config.encoder_weights_sha256, getattr(enc, "weights_sha256", "")
            if want and got and want != got:
                warnings.warn(f"encoder {self.config.encoder} weights differ from those the captioner was trained on "
                              f"({got[:12]} vs {want[:12]}); captions may be poor", stacklevel=2)
            self.attach_encoder(enc)
        return self.encoder

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        """Decoder weights, plus encoder weights only for encoders that cannot be rebuilt from pretrained files."""
        state = {k: v for k, v in self.state_dict().items() if not k.startswith("encoder.")}
        if self.config.store_encoder:
            if self.encoder is None:
                raise I2TError(f"{self.config.encoder} has no pretrained weights; attach the encoder before saving")
            state.update({f"encoder.{k}": v for k, v in self.encoder.state_dict().items()})
        return state

    def save(self, path: str | Path, metrics: dict | None = None, info: dict | None = None, half: bool = False) -> Path:
        from img2text2img.checkpoint import save_checkpoint

        return save_checkpoint(path, kind=KIND, config=config_to_dict(self.config), state_dict=self.checkpoint_state(),
                               vocab=self.vocab, metrics=metrics, info=info, half=half)

    @classmethod
    def from_checkpoint(cls, ckpt) -> Captioner:
        cfg = config_from_dict(CaptionerConfig, ckpt.config)
        model = cls(cfg, ckpt.vocab)
        dec = {k: v for k, v in ckpt.state_dict.items() if not k.startswith("encoder.")}
        missing, unexpected = model.load_state_dict(dec, strict=False)
        missing = [k for k in missing if not k.startswith("encoder.")]
        if missing or unexpected:
            raise I2TError(f"{ckpt.path}: captioner weights do not match its config "
                           f"(missing {missing[:3]}, unexpected {unexpected[:3]})")
        if cfg.store_encoder:
            from img2text2img.models.encoders import create_encoder

            enc = create_encoder(cfg.encoder, pretrained=False)
            enc_state = {k[len("encoder."):]: v for k, v in ckpt.state_dict.items() if k.startswith("encoder.")}
            try:
                enc.load_state_dict(enc_state, strict=True)
            except RuntimeError:
                raise I2TError(f"{ckpt.path}: stored {cfg.encoder} encoder weights do not match the encoder") from None
            model.attach_encoder(enc)
        return model.eval()

    @property
    def num_decoder_parameters(self) -> int:
        return sum(p.numel() for p in self.decoder.parameters())

    # -- decoding -----------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def decode_features(self, pooled: torch.Tensor, grid: torch.Tensor | None = None, beam_size: int | None = None,
                        max_len: int | None = None) -> list[CaptionResult]:
        """Caption a batch of encoder features: pooled [B, D], grid [B, N, D] (attention only). Greedy at beam 1;
        `beam_size=None` is the model's own (`config.beam_size`)."""
        beam_size = self.config.beam_size if beam_size is None else beam_size
        device = next(self.decoder.parameters()).device
        pooled = pooled.to(device, torch.float32)
        grid = grid.to(device, torch.float32) if (grid is not None and self.config.uses_grid) else None
        max_len = max_len or self.config.max_len
        if beam_size <= 1:
            ids, lp = greedy_search(self.decoder, pooled, grid, max_len, self.config.no_repeat_ngram)
        else:
            ids, lp = beam_search(self.decoder, pooled, grid, beam_size, max_len, self.config.length_alpha,
                                  self.config.no_repeat_ngram)
        out = []
        for row, score in zip(ids.tolist(), lp.tolist()):
            toks = self.vocab.decode_tokens(row)
            out.append(CaptionResult(" ".join(toks), toks, float(score)))
        return out

    @torch.inference_mode()
    def encode_images(self, images: Sequence) -> tuple[torch.Tensor, torch.Tensor]:
        """PIL images -> (pooled [B, D], grid [B, N, D]) through the encoder and its preprocessing."""
        enc = self.ensure_encoder()
        tf = enc.transform()
        device = next(self.decoder.parameters()).device
        x = torch.stack([tf(im) for im in images]).to(device)
        # A frozen pretrained encoder runs as a fast frozen copy (ONNX Runtime or TorchScript, 1.7-2.5x faster on
        # the CPU; see Encoder.for_bulk_inference), built on first use and kept while the encoder, device and thread
        # count stay the same. A plain tuple attribute, so the copy never becomes a submodule or enters a checkpoint.
        cached = getattr(self, "_fast_encoder", None)
        if cached is None or cached[0] is not enc or cached[1] != _encoder_key(enc, device):
            fast = enc.for_bulk_inference(x) if hasattr(enc, "for_bulk_inference") else enc
            self._fast_encoder = (enc, _encoder_key(enc, device), fast)
        if self.config.mirror_average:
            from img2text2img.models.encoders import MirrorAverage

            return MirrorAverage(self._fast_encoder[2], enc.grid_hw)(x)
        return self._fast_encoder[2](x)

    def warm_up(self) -> None:
        """Build the encoder's fast frozen copy now (for ONNX Runtime an export of a second or more), on a blank
        picture, so that the first photo's timing (`i2t caption --json` reports milliseconds per photo) is the
        photo's own and not the one-time set-up's."""
        from PIL import Image

        self.encode_images([Image.new("RGB", (224, 224))])  # the encoder's preprocessing resizes it

    def use_int8(self, calibration: Sequence | torch.Tensor | None) -> bool:
        """Encode with an int8 copy of the encoder from now on (`calibration` = ~100 real photos, PIL images or
        already preprocessed [N, 3, S, S]), or go back to fp32 with None. Returns whether int8 is now in use.

        Why opt-in: ~2x faster encoding on the CPU, but features move a little and some captions change (see
        `Encoder.quantized_for_inference`, which also falls back to fp32 with a warning when it cannot quantize).
        The int8 copy is kept like the frozen fp32 one and dropped when the encoder or device changes."""
        self._fast_encoder = None
        if calibration is None:
            return False
        enc = self.ensure_encoder()
        if not hasattr(enc, "quantized_for_inference"):
            warnings.warn("this encoder cannot be quantized; using fp32", stacklevel=2)
            return False
        device = next(self.decoder.parameters()).device
        x = calibration if isinstance(calibration, torch.Tensor) else torch.stack([enc.transform()(im)
                                                                                   for im in calibration])
        fast = enc.quantized_for_inference(x.to(device))
        self._fast_encoder = (enc, _encoder_key(enc, device), fast)
        from img2text2img.models.int8 import QuantizedEncoder

        return isinstance(fast, QuantizedEncoder)

    @torch.inference_mode()
    def caption_images(self, images: Sequence, beam_size: int | None = None, max_len: int | None = None,
                       batch_size: int = 32) -> list[CaptionResult]:
        """Caption PIL images (any size; the encoder's transform resizes them), `batch_size` at a time.

        With more than one batch, the next batch is encoded on a second thread while this one is decoded: the
        encoder (ONNX Runtime or TorchScript) runs without the GIL, and the decoder's many small per-word steps
        leave the cores idle part of the time (measured: 0-3% more images/s on 2 cores, within the noise;
        scripts/bench_caption_stages.py). Each batch is encoded and decoded exactly as it would be alone."""
        self.eval()
        batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        out: list[CaptionResult] = []
        if len(batches) < 2:
            for batch in batches:
                out.extend(self.decode_features(*self.encode_images(batch), beam_size=beam_size, max_len=max_len))
            return out
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1, thread_name_prefix="i2t-encode") as pool:
            pending = pool.submit(self.encode_images, batches[0])
            for j in range(len(batches)):
                pooled, grid = pending.result()
                if j + 1 < len(batches):
                    pending = pool.submit(self.encode_images, batches[j + 1])
                out.extend(self.decode_features(pooled, grid, beam_size=beam_size, max_len=max_len))
        return out

    @torch.inference_mode()
    def text_logprob(self, images: Sequence, texts: Sequence[str], batch_size: int = 32) -> torch.Tensor:
        """How likely this captioner finds each text for its image: the summed log-probability of the words and
        <end> of `texts[i]` given `images[i]` (PIL), teacher-forced, dropout off -> FloatTensor [len(images)].

        Why: it lets a captioner judge pictures it did not draw, which is what reranking a generator's samples
        needs (`img2text2img.rerank`). Words outside this captioner's vocabulary count as <unk>, as in training."""
        if len(images) != len(texts):
            raise I2TError(f"{len(images)} images but {len(texts)} texts")
        out = []
        with evaluating(self):
            for i in range(0, len(images), batch_size):
                pooled, grid = self.encode_images(images[i:i + batch_size])
                tokens = pad_batch([self.vocab.encode(t, max_len=self.config.max_len)
                                    for t in texts[i:i + batch_size]]).to(pooled.device)
                logits, _ = self.decoder(pooled.float(), grid.float() if self.config.uses_grid else None, tokens)
                logp = torch.log_softmax(logits.float(), -1).gather(2, tokens[:, 1:, None])[..., 0]
                out.append((logp * (tokens[:, 1:] != PAD_ID)).sum(1).cpu())
        return torch.cat(out) if out else torch.zeros(0)


def _encoder_key(enc: nn.Module, device: torch.device) -> tuple:
    # what a cached fast encoder copy depends on besides the encoder itself (ONNX Runtime fixes its thread count)
    return (device, enc.training, torch.get_num_threads())


# ---------------------------------------------------------------------------------------------------------------
# Search


def _select(state: dict[str, torch.Tensor], idx: torch.Tensor, keep: frozenset = frozenset()) -> dict[str, torch.Tensor]:
    """The state's rows `idx`; keys in `keep` are passed through as they are."""
    return {k: (v if k in keep else v.index_select(0, idx)) for k, v in state.items()}


def _never_emit(logp: torch.Tensor) -> torch.Tensor:
    # <pad> and <start> are never targets; ruling them out keeps an undertrained model from emitting them.
    logp = logp.clone()
    logp[:, PAD_ID] = -math.inf
    logp[:, START_ID] = -math.inf
    return logp


def _ban_repeated_ngrams(logp: torch.Tensor, prefix: torch.Tensor, n: int) -> torch.Tensor:
    """Rule out, per row, each word that would complete an n-gram the row's prefix already holds.

    Why: a model trained word by word can loop ("and a blue shirt and a blue shirt"); beam search then keeps the
    loop because each word is likely. prefix [R, T] starts with <start>; logp [R, V] scores position T.
    """
    if n <= 0 or prefix.shape[1] < n:
        return logp
    windows = prefix.unfold(1, n, 1)  # [R, T-n+1, n]: every n-gram so far
    tail = prefix[:, prefix.shape[1] - (n - 1):]  # the n-1 words the next one would follow
    match = (windows[..., :n - 1] == tail[:, None, :]).all(-1)  # [R, T-n+1]
    # a non-matching window bans <pad>, which _never_emit has already ruled out
    banned = torch.where(match, windows[..., n - 1], torch.full_like(match, PAD_ID, dtype=torch.long))
    return logp.scatter(1, banned, -math.inf)


def greedy_search(decoder: nn.Module, pooled, grid, max_len: int,
                  no_repeat_ngram: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely word at each step -> (ids [B, <=max_len+1], summed logprob [B]); rows stop at <end>."""
    B = pooled.shape[0]
    state = decoder.init_state(pooled, grid)
    prefix = torch.full((B, 1), START_ID, dtype=torch.long, device=pooled.device)
    done = torch.zeros(B, dtype=torch.bool, device=pooled.device)
    total = pooled.new_zeros(B)
    for _ in range(max_len + 1):
        logits, state = decoder.step(state, prefix)
        logp = _ban_repeated_ngrams(_never_emit(torch.log_softmax(logits.float(), -1)), prefix, no_repeat_ngram)
        lp, nxt = logp.max(-1)
        total = total + torch.where(done, torch.zeros_like(lp), lp)
        nxt = torch.where(done, torch.full_like(nxt, PAD_ID), nxt)
        prefix = torch.cat([prefix, nxt[:, None]], 1)
        done = done | (nxt == END_ID)
        if bool(done.all()):
            break
    return prefix[:, 1:], total


def sample_search(decoder: nn.Module, pooled, grid, n: int, max_len: int,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw `n` captions per image from the model's own distribution, keeping gradients (self-critical training).

    -> (ids [B*n, L] image-major, word log-probabilities [B*n, L], mask [B*n, L] of real words and <end>). Rows
    stop at <end>; later positions are <pad> with mask 0. `generator` seeds the draws (on the decoder's device).
    """
    B = pooled.shape[0]
    dev = pooled.device
    state = decoder.init_state(pooled, grid)
    state = _select(state, torch.arange(B, device=dev).repeat_interleave(n))
    prefix = torch.full((B * n, 1), START_ID, dtype=torch.long, device=dev)
    done = torch.zeros(B * n, dtype=torch.bool, device=dev)
    logps, masks = [], []
    for _ in range(max_len + 1):
        logits, state = decoder.step(state, prefix)
        logp = _never_emit(torch.log_softmax(logits.float(), -1))
        word = torch.multinomial(logp.detach().exp(), 1, generator=generator)[:, 0]
        alive = ~done
        logps.append(logp.gather(1, word[:, None])[:, 0] * alive)
        masks.append(alive)
        word = torch.where(done, torch.full_like(word, PAD_ID), word)
        prefix = torch.cat([prefix, word[:, None]], 1)
        done = done | (word == END_ID)
        if bool(done.all()):
            break
    return prefix[:, 1:], torch.stack(logps, 1), torch.stack(masks, 1)


def beam_search(decoder: nn.Module, pooled, grid, beam_size: int, max_len: int,
                length_alpha: float = 0.7, no_repeat_ngram: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched beam search -> (ids [B, L], summed logprob [B]) of the best beam per image.

    Beams of all images run as one batch of B*k rows. A finished beam (ended with <end>) can only be extended by
    <pad> at no cost, so it keeps its score and competes with the live beams. The final choice ranks beams by
    logprob / length ** length_alpha (length counts words plus <end>), which stops beam search preferring very short
    captions. Once all k beams of an image have finished, nothing can change its result, so the image leaves the
    batch: the decoder stops spending steps on it (a fifth of batched decoding at beam 3 on Flickr8k photos).
    """
    B, k = pooled.shape[0], beam_size
    dev = pooled.device
    state = decoder.init_state(pooled, grid)
    state = _select(state, torch.arange(B, device=dev).repeat_interleave(k))  # [B*k, ...]
    per_image = getattr(decoder, "per_image_state", frozenset())
    prefix = torch.full((B * k, 1), START_ID, dtype=torch.long, device=dev)
    scores = torch.full((B, k), -math.inf, device=dev)
    scores[:, 0] = 0.0  # all beams start identical: keep one alive so the first step does not pick duplicates
    done = torch.zeros(B * k, dtype=torch.bool, device=dev)
    lengths = torch.zeros(B * k, device=dev)
    images = torch.arange(B, device=dev)  # the input row of each image still in the batch
    best_ids: list[torch.Tensor | None] = [None] * B
    best_lp = pooled.new_zeros(B)

    def finish(which: torch.Tensor) -> None:  # record the best beam of the images at positions `which`
        n = scores.shape[0]
        norm = scores / lengths.view(n, k).clamp(min=1.0) ** length_alpha
        norm = torch.where(torch.isfinite(scores), norm, torch.full_like(norm, -math.inf))
        best = norm.argmax(-1)
        for i in which.tolist():
            best_ids[int(images[i])] = prefix[i * k + int(best[i]), 1:]
            best_lp[images[i]] = scores[i, best[i]]

    for _ in range(max_len + 1):
        logits, state = decoder.step(state, prefix)
        logp = _ban_repeated_ngrams(_never_emit(torch.log_softmax(logits.float(), -1)), prefix,
                                    no_repeat_ngram)  # [b*k, V]
        b, V = scores.shape[0], logp.shape[-1]
        frozen = torch.full_like(logp, -math.inf)
        frozen[:, PAD_ID] = 0.0
        logp = torch.where(done[:, None], frozen, logp)
        cand = (scores.view(b * k, 1) + logp).view(b, k * V)
        scores, flat = cand.topk(k, dim=-1)  # [b, k]
        beam = flat // V
        word = flat % V
        src = (torch.arange(b, device=dev)[:, None] * k + beam).view(-1)  # [b*k] rows to continue
        # a beam only ever continues a beam of its own image, so per-image state (the attention's projected grid,
        # the largest tensors here) is already in the right rows: re-gathering it was ~15% of batched decoding
        state = _select(state, src, per_image)
        prefix = torch.cat([prefix.index_select(0, src), word.view(-1, 1)], 1)
        was_done = done.index_select(0, src)
        lengths = lengths.index_select(0, src) + (~was_done).float()
        done = was_done | (word.view(-1) == END_ID)
        finished = done.view(b, k).all(1)
        if bool(finished.any()):
            finish(finished.nonzero()[:, 0])
            keep = (~finished).nonzero()[:, 0]
            if keep.numel() == 0:
                break
            rows = (keep[:, None] * k + torch.arange(k, device=dev)).view(-1)
            state = _select(state, rows)
            prefix, done, lengths = prefix.index_select(0, rows), done.index_select(0, rows), lengths.index_select(0, rows)
            scores, images = scores.index_select(0, keep), images.index_select(0, keep)
    else:  # max_len reached with beams still open
        finish(torch.arange(scores.shape[0], device=dev))
    width = max((int(t.numel()) for t in best_ids), default=0)
    ids = torch.full((B, width), PAD_ID, dtype=torch.long, device=dev)
    for i, t in enumerate(best_ids):
        ids[i, :t.numel()] = t
    return ids, best_lp


# ---------------------------------------------------------------------------------------------------------------
# Library entry point


def default_captioner_dir() -> Path:
    """The captioner shipped inside the package."""
    return Path(__file__).resolve().parent.parent / "pretrained" / "captioner"


def load_captioner(model: str | Path | Captioner | None = None, device: str = "cpu") -> Captioner:
    """A captioner from a folder (checkpoint or run folder), an already loaded model, or None for the shipped one."""
    if isinstance(model, Captioner):
        return model
    from img2text2img.models import load_model

    path = Path(model) if model is not None else default_captioner_dir()
    if model is None and not (path / "config.json").exists():
        raise I2TError(f"no default captioner shipped at {path}; pass --model DIR")
    return load_model(path, kind=KIND, device=device)


def _load_members(models: Sequence[str | Path | Captioner], verb: str,
                  stored_encoders: bool = False) -> list[Captioner]:
    """Load the captioners to ensemble or average (`verb`), with the checks both need: at least two, one
    vocabulary, and no stored encoder unless `stored_encoders` (an ensemble combines decoders only)."""
    loaded = [load_captioner(m) for m in models]
    if len(loaded) < 2:
        raise I2TError(f"cannot {verb} fewer than two captioners: give at least two")
    for m in loaded[1:]:
        if m.vocab.itos != loaded[0].vocab.itos:
            raise I2TError(f"cannot {verb} captioners with different vocabularies (train them on the same data "
                           "with the same --min-count)")
    if not stored_encoders and any(m.config.store_encoder for m in loaded):
        raise I2TError(f"cannot {verb} captioners that store their own encoder (only decoders are combined)")
    return loaded


def _mean_state(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of state dicts (in float64, back to each tensor's dtype); integer buffers from the first."""
    return {k: (sum(st[k].double() for st in states) / len(states)).to(v.dtype) if v.is_floating_point() else v
            for k, v in states[0].items()}


def ensemble_captioners(models: Sequence[str | Path | Captioner]) -> Captioner:
    """One captioner whose decoder is the ensemble of `models`' decoders (`EnsembleDecoder`).

    The members must read the same features (encoder and its weights) with the same vocabulary; their decoders may
    differ in type and size (an LSTM and an attention decoder err differently, which is what an ensemble wants).
    Beam search, length normalisation and maximum length are taken from the first."""
    loaded = _load_members(models, "ensemble")
    first = loaded[0]
    shared = ("encoder", "encoder_weights_sha256", "feature_dim")
    decoders, member_cfgs = [], []
    for m in loaded:
        c = m.config
        if any(getattr(c, f) != getattr(first.config, f) for f in shared):
            raise I2TError(f"cannot ensemble {c.encoder}+{c.decoder} with {first.config.encoder}+{first.config.decoder}: "
                           "members must read the same encoder's features (same weights)")
        decoders.extend(m.decoder.members if isinstance(m.decoder, EnsembleDecoder) else [m.decoder])
        member_cfgs.extend(c.member_configs())
    overrides = tuple({f: getattr(mc, f) for f in MEMBER_FIELDS if getattr(mc, f) != getattr(first.config, f)}
                      for mc in member_cfgs)
    cfg = replace(first.config, members=len(decoders), member_overrides=overrides if any(overrides) else ())
    model = Captioner(cfg, first.vocab)
    for target, source in zip(model.decoder.members, decoders):
        target.load_state_dict(source.state_dict())
    return model.eval()


def average_captioners(models: Sequence[str | Path | Captioner]) -> Captioner:
    """One captioner whose weights are the mean of `models`' weights (a "model soup").

    Unlike an ensemble it costs nothing at decode time. It only makes sense for checkpoints of one lineage: epochs of
    a run, or a run and a fine-tune started from it (self-critical training), which stay in one basin of the loss;
    two runs trained apart from different random starts average to nonsense. The members must share the
    architecture and vocabulary; config (with its search) and vocabulary are taken from the first. Encoders stored
    in the checkpoints (fine-tuned ones, `encoder_trainable_blocks`) are averaged as well."""
    loaded = _load_members(models, "average", stored_encoders=True)
    first = loaded[0]

    def arch(m: Captioner) -> dict:
        # how it decodes, and how many encoder blocks were trained, say nothing about the weights' shapes: two
        # fine-tuning rounds of one lineage that trained different depths average like any two checkpoints
        not_arch = ("beam_size", "length_alpha", "no_repeat_ngram", "encoder_trainable_blocks")
        return {k: v for k, v in config_to_dict(m.config).items() if k not in not_arch}

    for m in loaded:
        if arch(m) != arch(first):
            raise I2TError("cannot average captioners of different architectures or encoders (their configs differ)")
    model = Captioner(replace(first.config), first.vocab)
    model.decoder.load_state_dict(_mean_state([m.decoder.state_dict() for m in loaded]))
    if first.config.store_encoder:
        from img2text2img.models.encoders import create_encoder

        enc = create_encoder(first.config.encoder, pretrained=False)
        enc.load_state_dict(_mean_state([m.encoder.state_dict() for m in loaded]))
        model.attach_encoder(enc)
    return model.eval()


def caption(images: Sequence, model: str | Path | Captioner | None = None, beam_size: int | None = None,
            max_len: int | None = None, batch_size: int = 32) -> list[CaptionResult]:
    """Caption images given as paths or PIL images. `model=None` uses the captioner shipped with the package."""
    from img2text2img.data import load_image

    cap = load_captioner(model)
    pil = [im if hasattr(im, "convert") else load_image(im) for im in images]
    return cap.caption_images(pil, beam_size=beam_size, max_len=max_len, batch_size=batch_size)


def timed_caption(model: Captioner, image, beam_size: int | None = None) -> tuple[CaptionResult, float]:
    """Caption one PIL image and return (result, milliseconds) - what `i2t caption --json` reports."""
    t0 = time.perf_counter()
    r = model.caption_images([image], beam_size=beam_size)[0]
    return r, (time.perf_counter() - t0) * 1000.0
