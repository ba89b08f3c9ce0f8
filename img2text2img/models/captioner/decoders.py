"""The three word decoders and their ensemble; all read words through the shared `SharedEmbedding`, so GloVe
initialisation works for every one.

- `lstm` - Show and Tell: the pooled image vector initialises the LSTM state; the LSTM reads the caption.
- `blstm` - the "merge" model: a bidirectional LSTM reads the caption prefix (backward direction over the prefix
  only, so nothing from the future leaks); its two final states and the image vector predict the next word.
- `attention` - Show, Attend and Tell (soft attention) over the encoder's spatial grid, with the gating scalar, the
  doubly stochastic regulariser and optionally detected words as extra cells.

`forward(pooled, grid, tokens)` (teacher forcing) returns logits and a dict of the decoder's auxiliary losses,
unweighted: how much each counts is the training recipe's choice. Shapes: B batch, T caption length (with
<start>/<end>), N grid cells, D feature size, V vocabulary.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from img2text2img.errors import I2TError
from img2text2img.models.captioner.config import CaptionerConfig
from img2text2img.models.captioner.fast_linear import decode_linear, decode_lstm_step
from img2text2img.registry import Registry
from img2text2img.vocab import PAD_ID, SharedEmbedding

DECODERS: Registry[type[nn.Module]] = Registry("caption decoder")


@DECODERS.register("lstm")
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
        """tokens [B, T] -> logits [B, T-1, V] predicting tokens[:, 1:], and no auxiliary losses."""
        s = self.init_state(pooled, grid)
        x = self.drop(self.embed(tokens[:, :-1]))  # [B, T-1, E]
        y, _ = self.lstm(x, (s["h"].unsqueeze(0).contiguous(), s["c"].unsqueeze(0).contiguous()))  # [B, T-1, H]
        return self.out(self.drop(y)), {}

    def step(self, state, prefix):
        """prefix [B, t] (last column is the input word) -> logits [B, V], new state."""
        h, c = decode_lstm_step(self.lstm, self.embed(prefix[:, -1]), state["h"], state["c"], suffix="_l0")
        return decode_linear(self.out, h), {"h": h, "c": c}


@DECODERS.register("blstm")
class MergeBLSTMDecoder(nn.Module):
    """The merge model: [forward LSTM(prefix) ; backward LSTM(reversed prefix) ; image] -> MLP -> next word.

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

    def backward_states(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
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
            b[nonpad] = self.backward_states(rev.reshape(B * L, L, -1)[nonpad], lengths[nonpad])
        b = b.view(B, L, -1)
        return self._head(f, b, img[:, None].expand(B, L, -1)), {}

    def step(self, state, prefix):
        x = self.embed(prefix)  # [B, t, E]
        y, (h, c) = self.fwd(x[:, -1:], (state["h"].unsqueeze(0).contiguous(), state["c"].unsqueeze(0).contiguous()))
        _, (hb, _) = self.bwd(torch.flip(x, dims=[1]))
        logits = self._head(y[:, 0], hb[0], state["img"])
        return logits, {"img": state["img"], "h": h[0], "c": c[0]}


@DECODERS.register("attention")
class SoftAttentionDecoder(nn.Module):
    """Show, Attend and Tell (soft): each step attends over the N grid cells with the previous hidden state.

    With `attribute_words` K > 0 (semantic attention): a
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
        self.att_feat = nn.Linear(P, A)
        self.att_h = nn.Linear(H, A)
        self.att_v = nn.Linear(A, 1)
        self.gate = nn.Linear(H, P)
        self.init_h = nn.Linear(P, H)
        self.init_c = nn.Linear(P, H)
        self.cell = nn.LSTMCell(cfg.embed_dim + P, H)
        self.drop = nn.Dropout(cfg.dropout)
        self.out = nn.Linear(H, cfg.vocab_size)
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

    def image_state(self, pooled, grid) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
        if grid is None:
            raise I2TError("the attention decoder needs the encoder's spatial grid features")
        feats = self.feat(grid)  # [B, N, P]
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
        return self.image_state(pooled, grid)[0]

    def attribute_loss(self, attr_logits: torch.Tensor, tokens: torch.Tensor, index: torch.Tensor | None):
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
            s, attr_logits = self.image_state(pooled[order], grid[order])
        else:
            per_image, attr_logits = self.image_state(pooled, grid)
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
        aux = {"attention": reg}
        if attr_logits is not None:
            aux["attributes"] = self.attribute_loss(attr_logits, tokens, None if index is None else index[order])
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
        names = {k for o in outs for k in o[1]}
        return logp, {k: torch.stack([o[1][k] for o in outs if k in o[1]]).mean() for k in sorted(names)}
