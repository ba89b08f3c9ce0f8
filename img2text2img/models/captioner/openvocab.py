"""Open-vocabulary captions: when the ImageNet head is sure of a word the caption lacks, decode again with
constrained beam search so the caption contains it.

A word the caption vocabulary lacks ("zebra" in Flickr8k) is added to a copy of the captioner, DCC-style
(Hendricks et al. 2016): its output row is copied from the most similar known word (nearest in GloVe), so it is
placed where that word would be, and its input embedding is the GloVe-weighted mean of its three nearest known
words. Words GloVe does not know borrow from "animal" when they name an animal, else are left out.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from img2text2img.errors import I2TError
from img2text2img.models.captioner.search import MAX_CONSTRAINTS, constrained_beam_search
from img2text2img.openvocab import Detection, WordTable, has_imagenet_head, load_word_table
from img2text2img.openvocab.detector import detector_for_encoder
from img2text2img.tags import STOP_WORDS
from img2text2img.vocab import SPECIALS, Vocabulary, WordVectors, load_word_vectors

FALLBACK_ANIMAL = "animal"
CACHE_SIZE = 8  # extended copies kept per captioner (one per set of new words)


def missing_detections(detections: Sequence[Detection], tokens: Sequence[str], threshold: float,
                       max_words: int = MAX_CONSTRAINTS) -> list[Detection]:
    """The confident detections (score >= threshold) that no token of the caption names, best first."""
    have = set(tokens)
    return [d for d in detections if d.score >= threshold and not (d.names & have)][:max_words]


def nearest_known(word: str, vocab: Vocabulary, vectors: WordVectors | None, n: int = 3) -> list[tuple[str, float]]:
    """The `n` content words of `vocab` nearest to `word` in GloVe (cosine), nearest first; [] without a vector."""
    if vectors is None:
        return []
    index = {w: i for i, w in enumerate(vectors.words)}
    if word not in index:
        return []
    known = [w for w in vocab.itos[len(SPECIALS):] if w in index and w.isalpha() and w not in STOP_WORDS
             and w != word]
    if not known:
        return []
    m = vectors.matrix[[index[w] for w in known]]
    v = vectors.matrix[index[word]]
    cos = m @ v / (np.linalg.norm(m, axis=1) * np.linalg.norm(v) + 1e-8)
    best = np.argsort(-cos)[:n]
    return [(known[i], float(cos[i])) for i in best]


def extend_vocabulary(model, words: Sequence[str], vectors: WordVectors | None = None,
                      table: WordTable | None = None):
    """A copy of captioner `model` whose vocabulary ends with `words` (absent from it) -> (copy, {word: id}).

    Words that get no source (no vector and not an animal) are left out of the copy and the mapping."""
    table = table or load_word_table()
    vocab = model.vocab
    sources: dict[str, tuple[list[int], list[float]]] = {}
    for w in words:
        if w in vocab.stoi:
            continue
        near = nearest_known(w, vocab, vectors)
        if near:
            ids = [vocab.stoi[x] for x, _ in near]
            weights = torch.softmax(torch.tensor([c for _, c in near]) * 10.0, 0).tolist()
            sources[w] = (ids, weights)
        elif table.is_animal(w) and FALLBACK_ANIMAL in vocab.stoi:
            sources[w] = ([vocab.stoi[FALLBACK_ANIMAL]], [1.0])
    added = list(sources)
    new_vocab = Vocabulary(vocab.itos + added, vocab.counts + [0] * len(added))
    V = len(vocab)
    state = {}
    for k, t in model.decoder.state_dict().items():
        if t.dim() >= 1 and t.shape[0] == V and t.is_floating_point():
            rows = []
            for w in added:
                ids, weights = sources[w]
                if "embed" in k:  # input side: a blend of the neighbours; output side: the nearest one's row (DCC)
                    rows.append(sum(wt * t[i] for i, wt in zip(ids, weights)))
                else:
                    rows.append(t[ids[0]].clone())
            t = torch.cat([t, torch.stack(rows)]) if rows else t
        state[k] = t
    cfg = replace(model.config, vocab_size=len(new_vocab))
    copy = type(model)(cfg, new_vocab, replace(model.settings))
    copy.decoder.load_state_dict(state)
    copy.to(next(model.decoder.parameters()).device)
    return copy.eval(), {w: new_vocab.stoi[w] for w in added}


class OpenVocab:
    """What one captioner needs for open-vocabulary decoding: its encoder's word detector, the word vectors, and
    the extended copies of itself built so far."""

    def __init__(self, model, vectors: WordVectors | None | bool = True):
        if not has_imagenet_head(model.config.encoder):
            raise I2TError(f"open vocabulary needs an encoder with an exact ImageNet head, not {model.config.encoder}")
        self.model = model
        detector = detector_for_encoder(model.ensure_encoder(), model.config.store_encoder)
        if detector is None:
            raise I2TError("open vocabulary: no adapter was fitted for this captioner's fine-tuned encoder "
                           "(scripts/fit_openvocab_adapter.py --model MODEL fits one)")
        self.detector = detector
        self.table = self.detector.table
        if vectors is True:
            try:
                vectors = load_word_vectors()
            except I2TError:
                vectors = None  # without GloVe only words of the caption vocabulary (and animals) are used
        self.vectors = vectors or None
        self.copies: dict[tuple[str, ...], tuple[object, dict[str, int]]] = {}

    def extended(self, words: Sequence[str]):
        key = tuple(sorted(set(words)))
        if key not in self.copies:
            if len(self.copies) >= CACHE_SIZE:
                self.copies.pop(next(iter(self.copies)))
            self.copies[key] = extend_vocabulary(self.model, key, self.vectors, self.table)
        return self.copies[key]

    def constraint_ids(self, d: Detection, vocab: Vocabulary, added: dict[str, int]) -> list[int]:
        ids = sorted({vocab.stoi[n] for n in d.names if n in vocab.stoi})
        if not ids and d.word in added:
            ids = [added[d.word]]
        return ids

    @torch.inference_mode()
    def redecode(self, pooled: torch.Tensor, grid: torch.Tensor | None, results: list, beam_size: int,
                 max_len: int, threshold: float, max_words: int) -> dict[int, tuple[list[str], float]]:
        """Given the plain captions' `results` (with `.tokens`) of these features, caption again under constraints
        the photos whose caption lacks a confident detected word -> {photo: (tokens, logprob)} of the new ones."""
        dets = self.detector.detect(pooled, top=5, min_score=threshold)
        todo = {i: missing_detections(d, r.tokens, threshold, max_words) for i, (d, r) in enumerate(zip(dets, results))}
        todo = {i: m for i, m in todo.items() if m}
        if not todo:
            return {}
        new_words = [d.word for m in todo.values() for d in m if not (d.names & set(self.model.vocab.stoi))]
        model, added = self.extended(new_words) if new_words else (self.model, {})
        rows, cons = [], []
        for i, m in todo.items():
            c = [ids for d in m if (ids := self.constraint_ids(d, model.vocab, added))]
            if c:
                rows.append(i)
                cons.append(c)
        if not rows:
            return {}
        idx = torch.tensor(rows, device=pooled.device)
        ids, lp, met = constrained_beam_search(model.decoder, pooled.index_select(0, idx),
                                               None if grid is None else grid.index_select(0, idx), cons,
                                               max(beam_size, 2), max_len, model.settings.length_alpha,
                                               full_stop=model.vocab.stoi.get("."))
        return {i: (model.vocab.decode_tokens(ids[j].tolist()), float(lp[j]))
                for j, i in enumerate(rows) if bool(met[j])}
