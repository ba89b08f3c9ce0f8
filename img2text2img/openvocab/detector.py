"""ImageNet logits -> plain caption words with calibrated confidences.

The logits come from the encoder's own ImageNet head applied to the pooled features the captioner or tagger already
computed (global average pooling is what the head reads), so detecting costs one 1280 x 1000 product per photo, not
a second CNN pass. The head only reads FROZEN ImageNet features: a fine-tuned encoder (the shipped captioner's) has
moved them ("shark" for a dog in a pool), and a second frozen pass would cost more than captioning itself on a CPU,
so such an encoder gets an adapter (`adapters/<hash>.safetensors`, a linear map from its pooled features to the
frozen encoder's, fitted by ridge regression on Flickr8k training photos: scripts/fit_openvocab_adapter.py).
A word's raw score is the summed softmax probability of its classes; `calibration.json` maps it to "a person
describing the photo would name this" by Platt scaling fitted on Flickr8k validation photos
(scripts/openvocab_eval.py --calibrate), so detector scores and tagger scores mean the same thing.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from img2text2img.errors import I2TError
from img2text2img.models.encoders import create_encoder
from img2text2img.models.encoders.base import encoder_spec, state_sha256
from img2text2img.openvocab.scoring import (  # noqa: F401  (re-exported: the torch and numpy detectors share them)
    ADAPTERS,
    CALIBRATION,
    EPS,
    EXACT_HEADS,
    adapter_file,
    calibration_key,
    has_imagenet_head,
    read_calibration,
    top_detections,
)
from img2text2img.openvocab.words import Detection, WordTable, load_word_table


def fit_platt(scores: torch.Tensor, labels: torch.Tensor, steps: int = 200) -> tuple[float, float]:
    """Platt scaling: (a, b) maximising the likelihood of 0/1 `labels` under sigmoid(a * logit(score) + b)."""
    x = torch.logit(scores.double().clamp(1e-6, 1 - 1e-6))
    y = labels.double()
    ab = torch.tensor([1.0, 0.0], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([ab], max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = nn.functional.binary_cross_entropy_with_logits(ab[0] * x + ab[1], y)
        loss.backward()
        return loss

    opt.step(closure)
    a, b = (float(v) for v in ab.detach())
    if not (math.isfinite(a) and math.isfinite(b)):
        raise I2TError("calibration did not converge (too few positive examples?)")
    return a, b


class WordDetector(nn.Module):
    """pooled [B, D] features of encoder `name` -> word probabilities [B, W] over `table.words`."""

    def __init__(self, name: str, table: WordTable | None = None, calibration: tuple[float, float] | None = None,
                 adapter: nn.Linear | None = None):
        super().__init__()
        if not has_imagenet_head(name):
            raise I2TError(f"encoder {name} has no exact ImageNet head to name objects with "
                           f"(open vocabulary needs one of: {', '.join(sorted(EXACT_HEADS))})")
        self.name = name
        self.spec = encoder_spec(name)
        enc = create_encoder(name, keep_head=True)
        self.model = enc.model.eval()  # the full classifier; only its head modules run here
        self.table = table or load_word_table()
        self.register_buffer("class_to_word", torch.from_numpy(self.table.matrix()), persistent=False)
        self.adapter = adapter  # fine-tuned encoder's pooled features -> the frozen encoder's (None: already frozen)
        self.a, self.b = calibration or read_calibration(name, adapter is not None)

    @torch.no_grad()
    def frozen_features(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled [B, D] -> the frozen encoder's pooled features, what the head (and a lexical head) reads."""
        pooled = pooled.float().to(next(self.model.parameters()).device)
        if self.adapter is not None:
            pooled = self.adapter(pooled).clamp(min=0.0)  # the frozen features end in ReLU6: never negative
        return pooled

    @torch.no_grad()
    def class_logits(self, pooled: torch.Tensor) -> torch.Tensor:
        """pooled [B, D] -> ImageNet logits [B, 1000] (the head on a 1 x 1 map: pooling it again changes nothing)."""
        return self.spec.head(self.model, self.frozen_features(pooled)[:, :, None, None])

    @torch.no_grad()
    def raw_scores(self, pooled: torch.Tensor) -> torch.Tensor:
        """[B, W]: summed class probabilities per word, before calibration."""
        return torch.softmax(self.class_logits(pooled), -1) @ self.class_to_word

    @torch.no_grad()
    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        p = self.raw_scores(pooled).clamp(EPS, 1 - EPS)
        return torch.sigmoid(self.a * torch.logit(p) + self.b)

    def detect(self, pooled: torch.Tensor, top: int = 5, min_score: float = 0.0) -> list[list[Detection]]:
        """Per photo, up to `top` words scoring at least `min_score`, best first."""
        return top_detections(self(pooled).cpu().numpy(), self.table, top, min_score)


@lru_cache(maxsize=4)
def word_detector(name: str) -> WordDetector:
    """One detector per encoder name, built once (it loads the encoder's weight file for the head)."""
    return WordDetector(name)


def encoder_state_key(encoder: nn.Module) -> str:
    """What names a fine-tuned encoder's adapter: the first 16 hex digits of its weights' content hash."""
    return state_sha256(encoder.model.state_dict())[:16]


def adapter_path(encoder: nn.Module, root: Path = ADAPTERS) -> Path:
    return adapter_file(encoder.name, encoder_state_key(encoder), root)


def load_adapter(path: Path) -> nn.Linear:
    state = load_file(str(path))
    w, b = state["weight"].float(), state["bias"].float()
    lin = nn.Linear(w.shape[1], w.shape[0])
    with torch.no_grad():
        lin.weight.copy_(w)
        lin.bias.copy_(b)
    return lin.eval().requires_grad_(False)


_ADAPTED: dict[str, WordDetector] = {}


def detector_for_encoder(encoder: nn.Module, fine_tuned: bool, root: Path = ADAPTERS) -> WordDetector | None:
    """The detector that reads `encoder`'s pooled features: the exact head for a frozen pretrained encoder; for a
    fine-tuned one the head behind its fitted adapter, or None when no adapter was fitted for these weights."""
    if not has_imagenet_head(encoder.name):
        return None
    if not fine_tuned:
        return word_detector(encoder.name)
    path = adapter_path(encoder, root)
    if str(path) not in _ADAPTED:
        if not path.exists():
            return None
        _ADAPTED[str(path)] = WordDetector(encoder.name, adapter=load_adapter(path))
    return _ADAPTED[str(path)]
