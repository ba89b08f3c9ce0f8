#!/usr/bin/env python
"""Score a captioner on a split, or time it, and write one JSON.

    python scripts/results_captioner.py --model img2text2img/pretrained/captioner --split test \
        --threads 2 --out docs/results/captioner.json
    python scripts/results_captioner.py --bench img2text2img/pretrained/captioner --beam 3 --threads 2

Scoring decodes the split with the model's own decoding settings (or --beam) and reports nltk BLEU-1..4 and the
COCO metrics, with the machine, date and command that produced the numbers. --bench times captioning with the JPEGs
already read: images/s for batches of 32 and the median latency of one photo (encoder + decoder).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from pathlib import Path

from machine import cpu_model  # scripts/ is on sys.path when a script runs

from img2text2img.errors import run_reporting_errors


def machine() -> str:
    import torch

    return f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def score(args) -> dict:
    from img2text2img.models import resolve_checkpoint_dir, weights_sha256
    from img2text2img.models.captioner import default_captioner_dir, load_captioner
    from img2text2img.shipping import portable_path
    from img2text2img.train.captioner import evaluate_captioner

    path = resolve_checkpoint_dir(args.model or default_captioner_dir())
    scores = evaluate_captioner(load_captioner(path), args.data, args.split, beam_size=args.beam, coco=not args.no_coco,
                                data_dir=args.data_dir, limit=args.limit)
    return {"model": portable_path(path), "weights_sha256": weights_sha256(path), **scores}


def bench(args, n: int = 64) -> dict:
    import torch

    from img2text2img.data import load_dataset, load_image
    from img2text2img.models import resolve_checkpoint_dir, weights_sha256
    from img2text2img.models.captioner import load_captioner
    from img2text2img.shipping import portable_path

    model = load_captioner(args.bench)
    model.ensure_encoder()
    ds = load_dataset(args.data, args.data_dir)
    imgs = [load_image(ds.image_path(i)) for i in ds.split("test")[:n]]
    with torch.inference_mode():
        model.caption_images(imgs[:2], beam_size=args.beam)  # builds the fast encoder copy
        t0 = time.perf_counter()
        model.caption_images(imgs, beam_size=args.beam, batch_size=32)
        batched = len(imgs) / (time.perf_counter() - t0)
        lat = []
        for im in imgs[:20]:
            t0 = time.perf_counter()
            model.caption_images([im], beam_size=args.beam)
            lat.append((time.perf_counter() - t0) * 1000)
    lat.sort()
    path = resolve_checkpoint_dir(args.bench)
    return {"model": portable_path(path), "weights_sha256": weights_sha256(path),
            "beam": model.settings.beam_size if args.beam is None else args.beam, "images": len(imgs),
            "batched_images_per_s": round(batched, 1), "single_image_ms_median": round(lat[len(lat) // 2], 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="captioner folder or run (default: the shipped one)")
    ap.add_argument("--bench", default=None, metavar="MODEL", help="time this captioner instead of scoring")
    ap.add_argument("--data", default="flickr8k")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--split", default="test", choices=["train", "val", "test"])
    ap.add_argument("--beam", type=int, default=None, help="beam width (default: the model's own)")
    ap.add_argument("--limit", type=int, default=None, help="only the first N images of the split")
    ap.add_argument("--no-coco", action="store_true", help="nltk BLEU only (no Java)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="JSON file to write (required when scoring)")
    args = ap.parse_args(argv)
    if args.bench is None and args.out is None:
        ap.error("--out is required when scoring")

    import torch

    from img2text2img.io import write_text_atomic

    torch.set_num_threads(args.threads)
    record = bench(args) if args.bench else score(args)
    args_given = sys.argv[1:] if argv is None else argv
    record.update({"machine": machine(), "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
                   "command": "python scripts/results_captioner.py " + " ".join(args_given)})
    text = json.dumps(record, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
