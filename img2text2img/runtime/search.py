"""Numpy pieces every runtime search shares (the plain beam and the open-vocabulary constrained one)."""
from __future__ import annotations

import numpy as np

from img2text2img.runtime.text import PAD_ID, START_ID, UNK_ID

NEG_INF = np.float32(-np.inf)


def never_emit(logp: np.ndarray) -> np.ndarray:
    logp[:, PAD_ID] = NEG_INF
    logp[:, START_ID] = NEG_INF
    logp[:, UNK_ID] = NEG_INF  # as search.never_emit: a caption never holds <unk>
    return logp


def say_once(logp: np.ndarray, prefix: np.ndarray, once: np.ndarray | None) -> np.ndarray:
    """As `search.say_once`: -inf for the words of `once` (bool [V]) a row's prefix [rows, t] already holds."""
    if once is not None:
        used = np.zeros(logp.shape, dtype=bool)
        np.put_along_axis(used, prefix, True, axis=1)
        logp[used & once] = NEG_INF
    return logp


def top_k(x: np.ndarray, k: int) -> np.ndarray:
    """Column indices of the k largest per row, largest first; ties go to the lower index."""
    if k >= x.shape[1]:
        return np.argsort(-x, axis=1, kind="stable")[:, :k]
    part = np.argpartition(-x, k - 1, axis=1)[:, :k]
    vals = np.take_along_axis(x, part, 1)
    if not np.isfinite(vals).all():  # ties of -inf at the cut (a tiny vocabulary): a full stable sort decides
        return np.argsort(-x, axis=1, kind="stable")[:, :k]
    order = np.lexsort((part, -vals), axis=1)  # by value descending, then by index
    return np.take_along_axis(part, order, 1)
