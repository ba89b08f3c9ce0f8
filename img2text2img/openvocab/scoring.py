"""The detector's arithmetic without torch: adapter, ImageNet head, word sums and Platt calibration in numpy, read
from the package's safetensors files, so the ONNX runtime names objects as the torch detector does.

Files: `heads/<encoder>.safetensors` (the exact ImageNet head, a 1000 x D linear layer on the pooled features,
written by scripts/export_openvocab_head.py from the encoder's weight file), `adapters/<encoder>-<hash>.safetensors`
(see detector.py) and `calibration.json`. `sources/<vocab sha>.json`: for one caption vocabulary, the known word
each table word outside it borrows its rows from (nearest in GloVe, or "animal"), so a torch-free process needs
neither torch nor the GloVe file to add a word (scripts/export_openvocab_head.py --sources MODEL writes it).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from img2text2img.openvocab.words import Detection, WordTable, load_word_table

HERE = Path(__file__).parent
CALIBRATION = HERE / "calibration.json"
ADAPTERS = HERE / "adapters"
HEADS = HERE / "heads"
SOURCES = HERE / "sources"
# encoders whose ImageNet head is the exact published one (the others are approximations or have none)
EXACT_HEADS = frozenset({"efficientnet_lite0", "mobilenet_v2"})
EPS = 1e-6


def has_imagenet_head(encoder: str) -> bool:
    """Whether `encoder` ships an exact ImageNet head the detector can use."""
    return encoder in EXACT_HEADS


def calibration_key(encoder: str, adapted: bool) -> str:
    return f"{encoder}+adapter" if adapted else encoder


def read_calibration(encoder: str, adapted: bool = False, path: Path = CALIBRATION) -> tuple[float, float]:
    """(a, b) of p' = sigmoid(a * logit(p) + b) for this encoder (read through an adapter or not); (1, 0), the raw
    score, when none was fitted."""
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 1.0, 0.0
    entry = table.get(calibration_key(encoder, adapted)) or {}
    return float(entry.get("a", 1.0)), float(entry.get("b", 0.0))


def top_detections(probs: np.ndarray, table: WordTable, top: int = 5, min_score: float = 0.0) -> list[list[Detection]]:
    """[B, W] calibrated word probabilities -> per photo up to `top` words scoring at least `min_score`, best first
    (ties: the lower word index, as torch.topk on a CPU gives them)."""
    out = []
    for row in np.asarray(probs, dtype=np.float32):
        idx = np.argsort(-row, kind="stable")[:top]
        out.append([Detection(table.words[i], float(row[i]), table.names(table.words[i]))
                    for i in idx.tolist() if row[i] >= min_score])
    return out


def read_linear(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(weight [out, in], bias [out]) float32 from a safetensors file holding `weight` and `bias`."""
    from safetensors.numpy import load_file

    state = load_file(str(path))
    return state["weight"].astype(np.float32), state["bias"].astype(np.float32)


def adapter_keys(root: Path = ADAPTERS) -> dict[str, str]:
    """{model weights sha256: its encoder's state key} (`adapters/models.json`), so the runtime finds a shipped
    captioner's adapter without hashing its encoder; {} without the file."""
    try:
        return json.loads((root / "models.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def head_path(encoder: str, root: Path = HEADS) -> Path:
    return root / f"{encoder}.safetensors"


def adapter_file(encoder: str, state_key: str, root: Path = ADAPTERS) -> Path:
    return root / f"{encoder}-{state_key}.safetensors"


class NumpyDetector:
    """pooled [B, D] float32 -> calibrated word probabilities [B, W]: what `detector.WordDetector` computes."""

    def __init__(self, encoder: str, adapter: Path | None = None, table: WordTable | None = None,
                 head: Path | None = None):
        self.name = encoder
        self.table = table or load_word_table()
        self.head_w, self.head_b = read_linear(head or head_path(encoder))
        self.adapter = read_linear(adapter) if adapter is not None else None
        self.class_to_word = self.table.matrix()
        self.a, self.b = (np.float32(v) for v in read_calibration(encoder, adapter is not None))

    def frozen_features(self, pooled: np.ndarray) -> np.ndarray:
        x = np.asarray(pooled, dtype=np.float32)
        if self.adapter is not None:
            w, b = self.adapter
            x = np.maximum(x @ w.T + b, np.float32(0.0))  # the frozen features end in ReLU6: never negative
        return x

    def raw_scores(self, pooled: np.ndarray) -> np.ndarray:
        logits = self.frozen_features(pooled) @ self.head_w.T + self.head_b
        e = np.exp(logits - logits.max(-1, keepdims=True))
        return (e / e.sum(-1, keepdims=True)) @ self.class_to_word

    def __call__(self, pooled: np.ndarray) -> np.ndarray:
        p = np.clip(self.raw_scores(pooled), EPS, 1 - EPS)
        z = self.a * np.log(p / (1 - p)) + self.b
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)

    def detect(self, pooled: np.ndarray, top: int = 5, min_score: float = 0.0) -> list[list[Detection]]:
        return top_detections(self(pooled), self.table, top, min_score)


def sources_path(vocab_sha256: str, root: Path = SOURCES) -> Path:
    return root / f"{vocab_sha256[:16]}.json"


def read_sources(vocab_sha256: str | None, root: Path = SOURCES) -> dict[str, list[str]] | None:
    """{table word absent from the vocabulary: [known words it borrows from, nearest first]} saved for this
    vocabulary, or None when none was saved."""
    if not vocab_sha256:
        return None
    try:
        return json.loads(sources_path(vocab_sha256, root).read_text(encoding="utf-8"))["sources"]
    except (OSError, ValueError, KeyError):
        return None
