#!/usr/bin/env python
"""Score a generator: Fréchet distance and round trip, written as one JSON file.

    python scripts/results_generator.py --model img2text2img/pretrained/generator --data shapes --out generator.json
    python scripts/results_generator.py --model RUN/last --data flickr8k --guidance 2.5 --out vae.json
    python scripts/results_generator.py --model runs/diffusion-flickr8k/denoiser/last --data flickr8k --steps 25 \
        --out diffusion.json

- the Fréchet distance between one drawing per photo of --split (test by default; val to choose), from its first
  caption, and the real photos, in MobileNetV2 pooled features at 128 px (NOT the standard FID, whose Inception
  weights we do not have), with the cosine of each drawing to its own photo vs another photo (`evaluate_generator`);
- the round trip with the dataset's shipped captioner (or --judge): caption -> drawing -> caption BLEU, normalised
  between the captioner on a grey image and on the real photo (`evaluate_roundtrip`);
- with --samples, a grid of the fixed sample prompts.
Any generator kind (pixel, vae, gan, diffusion); `--steps` sets a diffusion generator's denoising steps.
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

from img2text2img.errors import run_reporting_errors


def model_id(folder: str | Path | None) -> dict | None:
    """Which checkpoint a score used: its portable name and weights fingerprint."""
    from img2text2img.shipping import parent_record

    return parent_record(folder) if folder else None


def dataset_for(data: str) -> str:
    """The dataset a --data choice is scored on (shapes: its 5,000-picture set)."""
    return "shapes:5000" if data == "shapes" else data


def score(args: argparse.Namespace) -> dict:
    import torch

    from img2text2img.checkpoint import load_checkpoint
    from img2text2img.data import load_dataset
    from img2text2img.models import load_model, resolve_checkpoint_dir
    from img2text2img.models.encoders import create_encoder
    from img2text2img.models.generator import PromptWarning, reranked, save_grid
    from img2text2img.models.generator.api import generator_kind, with_steps
    from img2text2img.roundtrip import default_model_dir, evaluate_roundtrip, model_functions
    from img2text2img.train.generator import evaluate_generator, guide, sample_prompts

    path = resolve_checkpoint_dir(args.model)
    ck = load_checkpoint(path, kind="generator")  # its training step and time
    gen = load_model(path, kind="generator")  # any kind: load_model dispatches diffusion checkpoints
    if args.steps is not None:
        gen = with_steps(gen, args.steps)
    if args.guidance is not None:
        guide(gen, args.guidance, dataset_for(args.data))
    judge = args.judge or default_model_dir("captioner", args.data)
    if args.rerank_with is not None:  # best of `candidates` samples, chosen by another captioner than the judge
        gen = reranked(gen, args.rerank_with, args.candidates, judge=judge)
    t0 = time.time()
    ds_name = dataset_for(args.data)
    fr = evaluate_generator(gen, data=ds_name, split=args.split, n=args.frechet_images, seed=args.seed,
                            temperature=args.temperature)
    cap = load_model(judge, kind="captioner")
    enc = create_encoder("mobilenet_v2", pretrained=True).eval()
    torch.manual_seed(args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptWarning)
        rt = evaluate_roundtrip(load_dataset(ds_name), *model_functions(cap, gen, enc, temperature=args.temperature),
                                split=args.split, limit=args.roundtrip_images, seed=args.seed)
        if args.samples:
            save_grid(gen.generate(sample_prompts(args.data), n=2, seed=args.seed, temperature=args.temperature),
                      args.samples, ncol=4, scale=2)
    s = rt.scores
    return {
        "model": model_id(path), "data": args.data, "split": args.split, "kind": generator_kind(gen),
        "steps": ck.info.get("step"), "sampler_steps": getattr(gen.settings, "steps", None),
        "train_seconds": ck.metrics.get("train_seconds"),
        "temperature": fr["temperature"], "guidance": gen.settings.guidance, "frechet": fr,
        "roundtrip": {"images": s["n_images"], "normalised_bleu4": s["normalised_bleu4"],
                      "normalised_bleu1": s["normalised_bleu1"], "bleu4": s["roundtrip"]["bleu4"],
                      "upper_bleu4": s["upper_real_photo"]["bleu4"], "lower_grey_bleu4": s["lower_grey"]["bleu4"],
                      "image_to_image": s.get("image_to_image")},
        "judge": model_id(judge),
        "reranker": {**model_id(args.rerank_with), "candidates": args.candidates} if args.rerank_with else None,
        "command": "python scripts/results_generator.py " + " ".join(args.argv),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "seconds": round(time.time() - t0, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="generator checkpoint or run folder")
    ap.add_argument("--data", default="shapes", choices=["shapes", "flickr8k"])
    ap.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    ap.add_argument("--split", default="test", choices=["val", "test"],
                    help="photos drawn and compared: val to choose a model or setting, test to score it once")
    ap.add_argument("--frechet-images", type=int, default=300)
    ap.add_argument("--roundtrip-images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--temperature", type=float, default=None, help="draw at this temperature (default: the model's)")
    ap.add_argument("--guidance", type=float, default=None, help="draw with this guidance (default: the model's)")
    ap.add_argument("--steps", type=int, default=None,
                    help="denoising steps of a diffusion generator (default: the model's; an error for other kinds)")
    ap.add_argument("--judge", type=Path, default=None, help="captioner for the round trip (default: the shipped one)")
    ap.add_argument("--rerank-with", type=Path, default=None, metavar="CAPTIONER",
                    help="draw --candidates samples per picture and keep the one this captioner finds the sentence "
                         "most likely for (must not be the judge)")
    ap.add_argument("--candidates", type=int, default=8, help="samples per picture with --rerank-with")
    ap.add_argument("--samples", type=Path, default=None, help="also write a PNG grid of the sample prompts here")
    args = ap.parse_args(argv)
    args.argv = sys.argv[1:] if argv is None else list(argv)  # the command the JSON records, also when called in-process
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from img2text2img.io import write_text_atomic

    rec = score(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(rec, indent=2, default=str) + "\n")
    print(f"Fréchet {rec['frechet']['frechet_feature_distance']:.1f}, normalised round-trip BLEU-4 "
          f"{rec['roundtrip']['normalised_bleu4']:.3f} ({rec['seconds']} s); wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
