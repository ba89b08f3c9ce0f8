#!/usr/bin/env python
"""Does a generator copy its training photos, and do its seeds differ? One JSON file (`--out`).

    python scripts/generator_copy_check.py --model runs/diffusion-flickr8k/denoiser/last --data flickr8k \\
        --prompts 500 --seeds 0-4 --steps 25 --threads 2 --pairs copy-pairs.png --out copy-check.json

Why: a generator that scores well on Fréchet distance could be replaying its training set. Every drawing (the first
caption of each of the first --prompts test photos, at every seed) is matched to its nearest training photo by cosine
in frozen encoder features (MobileNetV2 pooled, 128 px, photos at the generator's own size); the issue's goal is that
for >= 99% of drawings that cosine is below --threshold (0.95). The real test photos' own nearest-training cosines
are given beside it, so a reader can see what "close" means for photos nobody copied.
Seed-to-seed diversity: per prompt, 1 - the mean cosine between its drawings at different seeds (0 = every seed
draws the same picture), and the per-pixel standard deviation across seeds. `--pairs` writes the closest
drawing / training photo pairs as a PNG to look at.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

import torch
from machine import cpu_model  # scripts/ is on sys.path when a script runs

from img2text2img.errors import I2TError, run_reporting_errors


def parse_seeds(text: str) -> list[int]:
    """'0-4' or '0,2,5' -> seeds."""
    try:
        if "-" in text:
            a, b = text.split("-")
            seeds = list(range(int(a), int(b) + 1))
        else:
            seeds = [int(x) for x in text.split(",")]
    except ValueError:
        raise I2TError(f"--seeds takes 'A-B' or 'A,B,C', not {text!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise I2TError(f"--seeds {text!r} names no seeds or one twice")
    return seeds


def nearest(queries: torch.Tensor, keys: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """For each query row, the largest cosine to any key row and that key's index (chunked: 6,000 keys fit)."""
    q = torch.nn.functional.normalize(queries.float(), dim=1)
    k = torch.nn.functional.normalize(keys.float(), dim=1)
    best, index = [], []
    for i in range(0, len(q), chunk):
        b, j = (q[i:i + chunk] @ k.T).max(dim=1)
        best.append(b)
        index.append(j)
    return torch.cat(best), torch.cat(index)


def quantiles(x: torch.Tensor) -> dict:
    qs = torch.quantile(x.double(), torch.tensor([0.5, 0.9, 0.99], dtype=torch.double))
    return {"mean": round(float(x.mean()), 4), "median": round(float(qs[0]), 4), "p90": round(float(qs[1]), 4),
            "p99": round(float(qs[2]), 4), "max": round(float(x.max()), 4)}


def seed_diversity(features: torch.Tensor, pictures: torch.Tensor) -> dict:
    """features [P, S, D] and pictures [P, S, 3, H, W] of P prompts at S seeds -> how much the seeds differ."""
    if features.shape[1] < 2:
        return {"feature_diversity": None, "pixel_std": None, "why": "one seed"}
    f = torch.nn.functional.normalize(features.float(), dim=2)
    cos = f @ f.transpose(1, 2)  # [P, S, S]
    s = cos.shape[1]
    off = (cos.sum(dim=(1, 2)) - cos.diagonal(dim1=1, dim2=2).sum(dim=1)) / (s * (s - 1))  # mean over seed pairs
    per_prompt = 1.0 - off
    return {"feature_diversity": round(float(per_prompt.mean()), 4),
            "feature_diversity_min_prompt": round(float(per_prompt.min()), 4),
            "pixel_std": round(float(pictures.float().std(dim=1).mean()), 4)}


def draw(gen, ids: torch.Tensor, seed: int, batch_size: int, temperature: float | None) -> torch.Tensor:
    """One picture per prompt, in batches seeded `seed + start` as `evaluate_generator` draws a diffusion model."""
    from img2text2img.models.generator import PromptWarning

    out = []
    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptWarning)
        for i in range(0, len(ids), batch_size):
            out.append(gen.generate(ids[i:i + batch_size], n=1, seed=seed + i, temperature=temperature))
    return torch.cat(out).float()


