"""Latent diffusion without torch: `DiffusionGenerator.generate`'s DDIM loop and classifier-free guidance in numpy
around three exported graphs (text encoder, UNet denoiser, autoencoder decoder; `export.export_diffusion`).

The starting noise is torch's (`torch_randn`) and the loop does the same float32 arithmetic in the same order as
`models/diffusion/schedule.ddim_sample`, so a seed gives the torch model's pictures (to float rounding).
"""
from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from img2text2img.config import MAX_GUIDANCE, MAX_PER_PROMPT, MAX_TEMPERATURE, check_number, check_seed
from img2text2img.runtime.captioner import saved_inference
from img2text2img.runtime.generator import prompt_ids, to_pil, torch_randn
from img2text2img.runtime.graphs import Graph
from img2text2img.runtime.text import END_ID, PAD_ID, START_ID, Words

HALF_PI = np.float32(np.pi / 2)


def torch_linspace(start: float, end: float, n: int) -> np.ndarray:
    """`torch.linspace(start, end, n)` in float32 as torch's CPU kernel computes it: from the start for the first
    half, from the end for the rest (so both ends are exact), each value one fused multiply-add (float64 here, which
    holds the float32 product exactly, then one rounding)."""
    if n == 1:
        return np.asarray([start], dtype=np.float32)
    start32, end32 = np.float32(start), np.float32(end)
    step = np.float64(np.float32((end32 - start32) / np.float32(n - 1)))
    idx = np.arange(n)
    head = (np.float64(start32) + step * idx).astype(np.float32)
    tail = (np.float64(end32) - step * (n - idx - 1)).astype(np.float32)
    return np.where(idx < n // 2, head, tail)


def alpha_sigma(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`schedule.alpha_sigma`: t [B] -> (cos, sin) of pi t / 2, each [B, 1, 1, 1], float32."""
    phi = (t.astype(np.float32) * HALF_PI).reshape(-1, 1, 1, 1)
    return np.cos(phi), np.sin(phi)


def ddim_sample(predict_v: Callable[[np.ndarray, np.ndarray], np.ndarray], noise: np.ndarray,
                steps: int) -> np.ndarray:
    """`schedule.ddim_sample` in numpy: deterministic DDIM from t=1 to t=0 in `steps` equal steps."""
    z = noise.astype(np.float32)
    for t, t_next in itertools.pairwise(torch_linspace(1.0, 0.0, steps + 1)):
        tb = np.full(z.shape[0], t, dtype=np.float32)
        a, s = alpha_sigma(tb)
        v = predict_v(z, tb)
        z0, eps = a * z - s * v, s * z + a * v
        a2, s2 = alpha_sigma(np.full(z.shape[0], t_next, dtype=np.float32))
        z = a2 * z0 + s2 * eps
    return z


def empty_ids(rows: int, length: int) -> np.ndarray:
    """`diffusion.empty_prompt_ids`: `<start> <end>` padded to `length`, what guidance steers away from."""
    ids = np.full((rows, max(length, 2)), PAD_ID, dtype=np.int64)
    ids[:, 0], ids[:, 1] = START_ID, END_ID
    return ids


class RuntimeDiffusion:
    """A diffusion generator folder's `onnx/` graphs; `generate` gives what `DiffusionGenerator.generate` gives, as
    float32 [N, 3, S, S] in [0, 1]; `generate_pil` as pictures."""

    kind = "generator"

    def __init__(self, model_dir: Path, folder: Path, manifest: dict, threads: int | None = None):
        self.model_dir, self.folder, self.manifest = model_dir, folder, manifest
        self.words = Words.load(model_dir / "vocab.json")
        self.max_tokens = int(manifest["max_tokens"])
        self.latent = (int(manifest["latent_channels"]), int(manifest["latent_side"]))
        settings = dict(manifest["settings"])
        settings.update(saved_inference(model_dir, ("steps", "guidance")))
        self.steps, self.guidance = int(settings["steps"]), float(settings["guidance"])
        self.text, self.unet, self.decoder = (Graph.of(folder, manifest, k, threads) for k in ("text", "unet", "decoder"))

    def check_guidance(self, guidance: float) -> None:
        check_number("guidance", guidance, 0.0, MAX_GUIDANCE)

    def draw_latents(self, ids: np.ndarray, noise: np.ndarray, steps: int, guidance: float) -> np.ndarray:
        """Prompt ids [B, T] and starting noise [B, C, h, w] -> denoised latents: the torch sampler's batch, with the
        prompted rows first and the empty-prompt rows after them under guidance."""
        text_ids = ids if guidance == 1.0 else np.concatenate([ids, empty_ids(ids.shape[0], ids.shape[1])])
        states = self.text.run(ids=text_ids)
        cond = {"sentence": states["sentence"], "words": states["words"], "mask": text_ids != PAD_ID}
        g = np.float32(guidance)

        def predict_v(z: np.ndarray, t: np.ndarray) -> np.ndarray:
            if guidance == 1.0:
                return self.unet.run(z=z, t=t, **cond)["v"]
            v = self.unet.run(z=np.concatenate([z, z]), t=np.concatenate([t, t]), **cond)["v"]
            v_cond, v_empty = v[:z.shape[0]], v[z.shape[0]:]
            return v_empty + g * (v_cond - v_empty)

        return ddim_sample(predict_v, noise, steps)

    def generate(self, prompts: Sequence[str] | str, n: int = 1, seed: int = 0, temperature: float | None = None,
                 batch_size: int = 32, guidance: float | None = None, steps: int | None = None) -> np.ndarray:
        """`n` pictures per prompt, prompt-major -> float32 [len(prompts) * n, 3, S, S] in [0, 1]. `steps` /
        `guidance` default to the model's settings; `temperature` scales the starting noise."""
        check_number("n", n, 1, MAX_PER_PROMPT, integer=True)
        check_seed(seed)
        if steps is not None:
            check_number("steps", steps, 1, 1000, integer=True)
        if guidance is not None:
            self.check_guidance(guidance)
        if temperature is not None:
            check_number("temperature", temperature, 0.0, MAX_TEMPERATURE)
        steps = self.steps if steps is None else int(steps)
        guidance = self.guidance if guidance is None else float(guidance)
        ids = np.repeat(prompt_ids(prompts, self.words, self.max_tokens), n, axis=0)
        c, side = self.latent
        noise = torch_randn(seed, (ids.shape[0], c, side, side))
        if temperature is not None:
            noise = (noise * np.float32(temperature)).astype(np.float32)
        out = []
        for i in range(0, ids.shape[0], batch_size):  # rows are independent: a chunk at a time bounds the memory
            z = self.draw_latents(ids[i:i + batch_size], noise[i:i + batch_size], steps, guidance)
            out.append(self.decoder.run(z=z.astype(np.float32))["images"].astype(np.float32))
        return np.clip(np.concatenate(out), 0.0, 1.0)

    def generate_pil(self, prompts: Sequence[str] | str, **kw) -> list[Image.Image]:
        return to_pil(self.generate(prompts, **kw))
