"""Decoding: greedy, batched beam search, sampling (for self-critical training) and constrained beam search.

Every decoder offers the same step interface (`init_state(pooled, grid)`, `step(state, prefix) -> logits, state`),
so each search is written once. Shapes: B images, V vocabulary, state tensors [rows, ...].
"""
from __future__ import annotations

import math

import torch
from torch import nn

from img2text2img.openvocab.constraints import MAX_CONSTRAINTS
from img2text2img.vocab import END_ID, PAD_ID, START_ID, UNK_ID


def select_rows(state: dict[str, torch.Tensor], idx: torch.Tensor,
                keep: frozenset = frozenset()) -> dict[str, torch.Tensor]:
    """The state's rows `idx`; keys in `keep` are passed through as they are."""
    return {k: (v if k in keep else v.index_select(0, idx)) for k, v in state.items()}


def never_emit(logp: torch.Tensor) -> torch.Tensor:
    # <pad> and <start> are never targets, and <unk> is a word nobody can read: the decoder used to drop it, leaving
    # "a boy is holding a in his mouth". Masked after the softmax, so the other words keep their log-probabilities.
    logp = logp.clone()
    logp[:, PAD_ID] = -math.inf
    logp[:, START_ID] = -math.inf
    logp[:, UNK_ID] = -math.inf
    return logp


def say_once(logp: torch.Tensor, prefix: torch.Tensor, once: torch.Tensor | None) -> torch.Tensor:
    """-inf for the words of `once` (bool [V], `tags.said_once`) that a row's prefix [rows, t] already holds."""
    if once is None:
        return logp
    used = torch.zeros(logp.shape, dtype=torch.bool, device=logp.device).scatter_(1, prefix, True)
    return logp.masked_fill(used & once, -math.inf)