def copy_check(gen, data: str, prompts: int, seeds: list[int], train_images: int | None = None,
               threshold: float = 0.95, data_dir: str | None = None, batch_size: int = 64,
               temperature: float | None = None, encoder: str = "mobilenet_v2", size: int = 128,
               pairs: Path | None = None, pair_count: int = 8) -> dict:
    """Nearest-training-photo cosines of every drawing and seed-to-seed diversity (see the module docstring)."""
    from tqdm import tqdm

    from img2text2img.data import load_dataset
    from img2text2img.metrics.image import encoder_features
    from img2text2img.models.encoders import create_encoder
    from img2text2img.models.generator import save_grid
    from img2text2img.models.generator.api import generator_kind
    from img2text2img.train.generator import load_image_captions
    from img2text2img.vocab import pad_batch

    if not 0.0 < threshold <= 1.0:
        raise I2TError(f"--threshold is a cosine in (0, 1], not {threshold}")
    if prompts < 1:
        raise I2TError(f"--prompts must be at least 1, not {prompts}")
    ds = load_dataset(data, data_dir)
    side, max_tokens = gen.config.image_size, gen.config.max_tokens
    enc = create_encoder(encoder, pretrained=True).eval()
    print("encoding the training photos", file=sys.stderr)
    train = load_image_captions(ds, "train", gen.vocab, side, train_images, max_tokens)
    train_f = encoder_features(train.images.float() / 255.0, enc, size=size)
    test = load_image_captions(ds, "test", gen.vocab, side, prompts, max_tokens)
    ids = pad_batch([c[0] for c in test.captions])
    real_best, _ = nearest(encoder_features(test.images.float() / 255.0, enc, size=size), train_f)

    pictures, feats = [], []
    for seed in tqdm(seeds, desc="drawing", unit="seed", file=sys.stderr):
        p = draw(gen, ids, seed, batch_size, temperature)
        pictures.append(p)
        feats.append(encoder_features(p, enc, size=size))
    pictures, feats = torch.stack(pictures, 1), torch.stack(feats, 1)  # [P, S, ...]
    best, index = nearest(feats.flatten(0, 1), train_f)
    below = float((best < threshold).float().mean())
    if pairs is not None:  # the closest drawings beside the training photo each is nearest to
        top = best.argsort(descending=True)[:pair_count]
        grid = []
        for i in top.tolist():
            grid += [pictures.flatten(0, 1)[i], train.images[index[i]].float() / 255.0]
        save_grid(torch.stack(grid), pairs, ncol=4, scale=2)
    closest = best.argsort(descending=True)[:5].tolist()
    texts = [ds.captions[n][0] for n in test.names]
    return {
        "kind": generator_kind(gen), "sampler_steps": getattr(gen.settings, "steps", None),
        "guidance": getattr(gen.settings, "guidance", None), "temperature": temperature,
        "data": data, "prompts": len(ids), "seeds": seeds, "drawings": len(best), "training_photos": len(train_f),
        "encoder": encoder, "encoder_input": size, "threshold": threshold,
        "fraction_below_threshold": round(below, 4), "passes": below >= 0.99,
        "nearest_training_cosine": quantiles(best),
        "real_test_photos_nearest_training_cosine": quantiles(real_best),
        "closest": [{"prompt": texts[i // len(seeds)], "seed": seeds[i % len(seeds)], "cosine": round(float(best[i]), 4),
                     "training_photo": train.names[int(index[i])]} for i in closest],
        "diversity": seed_diversity(feats, pictures),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--model", required=True, help="generator checkpoint, run folder or shipped name")
    ap.add_argument("--data", default="flickr8k")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--prompts", type=int, default=500, help="test photos whose first caption is drawn (default 500)")
    ap.add_argument("--seeds", default="0-4", help="sampling seeds: 'A-B' or 'A,B,C' (default 0-4)")
    ap.add_argument("--train-images", type=int, default=None, help="compare with the first N training photos "
                    "(default: all)")
    ap.add_argument("--threshold", type=float, default=0.95, help="a drawing this close to a training photo counts "
                    "as a copy (default 0.95)")
    ap.add_argument("--steps", type=int, default=None, help="denoising steps of a diffusion generator")
    ap.add_argument("--guidance", type=float, default=None, help="draw with this guidance (default: the model's)")
    ap.add_argument("--temperature", type=float, default=None, help="scale of the starting noise / latent")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--pairs", type=Path, default=None, help="also write the closest drawing/photo pairs as a PNG")
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = ap.parse_args(argv)

    def run() -> int:
        from img2text2img.io import write_text_atomic
        from img2text2img.models.generator.api import load_generator, with_steps
        from img2text2img.train.generator import guide

        if args.threads:
            torch.set_num_threads(args.threads)
        seeds = parse_seeds(args.seeds)
        gen = load_generator(args.model)
        if args.steps is not None:
            gen = with_steps(gen, args.steps)
        if args.guidance is not None:
            guide(gen, args.guidance, args.data, args.data_dir)
        t0 = time.time()
        rec = copy_check(gen, args.data, args.prompts, seeds, args.train_images, args.threshold, args.data_dir,
                         args.batch_size, args.temperature, pairs=args.pairs)
        rec.update({
            "model": args.model, "seconds": round(time.time() - t0, 1),
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}, torch {torch.__version__}, "
                       f"{torch.get_num_threads()} threads",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        })
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, json.dumps(rec, indent=1) + "\n")
        n = rec["nearest_training_cosine"]
        print(f"{rec['fraction_below_threshold']:.1%} of {rec['drawings']} drawings have nearest-training cosine < "
              f"{args.threshold} ({'passes' if rec['passes'] else 'FAILS'} the 99% goal; median {n['median']}, "
              f"max {n['max']}; real test photos: median "
              f"{rec['real_test_photos_nearest_training_cosine']['median']}); seed diversity "
              f"{rec['diversity']['feature_diversity']}; wrote {args.out}")
        return 0

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
