"""Caption metrics against values worked out by hand."""
import math
import shutil

import pytest

from img2text2img.errors import I2TError
from img2text2img.metrics.caption import coco_scores, corpus_bleu_scores

HYP = ["the", "cat", "sat", "on", "the", "mat"]
REF = ["the", "cat", "is", "on", "the", "mat"]


def test_bleu_hand_computed_single_pair():
    # unigrams 5/6 (the x2, cat, on, mat), bigrams 3/5 (the cat, on the, the mat), trigrams 1/4 (on the mat),
    # 4-grams 0/3; same length so no brevity penalty.
    s = corpus_bleu_scores([[REF]], [HYP])
    assert s["bleu1"] == pytest.approx(5 / 6)
    assert s["bleu2"] == pytest.approx(math.sqrt(5 / 6 * 3 / 5))
    assert s["bleu3"] == pytest.approx(0.5)  # (5/6 * 3/5 * 1/4) ** (1/3) = 0.125 ** (1/3)
    assert s["bleu4"] < 1e-12  # no smoothing: an order with no match zeroes the score (nltk returns ~1e-78)


def test_bleu_is_corpus_level_with_brevity_penalty():
    # Counts are pooled over the corpus: the second pair "the cat" vs REF adds 2/2 unigrams, 1/1 bigram, and
    # 2 hypothesis words against 6 reference words. Totals: hyp length 8, ref length 12 -> BP = exp(1 - 12/8).
    s = corpus_bleu_scores([[REF], [REF]], [HYP, ["the", "cat"]])
    bp = math.exp(1 - 12 / 8)
    assert s["bleu1"] == pytest.approx(bp * 7 / 8)
    assert s["bleu2"] == pytest.approx(bp * math.sqrt(7 / 8 * 4 / 6))


def test_bleu_picks_best_reference_counts_and_perfect_match():
    s = corpus_bleu_scores([[["a", "dog"], HYP]], [HYP])
    assert s["bleu4"] == pytest.approx(1.0)


def test_bleu_rejects_mismatched_lengths():
    with pytest.raises(I2TError):
        corpus_bleu_scores([[REF]], [HYP, HYP])


@pytest.mark.skipif(shutil.which("java") is None, reason="the COCO scorer needs Java")
def test_coco_scores_hand_computed():
    pytest.importorskip("pycocoevalcap")
    refs = [["The cat is on the mat."], ["A dog runs in the park."]]
    hyps = ["the cat sat on the mat", "a dog runs in the park"]
    s = coco_scores(refs, hyps, meteor=False)
    # PTB drops the final period; pooled counts: unigrams 5/6 + 6/6 = 11/12, bigrams 3/5 + 5/5 = 8/10,
    # trigrams 1/4 + 4/4 = 5/8; equal lengths so no brevity penalty.
    assert s["coco_bleu1"] == pytest.approx(11 / 12, abs=1e-6)
    assert s["coco_bleu2"] == pytest.approx(math.sqrt(11 / 12 * 8 / 10), abs=1e-6)
    assert s["coco_bleu3"] == pytest.approx((11 / 12 * 8 / 10 * 5 / 8) ** (1 / 3), abs=1e-6)
    assert 0.0 < s["coco_rouge_l"] < 1.0
    assert s["coco_cider_d"] > 0.0


def test_cider_d_hand_computed():
    from img2text2img.metrics.cider import CiderD

    # Two images, so an n-gram found in one image's references has idf log(2) - log(1) = log 2; an n-gram found
    # nowhere has idf log 2 too (df floored at 1). Identical candidate: cosine 1 for unigrams and bigrams, no
    # trigrams or 4-grams (zero norms count 0) -> 10 * (1 + 1 + 0 + 0) / 4.
    cider = CiderD([[["a", "b"]], [["c", "d"]]])
    assert cider.score(["a", "b"], [["a", "b"]]) == pytest.approx(5.0)
    assert cider.score(["c", "d"], [["a", "b"]]) == 0.0
    # "a b b": unigram tf-idf (L, 2L) clipped to (L, L) by the reference -> 2L^2 / (sqrt5 L * sqrt2 L); bigrams
    # {ab, bb} vs {ab} -> 1 / sqrt2; one word longer -> penalty exp(-1 / (2 * 6^2)).
    expected = 10 * math.exp(-1 / 72) * (2 / math.sqrt(10) + 1 / math.sqrt(2)) / 4
    assert cider.score(["a", "b", "b"], [["a", "b"]]) == pytest.approx(expected)
    # the reference cache keyed by image gives the same value
    assert cider.score(["a", "b", "b"], [["a", "b"]], key=0) == pytest.approx(expected)
    assert cider.score(["a", "b", "b"], [], key=0) == pytest.approx(expected)


def test_cider_d_matches_the_coco_scorer():
    pytest.importorskip("pycocoevalcap")
    from pycocoevalcap.cider.cider import Cider

    from img2text2img.metrics.cider import CiderD

    refs = [["a dog runs on the grass", "a brown dog is running", "the dog runs outside"],
            ["two children play in the water", "kids splash in a pool", "two kids are swimming"],
            ["a man rides a bike down a hill", "a cyclist on a dirt road", "a man on a bicycle"]]
    hyps = ["a dog dog dog runs on grass", "two kids play in a pool", "a man rides a bicycle on a hill"]  # dog x3: clipped
    gts = {i: r for i, r in enumerate(refs)}
    res = {i: [h] for i, h in enumerate(hyps)}
    coco, _ = Cider().compute_score(gts, res)
    split = [[r.split() for r in rs] for rs in refs]
    ours = CiderD(split).corpus_score([h.split() for h in hyps], split)
    assert ours == pytest.approx(coco, rel=1e-6)
