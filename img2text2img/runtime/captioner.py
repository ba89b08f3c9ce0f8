"""Captioning without torch: the encoder graph, the decoder's init and step graphs, and the searches of
`models/captioner/search.py` (greedy; batched beam search with length normalisation; the open vocabulary's
constrained search in runtime/openvocab.py) written again in numpy.

The step graph returns log-probabilities (log_softmax of the decoder's logits, as the torch searches take them);
the searches here then rule out <pad>/<start>, freeze finished beams and rank exactly as the torch ones do, in
float32, so the two paths pick the same words unless two candidates are within float rounding of each other.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from img2text2img.errors import I2TError
from img2text2img.pipeline import encode_ahead
from img2text2img.runtime.graphs import Graph
from img2text2img.runtime.images import Prepare
from img2text2img.runtime.search import NEG_INF, never_emit, say_once, top_k
from img2text2img.runtime.text import END_ID, PAD_ID, START_ID, Words
from img2text2img.tags import said_once

# CaptionSettings' open-vocabulary defaults, for a config.json whose inference block predates them (tests check)
OPEN_VOCAB_DEFAULTS = {"open_vocab": False, "open_vocab_threshold": 0.6, "open_vocab_words": 1}
SAY_ONCE_DEFAULT = {"say_once": False}  # CaptionSettings.say_once, for an inference block without it
# A decoder step's products (a few rows) are too small to share out: waking ONNX Runtime's worker threads every
# step costs more than they save, most of all on a busy machine; one thread also leaves a core to the encoder.
STEP_THREADS = 1


@dataclass
class CaptionResult:
    """As `img2text2img.models.captioner.CaptionResult`."""

    text: str
    tokens: list[str]
    logprob: float  # sum of token log-probabilities, <end> included


class RuntimeCaptioner:
    """A captioner folder's `onnx/` graphs. `caption_images(pil_images)` gives what `Captioner.caption_images` gives."""

    kind = "captioner"

    def __init__(self, model_dir: Path, folder: Path, manifest: dict, threads: int | None = None):
        self.model_dir, self.folder, self.manifest = model_dir, folder, manifest
        self.words = Words.load(model_dir / "vocab.json")
        self.prepare = Prepare(manifest["preprocess"])
        self.state_keys: list[str] = manifest["state_keys"]
        self.per_image = set(manifest["per_image"])
        self.carried: list[str] = manifest["carried"]
        self.uses_grid = bool(manifest["uses_grid"])
        self.max_len = int(manifest["max_len"])
        settings = {**OPEN_VOCAB_DEFAULTS, **SAY_ONCE_DEFAULT, **manifest["settings"]}
        settings.update(saved_inference(model_dir, ("beam_size", "length_alpha", *OPEN_VOCAB_DEFAULTS,
                                                    *SAY_ONCE_DEFAULT)))  # and what `ship --set` changed
        self.beam_size, self.length_alpha = int(settings["beam_size"]), float(settings["length_alpha"])
        self.open_vocab = bool(settings["open_vocab"])
        self.open_vocab_threshold = float(settings["open_vocab_threshold"])
        self.open_vocab_words = int(settings["open_vocab_words"])
        self.say_once = bool(settings["say_once"])
        self.ov = None  # the detector and constrained search, loaded on the first open-vocabulary caption
        self.encoder = Graph.of(folder, manifest, "encoder", threads)
        self.init = Graph.of(folder, manifest, "init", STEP_THREADS)
        self.step_graph = Graph.of(folder, manifest, "step", STEP_THREADS)

    # -- encoder --------------------------------------------------------------------------------------------------

    def encode_arrays(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed images [B, 3, S, S] -> (pooled [B, D], grid [B, N, D])."""
        out = self.encoder.run(images=np.ascontiguousarray(x, dtype=np.float32))
        return out["pooled"], out["grid"]

    def encode_images(self, images: Sequence[Image.Image]) -> tuple[np.ndarray, np.ndarray]:
        return self.encode_arrays(self.prepare.batch(images))

    # -- decoder --------------------------------------------------------------------------------------------------

    def init_state(self, pooled: np.ndarray, grid: np.ndarray | None) -> dict[str, np.ndarray]:
        feeds = {"pooled": np.ascontiguousarray(pooled, dtype=np.float32)}
        if grid is not None:
            feeds["grid"] = np.ascontiguousarray(grid, dtype=np.float32)
        out = self.init.run(**feeds)
        return {k: out[f"state.{k}"] for k in self.state_keys}

    def step(self, state: dict[str, np.ndarray], prefix: np.ndarray) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """prefix [R, t] int64 -> (log-probabilities [R, V] float32, new state)."""
        out = self.step_graph.run(prefix=prefix, **{f"state.{k}": v for k, v in state.items()})
        new = dict(state)
        new.update({k: out[f"new.{k}"] for k in self.carried})
        return out["logp"], new

    def said_once(self, extra: Sequence[str] = ()) -> np.ndarray | None:
        """As `Captioner.said_once`, for the vocabulary plus `extra` words; None when `say_once` is off."""
        return np.array(said_once(self.words.itos + list(extra)), dtype=bool) if self.say_once else None

    def greedy(self, pooled: np.ndarray, grid: np.ndarray | None, max_len: int) -> tuple[np.ndarray, np.ndarray]:
        B = pooled.shape[0]
        once = self.said_once()
        state = self.init_state(pooled, grid)
        prefix = np.full((B, 1), START_ID, dtype=np.int64)
        done = np.zeros(B, dtype=bool)
        total = np.zeros(B, dtype=np.float32)
        for _ in range(max_len + 1):
            logp, state = self.step(state, prefix)
            logp = say_once(never_emit(logp.astype(np.float32, copy=True)), prefix, once)
            nxt = logp.argmax(-1)
            lp = logp[np.arange(B), nxt]
            total = (total + np.where(done, np.float32(0), lp)).astype(np.float32)
            nxt = np.where(done, PAD_ID, nxt)
            prefix = np.concatenate([prefix, nxt[:, None]], 1)
            done = done | (nxt == END_ID)
            if done.all():
                break
        return prefix[:, 1:], total

    def beam(self, pooled: np.ndarray, grid: np.ndarray | None, k: int, max_len: int,
             alpha: float) -> tuple[list[np.ndarray], np.ndarray]:
        """`search.beam_search` in numpy -> (ids per image, summed logprob [B]) of the best beam per image."""
        B = pooled.shape[0]
        state = {key: np.repeat(v, k, axis=0) for key, v in self.init_state(pooled, grid).items()}  # [B*k, ...]
        prefix = np.full((B * k, 1), START_ID, dtype=np.int64)
        scores = np.full((B, k), NEG_INF, dtype=np.float32)
        scores[:, 0] = 0.0  # all beams start identical: one alive, so the first step picks no duplicates
        done = np.zeros(B * k, dtype=bool)
        lengths = np.zeros(B * k, dtype=np.float32)
        images = np.arange(B)
        best_ids: list[np.ndarray] = [np.zeros(0, dtype=np.int64)] * B
        best_lp = np.zeros(B, dtype=np.float32)
        alpha32 = np.float32(alpha)
        once = self.said_once()

        def finish(which: np.ndarray) -> None:
            n = scores.shape[0]
            with np.errstate(invalid="ignore"):
                norm = scores / np.maximum(lengths.reshape(n, k), np.float32(1.0)) ** alpha32
            norm = np.where(np.isfinite(scores), norm, NEG_INF)
            best = norm.argmax(-1)
            for i in which:
                best_ids[images[i]] = prefix[i * k + best[i], 1:]
                best_lp[images[i]] = scores[i, best[i]]

        for _ in range(max_len + 1):
            logp, state = self.step(state, prefix)
            logp = say_once(never_emit(logp.astype(np.float32, copy=True)), prefix, once)  # [b*k, V]
            b, V = scores.shape[0], logp.shape[-1]
            if done.any():
                logp[done] = NEG_INF
                logp[done, PAD_ID] = 0.0
            cand = (scores.reshape(b * k, 1) + logp).reshape(b, k * V)
            flat = top_k(cand, k)
            scores = np.take_along_axis(cand, flat, 1)
            beam, word = flat // V, flat % V
            src = (np.arange(b)[:, None] * k + beam).reshape(-1)
            state = {key: (v if key in self.per_image else v[src]) for key, v in state.items()}
            prefix = np.concatenate([prefix[src], word.reshape(-1, 1)], 1)
            was_done = done[src]
            lengths = lengths[src] + (~was_done).astype(np.float32)
            done = was_done | (word.reshape(-1) == END_ID)
            finished = done.reshape(b, k).all(1)
            if finished.any():
                finish(np.flatnonzero(finished))
                keep = np.flatnonzero(~finished)
                if keep.size == 0:
                    break
                rows = (keep[:, None] * k + np.arange(k)).reshape(-1)
                state = {key: v[rows] for key, v in state.items()}
                prefix, done, lengths = prefix[rows], done[rows], lengths[rows]
                scores, images = scores[keep], images[keep]
        else:  # max_len reached with beams still open
            finish(np.arange(scores.shape[0]))
        return best_ids, best_lp

    def decode_features(self, pooled: np.ndarray, grid: np.ndarray | None = None, beam_size: int | None = None,
                        max_len: int | None = None, open_vocab: bool | None = None) -> list[CaptionResult]:
        """As `Captioner.decode_features`: greedy at beam 1, `beam_size=None` the model's own, `open_vocab=None`
        too (its inference block's `open_vocab`)."""
        beam_size = self.beam_size if beam_size is None else int(beam_size)
        max_len = max_len or self.max_len
        grid = grid if self.uses_grid else None
        if beam_size <= 1:
            ids, lp = self.greedy(pooled, grid, max_len)
            rows = list(ids)
        else:
            rows, lp = self.beam(pooled, grid, beam_size, max_len, self.length_alpha)
        out = []
        for row, score in zip(rows, lp.tolist()):
            toks = self.words.decode_tokens(row.tolist())
            out.append(CaptionResult(" ".join(toks), toks, float(score)))
        if self.open_vocab if open_vocab is None else open_vocab:
            for i, (toks, score) in self.open_vocabulary().redecode(
                    pooled, grid, out, beam_size, max_len, self.length_alpha, self.open_vocab_threshold,
                    self.open_vocab_words).items():
                out[i] = CaptionResult(" ".join(toks), toks, score)
        return out

    def open_vocabulary(self):
        if self.ov is None:  # imported here: a caption without open vocabulary never reads the detector's files
            from img2text2img.runtime.openvocab import RuntimeOpenVocab

            meta = json.loads((self.model_dir / "config.json").read_text(encoding="utf-8"))
            self.ov = RuntimeOpenVocab(self, meta)
        return self.ov

    def caption_arrays(self, x: np.ndarray, beam_size: int | None = None, max_len: int | None = None,
                       open_vocab: bool | None = None) -> list[CaptionResult]:
        """Preprocessed images [B, 3, S, S] (see `prepare`) -> captions: what a folder pipeline calls per batch."""
        return self.decode_features(*self.encode_arrays(x), beam_size=beam_size, max_len=max_len, open_vocab=open_vocab)

    def caption_images(self, images: Sequence[Image.Image], beam_size: int | None = None, max_len: int | None = None,
                       batch_size: int = 32, open_vocab: bool | None = None) -> list[CaptionResult]:
        """PIL images -> captions, `batch_size` at a time; with several batches the next one is prepared and encoded
        on a second thread while this one is decoded (as `Captioner.caption_images`; results are the same)."""
        batches = [images[i:i + batch_size] for i in range(0, len(images), batch_size)]
        out: list[CaptionResult] = []
        if len(batches) < 2:
            for batch in batches:
                out.extend(self.caption_arrays(self.prepare.batch(batch), beam_size, max_len, open_vocab))
            return out
        return encode_ahead(batches, self.encode_images, lambda pooled, grid: self.decode_features(
            pooled, grid, beam_size=beam_size, max_len=max_len, open_vocab=open_vocab))

    def timed_caption(self, image: Image.Image, beam_size: int | None = None,
                      open_vocab: bool | None = None) -> tuple[CaptionResult, float]:
        """(result, milliseconds) for one image: what `i2t caption --json` reports."""
        t0 = time.perf_counter()
        r = self.caption_images([image], beam_size=beam_size, open_vocab=open_vocab)[0]
        return r, (time.perf_counter() - t0) * 1000.0


def saved_inference(model_dir: Path, keys: Sequence[str]) -> dict:
    """The settings config.json's `inference` block holds now: `i2t ship --set` may change them after the export
    (which saved the settings then in the manifest, old checkpoints' config keys resolved)."""
    try:
        meta = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise I2TError(f"{model_dir / 'config.json'} cannot be read") from None
    return {k: v for k, v in (meta.get("inference") or {}).items() if k in keys}