def greedy_search(decoder: nn.Module, pooled, grid, max_len: int,
                  once: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Most likely word at each step -> (ids [B, <=max_len+1], summed logprob [B]); rows stop at <end>."""
    B = pooled.shape[0]
    state = decoder.init_state(pooled, grid)
    prefix = torch.full((B, 1), START_ID, dtype=torch.long, device=pooled.device)
    done = torch.zeros(B, dtype=torch.bool, device=pooled.device)
    total = pooled.new_zeros(B)
    for _ in range(max_len + 1):
        logits, state = decoder.step(state, prefix)
        lp, nxt = say_once(never_emit(torch.log_softmax(logits.float(), -1)), prefix, once).max(-1)
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
    state = select_rows(state, torch.arange(B, device=dev).repeat_interleave(n))
    prefix = torch.full((B * n, 1), START_ID, dtype=torch.long, device=dev)
    done = torch.zeros(B * n, dtype=torch.bool, device=dev)
    logps, masks = [], []
    for _ in range(max_len + 1):
        logits, state = decoder.step(state, prefix)
        logp = never_emit(torch.log_softmax(logits.float(), -1))
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
                length_alpha: float = 0.7, once: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched beam search -> (ids [B, L], summed logprob [B]) of the best beam per image.

    Beams of all images run as one batch of B*k rows. A finished beam (ended with <end>) can only be extended by
    <pad> at no cost, so it keeps its score and competes with the live beams. The final choice ranks beams by
    logprob / length ** length_alpha (length counts words plus <end>), which stops beam search preferring very short
    captions. Once all k beams of an image have finished, nothing can change its result, so the image leaves the
    batch and the decoder stops spending steps on it. `once`: words a caption may hold only once (`say_once`).
    """
    B, k = pooled.shape[0], beam_size
    dev = pooled.device
    state = decoder.init_state(pooled, grid)
    state = select_rows(state, torch.arange(B, device=dev).repeat_interleave(k))  # [B*k, ...]
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
        logp = say_once(never_emit(torch.log_softmax(logits.float(), -1)), prefix, once)  # [b*k, V]
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
        # the largest tensors here) is already in the right rows and need not be re-gathered
        state = select_rows(state, src, per_image)
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
            state = select_rows(state, rows)
            prefix, done, lengths = prefix.index_select(0, rows), done.index_select(0, rows), lengths.index_select(0, rows)
            scores, images = scores.index_select(0, keep), images.index_select(0, keep)
    else:  # max_len reached with beams still open
        finish(torch.arange(scores.shape[0], device=dev))
    width = max((int(t.numel()) for t in best_ids), default=0)
    ids = torch.full((B, width), PAD_ID, dtype=torch.long, device=dev)
    for i, t in enumerate(best_ids):
        ids[i, :t.numel()] = t
    return ids, best_lp




def constrained_beam_search(decoder: nn.Module, pooled, grid, constraints, beam_size: int, max_len: int,
                            length_alpha: float = 0.7, full_stop: int | None = None, once: torch.Tensor | None = None
                            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Constrained beam search (Anderson et al. 2017): the caption must contain one word of each constraint.

    `constraints[b]` lists up to MAX_CONSTRAINTS constraints of image b, each a list of alternative word ids (any of
    them satisfies it: "coffee" or "cup"). A finite-state machine whose state is the set of constraints met so far
    keeps a beam of `beam_size` per state; a word moves a hypothesis to the state that adds the constraints it
    meets. The result is the best hypothesis of the accepting state (all met), ranked as in `beam_search`.
    `full_stop` (the id of "."): only <end> may follow it, else a forced word is tacked on after the sentence
    ("two dogs play in the water . bear ."). `once`: as in `beam_search`.
    -> (ids [B, L], summed logprob [B], met [B] bool: False where no hypothesis met all, ids then the best found).
    """
    B, k = pooled.shape[0], beam_size
    if len(constraints) != B:
        raise ValueError(f"{len(constraints)} constraint lists for {B} images")
    if any(len(c) > MAX_CONSTRAINTS for c in constraints):
        raise ValueError(f"at most {MAX_CONSTRAINTS} constraints per image")
    dev = pooled.device
    C = max((len(c) for c in constraints), default=0)
    S = 2 ** C
    R = S * k  # rows per image
    state = decoder.init_state(pooled, grid)
    V = None
    # per image: the bits a word sets; constraints an image lacks count as met from the start
    start_state = torch.zeros(B, dtype=torch.long, device=dev)
    word_ids: list[list[tuple[int, int]]] = []
    for b, cons in enumerate(constraints):
        start_state[b] = sum(1 << j for j in range(len(cons), C))
        word_ids.append([(j, int(w)) for j, alts in enumerate(cons) for w in alts])
    state = select_rows(state, torch.arange(B, device=dev).repeat_interleave(R))  # [B*S*k, ...]
    per_image = getattr(decoder, "per_image_state", frozenset())
    prefix = torch.full((B * R, 1), START_ID, dtype=torch.long, device=dev)
    scores = torch.full((B, S, k), -math.inf, device=dev)
    scores[torch.arange(B, device=dev), start_state, 0] = 0.0
    done = torch.zeros(B * R, dtype=torch.bool, device=dev)
    lengths = torch.zeros(B * R, device=dev)
    next_state = None  # [B, S, 1, V]: the state a word leads to from each state
    for _ in range(max_len + 1):
        logits, state = decoder.step(state, prefix)
        logp = say_once(never_emit(torch.log_softmax(logits.float(), -1)), prefix, once)  # [B*R, V]
        if V is None:
            V = logp.shape[-1]
            bits = torch.zeros(B, V, dtype=torch.long, device=dev)
            for b, pairs in enumerate(word_ids):
                for j, w in pairs:
                    if not 0 <= w < V:
                        raise ValueError(f"constraint word id {w} is outside the vocabulary of {V}")
                    bits[b, w] |= 1 << j
            next_state = torch.arange(S, device=dev).view(1, S, 1, 1) | bits.view(B, 1, 1, V)
        if full_stop is not None:
            ended = torch.full_like(logp, -math.inf)
            ended[:, END_ID] = logp[:, END_ID]
            logp = torch.where((prefix[:, -1] == full_stop)[:, None], ended, logp)
        frozen = torch.full_like(logp, -math.inf)
        frozen[:, PAD_ID] = 0.0
        logp = torch.where(done[:, None], frozen, logp)
        cand = scores.view(B, S, k, 1) + logp.view(B, S, k, V)  # [B, S, k, V]
        new_scores, srcs, words = [], [], []
        for t in range(S):
            ct = torch.where(next_state == t, cand, torch.full_like(cand, -math.inf)).view(B, S * k * V)
            sc, flat = ct.topk(k, dim=-1)  # [B, k]
            new_scores.append(sc)
            srcs.append(flat // V)  # (state, beam) of the source within the image
            words.append(flat % V)
        scores = torch.stack(new_scores, 1)  # [B, S, k]
        src = (torch.arange(B, device=dev)[:, None, None] * R + torch.stack(srcs, 1)).view(-1)  # [B*R]
        word = torch.stack(words, 1).view(-1)
        state = select_rows(state, src, per_image)
        prefix = torch.cat([prefix.index_select(0, src), word[:, None]], 1)
        was_done = done.index_select(0, src)
        lengths = lengths.index_select(0, src) + (~was_done).float()
        done = was_done | (word == END_ID) | ~torch.isfinite(scores.view(-1))
        if bool(done.all()):
            break
    norm = scores / lengths.view(B, S, k).clamp(min=1.0) ** length_alpha
    norm = torch.where(torch.isfinite(scores), norm, torch.full_like(norm, -math.inf))
    accept = norm[:, S - 1]  # [B, k]
    met = torch.isfinite(accept).any(-1)
    flat = torch.where(met[:, None], torch.full_like(norm.view(B, R), -math.inf), norm.view(B, R))
    flat[:, (S - 1) * k:] = torch.where(met[:, None], accept, flat[:, (S - 1) * k:])
    best = flat.argmax(-1)  # accepting state when possible, else the best hypothesis of any state
    rows = torch.arange(B, device=dev) * R + best
    ids = prefix.index_select(0, rows)[:, 1:]
    return ids, scores.view(B, R).gather(1, best[:, None])[:, 0], met
