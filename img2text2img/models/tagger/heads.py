"""The two tag heads on the same image vector, so users can compare them.

- `RNNTagHead` (CNN-RNN): the image vector initialises an LSTM that reads tag embeddings and emits one tag after
  another until `<end>`. Targets are ordered by global frequency (ascending id in the tag vocabulary), so the decoder
  may only emit a tag with a larger id than the previous one (or `<end>`): the same mask in training and decoding
  rules out repeats by construction and shrinks the search space. Beam search runs over whole tag sequences.
- `BCETagHead`: one sigmoid per tag with binary cross-entropy; tags whose probability reaches the threshold are
  predicted. Its per-tag probabilities also give mAP.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from img2text2img.models.tagger.config import TaggerConfig
from img2text2img.vocab import END_ID, PAD_ID, SPECIALS, START_ID, SharedEmbedding

NEG = -1e4  # "impossible" logit; finite so fp16 and log_softmax stay NaN-free


def order_mask(prev: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """prev [...] (the previously emitted id, <start> at the first step) -> bool [..., V], True = not allowed.

    Allowed: `<end>`, and tags with an id larger than `prev` (targets are sorted by id). Never allowed: <pad>,
    <start>, <unk>, and any tag at or below `prev` (so no tag can repeat)."""
    ar = torch.arange(vocab_size, device=prev.device)
    bad = ar <= prev.unsqueeze(-1)  # ... x V
    bad = bad | (ar < len(SPECIALS))
    bad[..., END_ID] = False
    return bad


class RNNTagHead(nn.Module):
    """pooled [B, D] -> an LSTM over tag embeddings; `forward(features, inp [B, T]) -> logits [B, T, V]` (masked)."""

    def __init__(self, cfg: TaggerConfig):
        super().__init__()
        self.cfg = cfg
        self.drop = nn.Dropout(cfg.dropout)
        self.init_h = nn.Linear(cfg.feature_dim, cfg.hidden)
        self.init_c = nn.Linear(cfg.feature_dim, cfg.hidden)
        self.img_proj = nn.Linear(cfg.feature_dim, cfg.hidden)
        self.embed = SharedEmbedding(cfg.vocab_size, cfg.embed_dim)
        self.lstm = nn.LSTM(cfg.embed_dim, cfg.hidden, batch_first=True)
        self.out = nn.Linear(cfg.hidden, cfg.vocab_size)

    def init_state(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """features [B, D] -> (h0, c0) [1, B, H] each, and the image term [B, 1, H] added at every step."""
        f = self.drop(features)  # B x D
        h = torch.tanh(self.init_h(f)).unsqueeze(0)
        c = torch.tanh(self.init_c(f)).unsqueeze(0)
        return h, c, self.img_proj(f).unsqueeze(1)

    def step_logits(self, inp: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor]):
        """inp [B, T] ids -> (logits [B, T, V] with the order mask applied, new state).

        As in the CNN-RNN of Wang et al. (2016), the output joins the recurrent state (what was emitted so far) with
        a projection of the image at every step, so the image need not survive in the LSTM state alone."""
        h, c, img = state
        out, (h, c) = self.lstm(self.embed(inp), (h, c))  # B x T x H
        logits = self.out(self.drop(torch.relu(out + img)))  # B x T x V
        return logits.masked_fill(order_mask(inp, logits.shape[-1]), NEG), (h, c, img)

    def forward(self, features: torch.Tensor, inp: torch.Tensor) -> torch.Tensor:
        return self.step_logits(inp, self.init_state(features))[0]

    def loss(self, features: torch.Tensor, batch: dict, aux_bce: float = 0.0) -> tuple[torch.Tensor, dict]:
        """Sequence cross-entropy, plus `aux_bce` x a per-tag BCE on the image term alone: a gradient for every tag
        of an image at once, which makes a randomly initialised CNN learn faster than one tag per step."""
        h, c, img = self.init_state(features)
        logits = self.step_logits(batch["inp"], (h, c, img))[0]  # B x T x V
        loss = F.cross_entropy(logits.flatten(0, 1), batch["tgt"].flatten(), ignore_index=PAD_ID)
        if not aux_bce:
            return loss, {}
        aux_logits = self.out(self.drop(torch.relu(img[:, 0])))[:, len(SPECIALS):]  # B x (V-4)
        aux = F.binary_cross_entropy_with_logits(aux_logits, batch["multi_hot"][:, len(SPECIALS):])
        return loss + aux_bce * aux, {"seq": float(loss.detach()), "aux": float(aux.detach())}

    @torch.no_grad()
    def decode(self, features: torch.Tensor, beam: int = 3, max_tags: int | None = None) -> list[list[tuple[int, float]]]:
        """Beam search. features [B, D] -> per image the best sequence as [(tag id, p(tag | prefix, image))].

        Sequences are scored by their summed log-probability (the `<end>` step included), so the beam weighs "stop
        now" against "one more tag" with the model's own probabilities."""
        k = max(1, beam)
        T = max_tags or self.cfg.max_tags
        B, V = features.shape[0], self.cfg.vocab_size
        h, c, img = self.init_state(features)  # 1 x B x H, 1 x B x H, B x 1 x H
        h, c, img = h.repeat_interleave(k, 1), c.repeat_interleave(k, 1), img.repeat_interleave(k, 0)  # B*k rows
        dev = features.device
        seqs = torch.full((B * k, 0), PAD_ID, dtype=torch.long, device=dev)
        steps = torch.zeros((B * k, 0), device=dev)  # per-step log-probs
        score = torch.full((B, k), float("-inf"), device=dev)
        score[:, 0] = 0.0  # only one live hypothesis at the start
        score = score.view(-1)
        last = torch.full((B * k,), START_ID, dtype=torch.long, device=dev)
        done = torch.zeros(B * k, dtype=torch.bool, device=dev)
        for t in range(T + 1):
            logits, (h2, c2, _) = self.step_logits(last.unsqueeze(1), (h, c, img))
            logp = F.log_softmax(logits[:, 0].float(), dim=-1)  # B*k x V
            logp = logp.masked_fill(logits[:, 0] <= NEG / 2, float("-inf"))  # masked ids are impossible, not unlikely
            if t == T:  # length limit: only <end> remains
                keep = logp[:, END_ID].clone()
                logp.fill_(float("-inf"))
                logp[:, END_ID] = keep
            # finished hypotheses continue with <pad> at no cost and nothing else
            logp[done] = float("-inf")
            logp[done, PAD_ID] = 0.0
            cand = (score.unsqueeze(1) + logp).view(B, k * V)
            top, idx = cand.topk(k, dim=1)  # B x k
            src = (idx // V + torch.arange(B, device=dev).unsqueeze(1) * k).view(-1)  # B*k rows they extend
            tok = (idx % V).view(-1)
            step_lp = logp.view(B, k * V).gather(1, idx).view(-1)
            seqs = torch.cat([seqs[src], tok.unsqueeze(1)], 1)
            steps = torch.cat([steps[src], step_lp.unsqueeze(1)], 1)
            score = top.view(-1)
            done = done[src] | (tok == END_ID) | (tok == PAD_ID)
            last = torch.where(done, last[src], tok)
            h, c = h2[:, src], c2[:, src]
            if bool(done.all()):
                break
        best = score.view(B, k).argmax(1) + torch.arange(B, device=dev) * k
        out = []
        for r in best.tolist():
            tags = []
            for tok, lp in zip(seqs[r].tolist(), steps[r].tolist()):
                if tok in (END_ID, PAD_ID):
                    break
                tags.append((tok, math.exp(lp)))
            out.append(tags)
        return out


class BCETagHead(nn.Module):
    """pooled [B, D] -> one logit per tag [B, V]; the special ids never fire."""

    def __init__(self, cfg: TaggerConfig):
        super().__init__()
        self.cfg = cfg
        self.drop = nn.Dropout(cfg.dropout)
        self.linear = nn.Linear(cfg.feature_dim, cfg.vocab_size)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.linear(self.drop(features))  # B x V

    def loss(self, features: torch.Tensor, batch: dict, aux_bce: float = 0.0) -> tuple[torch.Tensor, dict]:
        logits = self(features)[:, len(SPECIALS):]  # B x (V-4)
        return F.binary_cross_entropy_with_logits(logits, batch["multi_hot"][:, len(SPECIALS):]), {}

    @torch.no_grad()
    def probabilities(self, features: torch.Tensor) -> torch.Tensor:
        """features [B, D] -> p(tag) [B, V] with the specials at 0."""
        p = torch.sigmoid(self(features).float())
        p[:, : len(SPECIALS)] = 0.0
        return p

    @torch.no_grad()
    def decode(self, features: torch.Tensor, threshold: float = 0.5, top: int | None = None
               ) -> list[list[tuple[int, float]]]:
        th = threshold
        p = self.probabilities(features)
        out = []
        for row in p:
            vals, ids = row.sort(descending=True)
            keep = [(int(i), float(v)) for v, i in zip(vals.tolist(), ids.tolist()) if v >= th and i >= len(SPECIALS)]
            out.append(keep[:top] if top else keep)
        return out


HEAD_CLASSES = {"rnn": RNNTagHead, "bce": BCETagHead}
