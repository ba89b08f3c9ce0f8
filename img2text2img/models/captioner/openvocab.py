"""Open-vocabulary captions: when the ImageNet head is sure of a word the caption lacks, decode again with
constrained beam search so the caption contains it.

A word the caption vocabulary lacks ("zebra" in Flickr8k) is added to a copy of the captioner, DCC-style
(Hendricks et al. 2016): its output row is copied from the most similar known word (nearest in GloVe), so it is
placed where that word would be, and its input embedding is the GloVe-weighted mean of its three nearest known
words. Words GloVe does not know borrow from "animal" when they name an animal, else are left out. Besides the
ImageNet head's words, the lexical classifiers (openvocab/lexical.py) offer the words of Flickr8k photos' labels
that this captioner's vocabulary lacks.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np
import torch

from img2text2img.errors import I2TError
from img2text2img.models.captioner.search import constrained_beam_search
from img2text2img.openvocab import WordTable, has_imagenet_head, load_word_table
from img2text2img.openvocab.constraints import MAX_CONSTRAINTS, missing_detections, plan_redecode  # noqa: F401
from img2text2img.openvocab.detector import detector_for_encoder
from img2text2img.openvocab.lexical import load_lexical, with_lexical
from img2text2img.openvocab.scoring import read_sources
from img2text2img.tags import STOP_WORDS
from img2text2img.vocab import SPECIALS, Vocabulary, WordVectors, load_word_vectors

FALLBACK_ANIMAL = "animal"
CACHE_SIZE = 8  # extended copies kept per captioner (one per set of new words)


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


def source_word(word: str, vocab: Vocabulary, vectors: WordVectors | None, table: WordTable) -> str | None:
    """The known word `word` (absent from `vocab`) borrows its rows from: nearest in GloVe, "animal" for an animal
    GloVe lacks, None for neither."""
    near = nearest_known(word, vocab, vectors, n=1)
    if near:
        return near[0][0]
    if table.is_animal(word) and FALLBACK_ANIMAL in vocab.stoi:
        return FALLBACK_ANIMAL
    return None


def extend_vocabulary(model, words: Sequence[str], vectors: WordVectors | None = None,
                      table: WordTable | None = None, sources: dict[str, str | None] | None = None):
    """A copy of captioner `model` whose vocabulary ends with `words` (absent from it) -> (copy, {word: id}).

    Each new word copies every vocabulary-sized row of its source word (`sources`, else `source_word`), and the
    attribute head never picks it, so the copy scores a new word exactly as the source and reads it as the source:
    what the ONNX runtime does without a copy. Words without a source are left out of the copy and the mapping."""
    table = table or load_word_table()
    vocab = model.vocab
    src: dict[str, int] = {}
    for w in words:
        if w in vocab.stoi or w in src:
            continue
        s = sources.get(w) if sources is not None else source_word(w, vocab, vectors, table)
        if s in vocab.stoi:
            src[w] = vocab.stoi[s]
    added = list(src)
    new_vocab = Vocabulary(vocab.itos + added, vocab.counts + [0] * len(added))
    V = len(vocab)
    state = {}
    for k, t in model.decoder.state_dict().items():
        if t.dim() >= 1 and t.shape[0] == V and t.is_floating_point() and added:
            t = torch.cat([t, t[[src[w] for w in added]]])
        state[k] = t
    cfg = replace(model.config, vocab_size=len(new_vocab))
    copy = type(model)(cfg, new_vocab, replace(model.settings))
    copy.decoder.load_state_dict(state)
    allowed = getattr(model.decoder, "attr_allowed", None)
    if allowed is not None:  # the attribute head does not know the new words: the image state stays the original's
        copy.decoder.set_attribute_vocabulary(torch.cat([allowed, allowed.new_zeros(len(added))]))
    copy.to(next(model.decoder.parameters()).device)
    return copy.eval(), {w: new_vocab.stoi[w] for w in added}


class OpenVocab:
    """What one captioner needs for open-vocabulary decoding: its encoder's word detector, each new word's source
    (saved for the vocabulary in openvocab/sources/, else from GloVe, read on first need) and the extended copies
    of itself built so far."""

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
        self.lexical = load_lexical(model.config.encoder, self.table, known=model.vocab.stoi)
        self.saved = read_sources(model.vocab.sha256) if vectors is True else None
        self.vectors_arg = vectors
        self.sources: dict[str, str | None] = dict(self.saved or {})
        self.copies: dict[tuple[str, ...], tuple[object, dict[str, int]]] = {}

    @property
    def vectors(self) -> WordVectors | None:
        if self.vectors_arg is True:
            try:
                self.vectors_arg = load_word_vectors()
            except I2TError:
                self.vectors_arg = None  # without GloVe only words of the caption vocabulary (and animals) are used
        return self.vectors_arg or None

    def source_of(self, word: str) -> str | None:
        if word not in self.sources:
            self.sources[word] = None if self.saved is not None else source_word(
                word, self.model.vocab, self.vectors, self.table)
        return self.sources[word]

    def extended(self, words: Sequence[str]):
        key = tuple(sorted(set(words)))
        if key not in self.copies:
            if len(self.copies) >= CACHE_SIZE:
                self.copies.pop(next(iter(self.copies)))
            self.copies[key] = extend_vocabulary(self.model, key, table=self.table,
                                                 sources={w: self.source_of(w) for w in key})
        return self.copies[key]

    @torch.inference_mode()
    def redecode(self, pooled: torch.Tensor, grid: torch.Tensor | None, results: list, beam_size: int,
                 max_len: int, threshold: float, max_words: int) -> dict[int, tuple[list[str], float]]:
        """Given the plain captions' `results` (with `.tokens`) of these features, caption again under constraints
        the photos whose caption lacks a confident detected word -> {photo: (tokens, logprob)} of the new ones."""
        dets = with_lexical(self.detector.detect(pooled, top=5, min_score=threshold), self.lexical,
                            lambda: self.detector.frozen_features(pooled).cpu().numpy(), threshold)
        stoi = self.model.vocab.stoi
        todo = {i: missing_detections(d, r.tokens, threshold, max_words, stoi, self.source_of)
                for i, (d, r) in enumerate(zip(dets, results))}
        todo = {i: m for i, m in todo.items() if m}
        if not todo:
            return {}
        plan = plan_redecode(todo, self.model.vocab.stoi, self.source_of)
        if not plan.rows:
            return {}
        model, _ = self.extended(plan.added) if plan.added else (self.model, {})
        idx = torch.tensor(plan.rows, device=pooled.device)
        ids, lp, met = constrained_beam_search(model.decoder, pooled.index_select(0, idx),
                                               None if grid is None else grid.index_select(0, idx),
                                               [[list(c) for c in cons] for cons in plan.constraints],
                                               max(beam_size, 2), max_len, model.settings.length_alpha,
                                               full_stop=model.vocab.stoi.get("."), once=model.said_once())
        return {i: (model.vocab.decode_tokens(ids[j].tolist()), float(lp[j]))
                for j, i in enumerate(plan.rows) if bool(met[j])}
