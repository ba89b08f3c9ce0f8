"""Open vocabulary without torch: the numpy detector (openvocab/scoring.py) on the runtime encoder's pooled features,
then `search.constrained_beam_search` written again in numpy over the decoder's step graph.

A word the vocabulary lacks needs no new graph: it copies its source word's rows (openvocab/constraints.py), so its
log-probability is the source's renormalised over one more word, and the step graph reads it as the source.
"""
from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from img2text2img.errors import I2TError
from img2text2img.openvocab.constraints import MAX_CONSTRAINTS, missing_detections, plan_redecode
from img2text2img.openvocab.lexical import load_lexical, with_lexical
from img2text2img.openvocab.scoring import (
    NumpyDetector,
    adapter_file,
    adapter_keys,
    has_imagenet_head,
    head_path,
    read_sources,
)
from img2text2img.runtime.search import never_emit, say_once, top_k
from img2text2img.runtime.text import END_ID, PAD_ID, START_ID, decode_ids

NEG_INF = np.float32(-np.inf)


def encoder_state_key(weights: Path, prefix: str = "encoder.model.") -> str:
    """`detector.encoder_state_key` of the encoder stored in a model's safetensors (float32 as torch loads it):
    what names its adapter when `adapters/models.json` does not know the model's weights (it costs ~50 ms)."""
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(weights), "np") as f:
        for k in sorted(k for k in f.keys() if k.startswith(prefix)):  # noqa: SIM118  (safe_open is no dict)
            t = f.get_tensor(k)
            h.update(k[len(prefix):].encode())
            h.update(np.ascontiguousarray(t.astype(np.float32) if t.dtype == np.float16 else t).tobytes())
    return h.hexdigest()[:16]


def load_detector(model_dir: Path, config: dict, weights_sha256: str = "") -> NumpyDetector:
    """The detector of captioner folder `model_dir` (its config.json's `config`): the exact head for a frozen
    encoder, the head behind the fitted adapter for a stored fine-tuned one; a one-line I2TError otherwise."""
    enc = config["encoder"]
    if not has_imagenet_head(enc) or not head_path(enc).exists():
        raise I2TError(f"open vocabulary needs an encoder with an exact ImageNet head exported to "
                       f"{head_path(enc).parent.name}/, not {enc}")
    adapter = None
    if config.get("store_encoder"):
        key = adapter_keys().get(weights_sha256) or encoder_state_key(model_dir / "model.safetensors")
        adapter = adapter_file(enc, key)
        if not adapter.exists():
            raise I2TError("open vocabulary: no adapter was fitted for this captioner's fine-tuned encoder "
                           "(scripts/fit_openvocab_adapter.py --model MODEL fits one)")
    return NumpyDetector(enc, adapter)


class RuntimeOpenVocab:
    """Detector + constrained re-decoding for one RuntimeCaptioner (`captioner.step`, `.init_state`, `.words`)."""

    def __init__(self, captioner, meta: dict):
        self.captioner = captioner
        self.detector = load_detector(captioner.model_dir, meta.get("config") or {}, meta.get("weights_sha256", ""))
        words = captioner.words
        self.lexical = load_lexical(self.detector.name, self.detector.table, known=words.stoi)
        sha = hashlib.sha256("\n".join(words.itos).encode()).hexdigest()
        self.sources = read_sources(sha) or {}  # without a saved file, only the vocabulary's own words are forced

    def redecode(self, pooled: np.ndarray, grid: np.ndarray | None, results: list, beam_size: int, max_len: int,
                 alpha: float, threshold: float, max_words: int) -> dict[int, tuple[list[str], float]]:
        """As `OpenVocab.redecode`: {photo: (tokens, logprob)} for the photos whose caption lacked a sure word."""
        dets = with_lexical(self.detector.detect(pooled, top=5, min_score=threshold), self.lexical,
                            lambda: self.detector.frozen_features(pooled), threshold)
        words = self.captioner.words
        todo = {i: missing_detections(d, r.tokens, threshold, max_words, words.stoi, self.sources.get)
                for i, (d, r) in enumerate(zip(dets, results))}
        todo = {i: m for i, m in todo.items() if m}
        if not todo:
            return {}
        plan = plan_redecode(todo, words.stoi, self.sources.get)
        if not plan.rows:
            return {}
        rows = np.asarray(plan.rows)
        ids, lp, met = constrained_beam_search(
            self.captioner, pooled[rows], None if grid is None else grid[rows],
            [[list(c) for c in cons] for cons in plan.constraints], max(beam_size, 2), max_len, alpha,
            full_stop=words.stoi.get("."), source=np.asarray(plan.source, dtype=np.int64),
            once=self.captioner.said_once(plan.added))
        itos = words.itos + list(plan.added)
        return {i: (decode_ids(ids[j].tolist(), itos), float(lp[j])) for j, i in enumerate(plan.rows) if met[j]}


