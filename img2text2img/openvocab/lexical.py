"""Lexical classifiers (DCC, Hendricks et al. 2016): one logistic regression per word on an encoder's frozen pooled
features, trained on photos labelled by the words their captions use.

They name what image-label data knows but a captioner's paired sentences lack: a captioner trained on a subset of the
captions, or on the DCC held-out protocol, where every sentence naming "horse" is gone but the photos' labels keep
it. Only words outside a captioner's vocabulary are taken from here (`restricted`): a word the captioner knows, it
learnt from the same photos with their sentences, and chose to say or not. Torch-free (numpy), so the ONNX runtime
forces the same words as torch; `fit_lexical` (torch, imported on call) trains them, scripts/fit_lexical_head.py
writes `lexical/<encoder>.safetensors`.
"""
from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from img2text2img.errors import I2TError
from img2text2img.openvocab.scoring import HERE
from img2text2img.openvocab.words import Detection, WordTable, load_word_table, plural_forms

LEXICAL = HERE / "lexical"


def says(known: Collection[str], word: str) -> bool:
    """Whether a caption vocabulary `known` has `word`, singular or plural."""
    return any(f in known for f in plural_forms(word))


def lexical_path(encoder: str, root: Path | None = None) -> Path:
    return (root or LEXICAL) / f"{encoder}.safetensors"


@dataclass(frozen=True)
class LexicalHead:
    """`words[i]` scores sigmoid(features @ weight[i] + bias[i]): the chance a description of the photo names it."""

    words: tuple[str, ...]
    weight: np.ndarray  # [W, D] float32
    bias: np.ndarray  # [W] float32
    names: tuple[frozenset[str], ...]  # the caption tokens that count as naming each word

    def restricted(self, known: Collection[str]) -> LexicalHead | None:
        """Only the words `known` (a caption vocabulary) has in neither singular nor plural; None when every word
        is known. (A word's other names do not count: a captioner that says "truck" still lacks "car".)"""
        keep = [i for i, w in enumerate(self.words) if not says(known, w)]
        if not keep:
            return None
        return LexicalHead(tuple(self.words[i] for i in keep), self.weight[keep], self.bias[keep],
                           tuple(self.names[i] for i in keep))

    def __call__(self, features: np.ndarray) -> np.ndarray:
        """frozen pooled features [B, D] -> probabilities [B, W]."""
        z = np.asarray(features, dtype=np.float32) @ self.weight.T + self.bias
        return (1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))).astype(np.float32)

    def detect(self, features: np.ndarray, top: int = 5, min_score: float = 0.0) -> list[list[Detection]]:
        out = []
        for row in self(features):
            idx = np.argsort(-row, kind="stable")[:top]
            out.append([Detection(self.words[i], float(row[i]), self.names[i]) for i in idx.tolist()
                        if row[i] >= min_score])
        return out


def load_lexical(encoder: str, table: WordTable | None = None, root: Path | None = None,
                 known: Collection[str] = ()) -> LexicalHead | None:
    """The shipped lexical head of `encoder` without the words `known` has (`restricted`), or None when none was
    fitted for it or every word is known (then only the word list is read, not the weights)."""
    path = lexical_path(encoder, root)
    if not path.exists():
        return None
    from safetensors import safe_open

    try:
        with safe_open(str(path), "np") as f:
            words = tuple(json.loads(f.metadata()["words"]))
            if all(says(known, w) for w in words):  # nothing to offer: the weights need not be read
                return None
            weight, bias = f.get_tensor("weight").astype(np.float32), f.get_tensor("bias").astype(np.float32)
    except (OSError, ValueError, KeyError) as e:
        raise I2TError(f"cannot read the lexical head {path}: {e}") from None
    if weight.shape[0] != len(words) or bias.shape != (len(words),):
        raise I2TError(f"{path}: {len(words)} words but weights of shape {weight.shape}")
    table = table or load_word_table()
    return LexicalHead(words, weight, bias, tuple(table.names(w) for w in words)).restricted(known)


def save_lexical(path: Path, words: Sequence[str], weight: np.ndarray, bias: np.ndarray, info: dict) -> Path:
    """Write a lexical head (fp16 weights, the word list and `info` in the file's metadata), atomically."""
    from safetensors.numpy import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file({"weight": np.ascontiguousarray(weight, dtype=np.float16), "bias": bias.astype(np.float32)}, str(tmp),
              metadata={"words": json.dumps(list(words)), "info": json.dumps(info)})
    tmp.chmod(0o644)  # package data, readable by all (the writer makes a private file)
    tmp.replace(path)
    return path


def merge_detections(a: Sequence[Sequence[Detection]], b: Sequence[Sequence[Detection]]) -> list[list[Detection]]:
    """Per photo, both lists as one: each word once with its higher score, best first (ties: by word)."""
    out = []
    for da, db in zip(a, b, strict=True):
        best: dict[str, Detection] = {}
        for d in (*da, *db):
            if d.word not in best or d.score > best[d.word].score:
                best[d.word] = d
        out.append(sorted(best.values(), key=lambda d: (-d.score, d.word)))
    return out


def fit_lexical(features, labels, weight_decay: float, steps: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression per word, jointly by L-BFGS: features [N, D], 0/1 labels [N, W] -> (weight, bias) that
    read the raw features (they are standardised inside and the scaling folded back in)."""
    import torch

    x = torch.as_tensor(np.asarray(features), dtype=torch.float32)
    y = torch.as_tensor(np.asarray(labels), dtype=torch.float32)
    mu, sd = x.mean(0), x.std(0) + 1e-6
    x = (x - mu) / sd
    lin = torch.nn.Linear(x.shape[1], y.shape[1])
    torch.nn.init.zeros_(lin.weight)  # the problem is convex: a fixed start makes the fit repeatable
    torch.nn.init.zeros_(lin.bias)
    opt = torch.optim.LBFGS(lin.parameters(), max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(lin(x), y) + weight_decay * lin.weight.pow(2).sum(1).mean()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        w = lin.weight / sd
        b = lin.bias - w @ mu
    return w.numpy(), b.numpy()


def with_lexical(detections: Sequence[Sequence[Detection]], lexical: LexicalHead | None, frozen,
                 threshold: float, top: int = 5) -> list[list[Detection]]:
    """The detector's words with the lexical head's sure ones merged in; `frozen()` gives the frozen pooled
    features [B, D] (called only when there is a lexical head)."""
    if lexical is None:
        return [list(d) for d in detections]
    return merge_detections(detections, lexical.detect(frozen(), top=top, min_score=threshold))
