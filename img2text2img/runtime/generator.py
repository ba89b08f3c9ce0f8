"""Drawing without torch: one graph from token ids (+ noise, + guidance) to pictures, for the pixel, vae and gan
generators (diffusion: `runtime/diffusion.py`). The scene generator (the shapes default) samples a layout with a transformer and renders it in Python; it
stays on torch.

The noise is torch's: `torch.randn(rows, z_dim, generator=torch.Generator().manual_seed(seed))` reproduced in numpy
(`torch_randn`), so a seed gives the same pictures on both paths (to float rounding, well inside 1/255).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from img2text2img.errors import I2TError
from img2text2img.grids import make_grid, save_grid  # noqa: F401  (re-exported: the CLI's torch-free grid)
from img2text2img.runtime.captioner import saved_inference
from img2text2img.runtime.graphs import Graph
from img2text2img.runtime.text import PAD_ID, Words
from img2text2img.words import MAX_PROMPT_CHARS, PromptWarning, prompt_tokens  # noqa: F401  (re-exported)


def prompt_ids(texts: Sequence[str] | str, words: Words, max_tokens: int) -> np.ndarray:
    """`text.prepare_prompts` in numpy: prompts -> ids [B, T] (with <start>/<end>), padded with <pad>."""
    seqs = [words.encode(tokens) for tokens in prompt_tokens(texts, words, max_tokens)]
    ids = np.full((len(seqs), max(len(s) for s in seqs)), PAD_ID, dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
    return ids


def uniform24(raw: np.ndarray) -> np.ndarray:
    # torch's uniform_real_distribution<float>: the low 24 bits of a 32-bit draw, times 2^-24
    return ((raw & np.uint32((1 << 24) - 1)).astype(np.float64) * 2.0 ** -24).astype(np.float32)


def box_muller16(u: np.ndarray) -> np.ndarray:
    # torch's normal_fill_16: u1 = 1 - first 8, u2 = last 8 -> r cos, r sin
    u1, u2 = (np.float32(1.0) - u[:8]).astype(np.float64), u[8:].astype(np.float64)
    r, theta = np.sqrt(-2.0 * np.log(u1)), 2.0 * np.pi * u2
    return np.concatenate([r * np.cos(theta), r * np.sin(theta)]).astype(np.float32)


def torch_randn(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """What `torch.randn(*shape, generator=torch.Generator().manual_seed(seed))` gives on the CPU, float32.

    torch draws from a 32-bit Mersenne Twister seeded like numpy's legacy `RandomState(seed)`; 16 or more values
    are filled 16 at a time by Box-Muller on float uniforms (the last 16 redrawn when the count is not a multiple
    of 16), fewer one at a time from double uniforms, each pair's second value kept for the next."""
    n = int(np.prod(shape)) if shape else 1
    rs = np.random.RandomState(int(seed) & 0xFFFFFFFF)  # the torch seed's low 32 bits seed its mt19937
    if n >= 16:
        extra = 16 if n % 16 else 0
        raw = rs.randint(0, 2 ** 32, size=n + extra, dtype=np.uint32)
        u = uniform24(raw[:n])
        out = u.copy()
        for i in range(0, n - 15, 16):
            out[i:i + 16] = box_muller16(u[i:i + 16])
        if extra:
            out[n - 16:] = box_muller16(uniform24(raw[n:]))
        return out.reshape(shape)
    raw = rs.randint(0, 2 ** 32, size=4 * n, dtype=np.uint32).astype(np.uint64)
    out, spare, j = [], None, 0
    mask = np.uint64((1 << 53) - 1)
    for _ in range(n):
        if spare is not None:
            out.append(spare)
            spare = None
            continue
        a, b = (raw[j] << np.uint64(32)) | raw[j + 1], (raw[j + 2] << np.uint64(32)) | raw[j + 3]
        j += 4
        u1, u2 = float(a & mask) * 2.0 ** -53, float(b & mask) * 2.0 ** -53
        r, theta = np.sqrt(-2.0 * np.log1p(-u2)), 2.0 * np.pi * u1
        spare = r * np.sin(theta)
        out.append(r * np.cos(theta))
    return np.asarray(out, dtype=np.float32).reshape(shape)


class RuntimeGenerator:
    """A pixel / vae / gan generator folder's `onnx/` graph; `generate` gives what `Generator.generate` gives, as
    float32 [N, 3, S, S] in [0, 1]; `generate_pil` as pictures."""

    kind = "generator"

    def __init__(self, model_dir: Path, folder: Path, manifest: dict, threads: int | None = None):
        self.model_dir, self.folder, self.manifest = model_dir, folder, manifest
        self.words = Words.load(model_dir / "vocab.json")
        self.z_dim = int(manifest["z_dim"])
        self.max_tokens = int(manifest["max_tokens"])
        self.has_sentence_mean = bool(manifest["has_sentence_mean"])
        settings = dict(manifest["settings"])
        settings.update(saved_inference(model_dir, ("temperature", "guidance")))
        self.temperature, self.guidance = float(settings["temperature"]), float(settings["guidance"])
        self.graph = Graph.of(folder, manifest, "generator", threads)

    def check_guidance(self, guidance: float) -> None:
        if guidance < 0:
            raise I2TError(f"guidance must be >= 0, not {guidance}")
        if guidance != 1.0 and not self.has_sentence_mean:
            raise I2TError("this generator has no mean sentence vector, which guidance needs (checkpoints saved by "
                           "training have one; otherwise fit it with Generator.fit_sentence_mean)")

    def generate(self, prompts: Sequence[str] | str, n: int = 1, seed: int = 0, temperature: float | None = None,
                 batch_size: int = 64, guidance: float | None = None, steps: int | None = None) -> np.ndarray:
        """`n` pictures per prompt, prompt-major -> float32 [len(prompts) * n, 3, S, S] in [0, 1]. `steps` is
        refused: only diffusion generators (`runtime.diffusion`) have steps."""
        if steps is not None:
            raise I2TError("steps is an option of diffusion generators; this is a pixel, vae or gan generator")
        if n < 1:
            raise I2TError(f"n must be at least 1, got {n}")
        ids = np.repeat(prompt_ids(prompts, self.words, self.max_tokens), n, axis=0)
        temperature = self.temperature if temperature is None else float(temperature)
        guidance = self.guidance if guidance is None else float(guidance)
        self.check_guidance(guidance)
        z = (torch_randn(seed, (ids.shape[0], self.z_dim)) * np.float32(temperature)).astype(np.float32) \
            if self.z_dim else None
        g = np.asarray(guidance, dtype=np.float32)
        out = []
        for i in range(0, ids.shape[0], batch_size):
            feeds = {"ids": ids[i:i + batch_size], "guidance": g}
            if z is not None:
                feeds["z"] = z[i:i + batch_size]
            out.append(self.graph.run(**feeds)["images"].astype(np.float32))
        return np.clip(np.concatenate(out), 0.0, 1.0)

    def generate_pil(self, prompts: Sequence[str] | str, **kw) -> list[Image.Image]:
        return to_pil(self.generate(prompts, **kw))


def to_pil(images: np.ndarray) -> list[Image.Image]:
    """[B, 3, H, W] in [0, 1] -> RGB pictures, rounded as `generator.images.to_pil` rounds."""
    arr = np.round(np.clip(images, 0, 1) * np.float32(255)).astype(np.uint8).transpose(0, 2, 3, 1)
    return [Image.fromarray(np.ascontiguousarray(a), "RGB") for a in arr]
