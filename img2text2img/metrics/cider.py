"""CIDEr-D on token lists, fast enough to be a training reward.

`coco_scores` (pycocoevalcap) is the number to publish, but it tokenises in Java and scores a whole corpus per call;
self-critical training needs the score of a few hundred sampled captions every step, against references whose
n-gram statistics never change. `CiderD` therefore fixes the document frequencies once (from a reference corpus,
e.g. all training images) and caches each image's reference vectors, so a call costs only the candidate's n-grams.

The definition is CIDEr-D as in Vedantam et al. (2015) and the COCO scorer: n = 1..4, tf-idf vectors with
idf = log(#images) - log(max(1, df)), the candidate's counts clipped by the reference's, a Gaussian penalty on the
length difference (sigma 6), averaged over references and n, times 10. With `CiderD(refs)` built from exactly the
references being scored it reproduces pycocoevalcap's `Cider` (checked in the tests).
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence

_Vec = tuple[list[dict[tuple[str, ...], float]], list[float], int]  # per-n tf-idf, per-n norm, length


def _ngrams(tokens: Sequence[str], n_max: int) -> list[Counter]:
    return [Counter(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)) for n in range(1, n_max + 1)]


class CiderD:
    """CIDEr-D scorer with document frequencies from `corpus`: one list of reference token lists per image."""

    def __init__(self, corpus: Sequence[Sequence[Sequence[str]]], n: int = 4, sigma: float = 6.0):
        self.n, self.sigma = n, sigma
        self.df: Counter = Counter()
        for refs in corpus:
            # an n-gram counts once per image, however many of its references use it
            self.df.update({g for r in refs for grams in _ngrams(r, n) for g in grams})
        self.log_images = math.log(float(max(len(corpus), 1)))
        self._ref_cache: dict[Hashable, list[_Vec]] = {}

    def _vec(self, tokens: Sequence[str]) -> _Vec:
        vecs, norms = [], []
        for grams in _ngrams(tokens, self.n):
            v = {g: c * (self.log_images - math.log(max(1.0, self.df.get(g, 0.0)))) for g, c in grams.items()}
            vecs.append(v)
            norms.append(math.sqrt(sum(x * x for x in v.values())))
        return vecs, norms, len(tokens)

    def _sim(self, hyp: _Vec, ref: _Vec) -> float:
        (hv, hn, hl), (rv, rn, rl) = hyp, ref
        penalty = math.exp(-((hl - rl) ** 2) / (2 * self.sigma ** 2))
        total = 0.0
        for vh, vr, nh, nr in zip(hv, rv, hn, rn):
            dot = sum(min(x, vr[g]) * vr[g] for g, x in vh.items() if g in vr)
            if nh and nr:
                total += dot / (nh * nr) * penalty
        return total / self.n

    def score(self, candidate: Sequence[str], references: Sequence[Sequence[str]], key: Hashable | None = None) -> float:
        """CIDEr-D of one candidate; `key` (e.g. the image id) caches the references' vectors between calls."""
        if key is not None and key in self._ref_cache:
            refs = self._ref_cache[key]
        else:
            refs = [self._vec(r) for r in references]
            if key is not None:
                self._ref_cache[key] = refs
        if not refs:
            return 0.0
        hyp = self._vec(candidate)
        return 10.0 * sum(self._sim(hyp, r) for r in refs) / len(refs)

    def corpus_score(self, candidates: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> float:
        """Mean CIDEr-D over candidates (candidates[i] scored against references[i])."""
        if not candidates:
            return 0.0
        return sum(self.score(c, r) for c, r in zip(candidates, references)) / len(candidates)