def extend_logp(logp: np.ndarray, source: np.ndarray) -> np.ndarray:
    """log-probabilities [R, V] -> [R, V + n] of a vocabulary whose word V + j has the logit of word source[j]."""
    if source.size == 0:
        return logp
    extra = logp[:, source]
    c = np.log1p(np.exp(extra).sum(-1, keepdims=True)).astype(np.float32)
    return np.concatenate([logp - c, extra - c], 1).astype(np.float32)


def constrained_beam_search(captioner, pooled: np.ndarray, grid: np.ndarray | None, constraints, beam_size: int,
                            max_len: int, length_alpha: float = 0.7, full_stop: int | None = None,
                            source: np.ndarray | None = None, once: np.ndarray | None = None
                            ) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """`search.constrained_beam_search` in numpy on a RuntimeCaptioner's graphs; `source[j]`: the known id that
    extra word V + j copies; `once`: bool [V + extra] as in `search.say_once`.
    -> (ids per image, summed logprob [B], met [B])."""
    B, k = pooled.shape[0], beam_size
    if len(constraints) != B:
        raise ValueError(f"{len(constraints)} constraint lists for {B} images")
    if any(len(c) > MAX_CONSTRAINTS for c in constraints):
        raise ValueError(f"at most {MAX_CONSTRAINTS} constraints per image")
    source = np.zeros(0, dtype=np.int64) if source is None else source
    C = max((len(c) for c in constraints), default=0)
    S, R = 2 ** C, (2 ** C) * k
    state = {key: np.repeat(v, R, axis=0) for key, v in captioner.init_state(pooled, grid).items()}
    start_state = np.array([sum(1 << j for j in range(len(c), C)) for c in constraints], dtype=np.int64)
    prefix = np.full((B * R, 1), START_ID, dtype=np.int64)
    scores = np.full((B, S, k), NEG_INF, dtype=np.float32)
    scores[np.arange(B), start_state, 0] = 0.0
    done = np.zeros(B * R, dtype=bool)
    lengths = np.zeros(B * R, dtype=np.float32)
    next_state = to_graph = None
    for _ in range(max_len + 1):
        feed = prefix if to_graph is None else to_graph[prefix]
        logp, state = captioner.step(state, feed)
        logp = say_once(never_emit(extend_logp(logp.astype(np.float32, copy=True), source)), prefix, once)  # [B*R, V']
        if next_state is None:
            V = logp.shape[-1]
            bits = np.zeros((B, V), dtype=np.int64)
            for b, cons in enumerate(constraints):
                for j, alts in enumerate(cons):
                    for w in alts:
                        if not 0 <= int(w) < V:
                            raise ValueError(f"constraint word id {w} is outside the vocabulary of {V}")
                        bits[b, int(w)] |= 1 << j
            next_state = np.arange(S).reshape(1, S, 1, 1) | bits.reshape(B, 1, 1, V)
            to_graph = np.concatenate([np.arange(V - source.size), source])  # extra words read as their source
        if full_stop is not None:
            stop = prefix[:, -1] == full_stop
            if stop.any():
                end = logp[stop, END_ID].copy()
                logp[stop] = NEG_INF
                logp[stop, END_ID] = end
        if done.any():
            logp[done] = NEG_INF
            logp[done, PAD_ID] = 0.0
        cand = scores.reshape(B, S, k, 1) + logp.reshape(B, S, k, V)  # [B, S, k, V]
        new_scores, srcs, words = [], [], []
        for t in range(S):
            ct = np.where(next_state == t, cand, NEG_INF).reshape(B, S * k * V)
            flat = top_k(ct, k)
            new_scores.append(np.take_along_axis(ct, flat, 1))
            srcs.append(flat // V)
            words.append(flat % V)
        scores = np.stack(new_scores, 1).astype(np.float32)  # [B, S, k]
        src = (np.arange(B)[:, None, None] * R + np.stack(srcs, 1)).reshape(-1)
        word = np.stack(words, 1).reshape(-1)
        state = {key: (v if key in captioner.per_image else v[src]) for key, v in state.items()}
        prefix = np.concatenate([prefix[src], word[:, None]], 1)
        was_done = done[src]
        lengths = lengths[src] + (~was_done).astype(np.float32)
        done = was_done | (word == END_ID) | ~np.isfinite(scores.reshape(-1))
        if done.all():
            break
    with np.errstate(invalid="ignore"):
        norm = scores / np.maximum(lengths.reshape(B, S, k), np.float32(1.0)) ** np.float32(length_alpha)
    norm = np.where(np.isfinite(scores), norm, NEG_INF).astype(np.float32)
    accept = norm[:, S - 1]  # [B, k]
    met = np.isfinite(accept).any(-1)
    flat = np.where(met[:, None], NEG_INF, norm.reshape(B, R))
    flat[:, (S - 1) * k:] = np.where(met[:, None], accept, flat[:, (S - 1) * k:])
    best = flat.argmax(-1)
    rows = np.arange(B) * R + best
    return list(prefix[rows, 1:]), scores.reshape(B, R)[np.arange(B), best], met
