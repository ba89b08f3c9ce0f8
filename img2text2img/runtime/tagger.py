"""Tagging without torch: one graph from images to tag probabilities (BCE head), or an encoder graph and the RNN
head's init/step graphs with `RNNTagHead.decode`'s beam search in numpy. Open vocabulary reads the graphs' second
output, the encoder's pooled features, with the numpy detector and merges as openvocab/tags.py says."""
from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from img2text2img.errors import I2TError
from img2text2img.openvocab.scoring import NumpyDetector, has_imagenet_head, head_path
from img2text2img.openvocab.tags import DETECT_THRESHOLD, merge_tags
from img2text2img.runtime.captioner import STEP_THREADS, saved_inference
from img2text2img.runtime.graphs import Graph, log_softmax
from img2text2img.runtime.images import Prepare
from img2text2img.runtime.text import END_ID, NUM_SPECIALS, PAD_ID, START_ID, Words

NEG = np.float32(-1e4)  # the torch head's "impossible" logit


def order_mask(prev: np.ndarray, vocab_size: int) -> np.ndarray:
    """`heads.order_mask`: True where a tag may not follow `prev` (not larger than it, or a special but <end>)."""
    ar = np.arange(vocab_size)
    bad = (ar <= prev[..., None]) | (ar < NUM_SPECIALS)
    bad[..., END_ID] = False
    return bad


