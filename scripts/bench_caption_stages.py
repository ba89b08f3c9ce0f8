#!/usr/bin/env python
"""Where batched captioning spends its time, per photo: preprocessing, encoder, decoder; and what encoding the next
batch during decoding (`Captioner.caption_images`) gains over doing the two one after the other.

    python scripts/bench_caption_stages.py --beam 3 --threads 2 --out docs/bench/caption-stages.json

Flickr8k test photos, read before timing; the shipped captioner unless --model. Run it on an idle machine.
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

from img2text2img.errors import run_reporting_errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="captioner folder (default: the shipped one)")
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--photos", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--repeat", type=int, default=3, help="alternated sequential / encode-ahead passes")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)

    import torch

    from img2text2img.data import load_dataset, load_image
    from img2text2img.models.captioner import load_captioner

    torch.set_num_threads(args.threads)
    cap = load_captioner(args.model)
    tf = cap.ensure_encoder().transform()
    ds = load_dataset("flickr8k")
    photos = [load_image(ds.image_path(i)) for i in ds.split("test")[:args.photos]]
    batches = [photos[i:i + args.batch] for i in range(0, len(photos), args.batch)]
    with torch.inference_mode():
        cap.caption_images(photos[:2], beam_size=args.beam)  # builds the fast encoder copy
        stages = {"preprocess": 0.0, "encoder": 0.0, "decoder": 0.0}
        sequential = []
        for batch in batches:
            t0 = time.perf_counter()
            x = torch.stack([tf(im) for im in batch])
            t1 = time.perf_counter()
            pooled, grid = cap._fast_encoder[2](x)
            t2 = time.perf_counter()
            sequential += cap.decode_features(pooled, grid, beam_size=args.beam)
            t3 = time.perf_counter()
            stages["preprocess"] += t1 - t0
            stages["encoder"] += t2 - t1
            stages["decoder"] += t3 - t2
        rates = {"sequential": [], "encode_ahead": []}
        same = True
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            seq = [r for b in batches for r in cap.decode_features(*cap.encode_images(b), beam_size=args.beam)]
            rates["sequential"].append(round(len(photos) / (time.perf_counter() - t0), 1))
            t0 = time.perf_counter()
            ahead = cap.caption_images(photos, beam_size=args.beam, batch_size=args.batch)
            rates["encode_ahead"].append(round(len(photos) / (time.perf_counter() - t0), 1))
            same &= [r.text for r in seq] == [r.text for r in ahead]
    rec = {"model": args.model or "shipped", "beam": args.beam, "photos": len(photos), "batch": args.batch,
           "threads": args.threads, "ms_per_photo": {k: round(1000 * v / len(photos), 1) for k, v in stages.items()},
           "images_per_s": rates, "same_captions": same,
           "machine": f"{platform.platform()}, torch {torch.__version__}",
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
           "command": "python scripts/bench_caption_stages.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])}
    text = json.dumps(rec, indent=1)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
