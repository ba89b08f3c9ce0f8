"""Multi-label tagging scores: pure functions over tag lists (and, for mAP, score matrices).

- micro P/R/F1: pool true/false positives over every (image, tag) pair; dominated by frequent tags.
- macro P/R/F1: P, R and F1 per tag, then averaged over the tags that occur in the references or the predictions
  (a tag never predicted has precision 0); rare tags weigh as much as common ones.
- per-image ("samples") P/R/F1: P, R, F1 per image, averaged over images; an image with no reference and no predicted
  tag counts as 1, one with either side empty counts as 0.
- exact match: the share of images whose predicted tag set equals the reference set.
- mAP: for each tag with at least one positive image, the average precision of the images ranked by that tag's score;
  the mean over those tags. It needs per-tag scores (the BCE head has them; a sequence decoder does not).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def tag_scores(predicted: Sequence[Sequence[str]], reference: Sequence[Sequence[str]]) -> dict[str, float]:
    """Micro, macro and per-image precision/recall/F1 and exact match for parallel lists of tag lists."""
    if len(predicted) != len(reference):
        raise ValueError(f"{len(predicted)} predictions for {len(reference)} references")
    tp: Counter[str] = Counter()
    fp: Counter[str] = Counter()
    fn: Counter[str] = Counter()
    sample_p, sample_r, sample_f, exact = [], [], [], 0
    for pred, ref in zip(predicted, reference):
        P, R = set(pred), set(ref)
        hit = P & R
        for t in hit:
            tp[t] += 1
        for t in P - R:
            fp[t] += 1
        for t in R - P:
            fn[t] += 1
        exact += P == R
        if not P and not R:
            sample_p.append(1.0), sample_r.append(1.0), sample_f.append(1.0)
            continue
        p = len(hit) / len(P) if P else 0.0
        r = len(hit) / len(R) if R else 0.0
        sample_p.append(p), sample_r.append(r), sample_f.append(_f1(p, r))
    n = max(len(predicted), 1)
    TP, FP, FN = sum(tp.values()), sum(fp.values()), sum(fn.values())
    micro_p = TP / (TP + FP) if TP + FP else 0.0
    micro_r = TP / (TP + FN) if TP + FN else 0.0
    tags = set(tp) | set(fp) | set(fn)
    per_p = [tp[t] / (tp[t] + fp[t]) if tp[t] + fp[t] else 0.0 for t in tags]
    per_r = [tp[t] / (tp[t] + fn[t]) if tp[t] + fn[t] else 0.0 for t in tags]
    per_f = [_f1(p, r) for p, r in zip(per_p, per_r)]
    k = max(len(tags), 1)
    return {
        "micro_precision": micro_p,
        "micro_recall": micro_r,
        "micro_f1": _f1(micro_p, micro_r),
        "macro_precision": sum(per_p) / k,
        "macro_recall": sum(per_r) / k,
        "macro_f1": sum(per_f) / k,
        "sample_precision": sum(sample_p) / n,
        "sample_recall": sum(sample_r) / n,
        "sample_f1": sum(sample_f) / n,
        "exact_match": exact / n,
        "mean_predicted": sum(len(set(p)) for p in predicted) / n,
        "mean_reference": sum(len(set(r)) for r in reference) / n,
        "images": len(predicted),
    }


def average_precision(scores: Sequence[float], positive: Sequence[bool]) -> float:
    """AP of one ranking: mean over positives of the precision at the rank of each positive (ties: stable by input
    order after a descending sort, so equal scores do not flatter the result). NaN when there is no positive."""
    s = np.asarray(scores, dtype=np.float64)
    y = np.asarray(positive, dtype=bool)
    if not y.any():
        return float("nan")
    order = np.argsort(-s, kind="stable")
    y = y[order]
    hits = np.cumsum(y)
    ranks = np.arange(1, len(y) + 1)
    return float((hits[y] / ranks[y]).mean())


def mean_average_precision(scores: np.ndarray, targets: np.ndarray) -> float:
    """scores [N, T] (any monotone score), targets [N, T] in {0, 1} -> mean AP over tags (columns) with a positive."""
    scores, targets = np.asarray(scores), np.asarray(targets).astype(bool)
    if scores.shape != targets.shape:
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} differ in shape")
    aps = [average_precision(scores[:, j], targets[:, j]) for j in range(scores.shape[1]) if targets[:, j].any()]
    return float(np.mean(aps)) if aps else float("nan")