class RuntimeTagger:
    """A tagger folder's `onnx/` graphs; `tag_images` gives what `Tagger.tag_images` gives."""

    kind = "tagger"

    def __init__(self, model_dir: Path, folder: Path, manifest: dict, threads: int | None = None):
        self.model_dir, self.folder, self.manifest = model_dir, folder, manifest
        self.words = Words.load(model_dir / "vocab.json")
        self.prepare = Prepare(manifest["preprocess"])
        self.head = manifest["head"]
        settings = {"open_vocab": False, **manifest["settings"]}
        settings.update(saved_inference(model_dir, ("beam", "threshold", "open_vocab")))
        self.beam, self.threshold = int(settings["beam"]), float(settings["threshold"])
        self.open_vocab = bool(settings["open_vocab"])
        self.encoder_name = manifest.get("encoder")
        self.detector: NumpyDetector | None = None
        self.max_tags = int(manifest["max_tags"])
        if self.head == "bce":
            self.probabilities = Graph.of(folder, manifest, "tagger", threads)
        else:
            self.encoder = Graph.of(folder, manifest, "encoder", threads)
            self.init = Graph.of(folder, manifest, "init", STEP_THREADS)
            self.step_graph = Graph.of(folder, manifest, "step", STEP_THREADS)

    def predict_arrays(self, x: np.ndarray, top: int | None = None, beam: int | None = None,
                       threshold: float | None = None, open_vocab: bool | None = None) -> list[list[tuple[str, float]]]:
        """Preprocessed images [B, 3, S, S] -> per image [(tag, score)], highest first (`Tagger.predict_features`;
        with open vocabulary, `tag_open_vocab`'s merge). `open_vocab=None`: the model's own setting."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        merged = self.open_vocab if open_vocab is None else open_vocab
        detector = self.open_vocabulary() if merged else None
        if self.head == "bce":
            out = self.probabilities.run(images=x)
            rows = bce_decode(out["probabilities"], self.threshold if threshold is None else threshold)
        else:
            out = self.encoder.run(images=x)
            rows = self.rnn_decode(out["features"], beam or self.beam)
        tags = []
        for r in rows:
            r = sorted(r, key=lambda t: -t[1])
            tags.append([(self.words.itos[i], s) for i, s in (r if merged or not top else r[:top])])
        if detector is None:
            return tags
        dets = detector.detect(out["pooled"], top=10, min_score=DETECT_THRESHOLD)
        return [merge_tags(h, d, top) for h, d in zip(tags, dets)]

    def open_vocabulary(self) -> NumpyDetector:
        """The exact ImageNet head on this tagger's frozen encoder; a one-line I2TError where there is none (an
        export without the pooled output, an encoder without an exact head, or a fine-tuned one)."""
        if self.detector is None:
            graph = self.probabilities if self.head == "bce" else self.encoder
            if "pooled" not in graph.outputs or not self.encoder_name:
                raise I2TError(f"open vocabulary: {self.folder} was exported without the encoder's pooled "
                               "features (export it again: python scripts/export_runtime.py MODEL --force)")
            if not has_imagenet_head(self.encoder_name) or not head_path(self.encoder_name).exists():
                raise I2TError(f"open vocabulary: this tagger's encoder ({self.encoder_name}) has no exact "
                               "ImageNet head")
            if self.manifest.get("encoder_trained"):
                raise I2TError(f"open vocabulary: this tagger's encoder ({self.encoder_name}) was fine-tuned and "
                               "has no fitted adapter")
            self.detector = NumpyDetector(self.encoder_name)
        return self.detector

    def tag_images(self, images: Sequence[Image.Image], top: int | None = 10, batch_size: int = 32,
                   beam: int | None = None, threshold: float | None = None,
                   open_vocab: bool | None = None) -> list[list[tuple[str, float]]]:
        out: list[list[tuple[str, float]]] = []
        for i in range(0, len(images), batch_size):
            out += self.predict_arrays(self.prepare.batch(images[i:i + batch_size]), top, beam, threshold, open_vocab)
        return out

    def rnn_decode(self, features: np.ndarray, beam: int) -> list[list[tuple[int, float]]]:
        """`RNNTagHead.decode` in numpy: beam search over tag sequences scored by summed log-probability."""
        k, T = max(1, beam), self.max_tags
        B, V = features.shape[0], len(self.words)
        s = self.init.run(features=features)
        h, c, img = (np.repeat(s[n], k, axis=0) for n in ("h", "c", "img"))  # [B*k, H]
        seqs = np.zeros((B * k, 0), dtype=np.int64)
        steps = np.zeros((B * k, 0), dtype=np.float32)
        score = np.full((B, k), -np.inf, dtype=np.float32)
        score[:, 0] = 0.0
        score = score.reshape(-1)
        last = np.full(B * k, START_ID, dtype=np.int64)
        done = np.zeros(B * k, dtype=bool)
        for t in range(T + 1):
            out = self.step_graph.run(tokens=last, h=h, c=c, img=img)
            logits = np.where(order_mask(last, V), NEG, out["logits"].astype(np.float32))
            logp = log_softmax(logits)
            logp[logits <= NEG / 2] = -np.inf  # masked ids are impossible, not unlikely
            if t == T:  # length limit: only <end> remains
                keep = logp[:, END_ID].copy()
                logp[:] = -np.inf
                logp[:, END_ID] = keep
            logp[done] = -np.inf
            logp[done, PAD_ID] = 0.0
            cand = (score[:, None] + logp).reshape(B, k * V)
            idx = np.argsort(-cand, axis=1, kind="stable")[:, :k]  # B x k
            top = np.take_along_axis(cand, idx, 1)
            src = (idx // V + np.arange(B)[:, None] * k).reshape(-1)
            tok = (idx % V).reshape(-1)
            step_lp = np.take_along_axis(logp.reshape(B, k * V), idx, 1).reshape(-1)
            seqs = np.concatenate([seqs[src], tok[:, None]], 1)
            steps = np.concatenate([steps[src], step_lp[:, None]], 1)
            score = top.reshape(-1)
            done = done[src] | (tok == END_ID) | (tok == PAD_ID)
            last = np.where(done, last[src], tok)
            h, c = out["new.h"][src], out["new.c"][src]
            if done.all():
                break
        best = score.reshape(B, k).argmax(1) + np.arange(B) * k
        result = []
        for r in best:
            tags = []
            for tok, lp in zip(seqs[r].tolist(), steps[r].tolist()):
                if tok in (END_ID, PAD_ID):
                    break
                tags.append((tok, math.exp(lp)))
            result.append(tags)
        return result


def bce_decode(p: np.ndarray, threshold: float) -> list[list[tuple[int, float]]]:
    """`BCETagHead.decode`: per row the tags with p >= threshold, highest first."""
    out = []
    for row in p.astype(np.float32):
        ids = np.argsort(-row, kind="stable")
        out.append([(int(i), float(row[i])) for i in ids if row[i] >= threshold and i >= NUM_SPECIALS])
    return out
