#!/usr/bin/env python
"""Measure the round trip with the shipped models of a dataset and write one JSON (docs/RESULTS.md cites it).

    python scripts/results_roundtrip.py --data shapes --limit 200 --out docs/results/roundtrip-shapes.json
    python scripts/results_roundtrip.py --data flickr8k --limit 200 --out docs/results/roundtrip-flickr8k.json
    python scripts/results_roundtrip.py --data shapes --oracle --out docs/results/roundtrip-shapes-oracle.json
    python scripts/results_roundtrip.py --data flickr8k --generator flickr8k-diffusion --out roundtrip-diffusion.json

The JSON holds the scores, the command, the machine and the date; `--report DIR` also writes the HTML report with
every row (large: keep it out of the repository).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from img2text2img.errors import run_reporting_errors


def run(data: str, limit: int, per_image: int, seed: int, encoder: str, oracle: bool, report: Path | None,
        generator: str | None = None) -> dict:
    import torch

    from img2text2img.data import load_dataset
    from img2text2img.errors import I2TError
    from img2text2img.models import load_model
    from img2text2img.models.encoders import create_encoder
    from img2text2img.models.names import resolve_model
    from img2text2img.roundtrip import (
        default_model_dir,
        evaluate_roundtrip,
        model_functions,
        rule_based_drawings,
        write_report,
    )
    from img2text2img.shipping import portable_path

    torch.manual_seed(seed)
    ds = load_dataset(data)
    key = "shapes" if ds.name.startswith("shape") else ds.name
    cap_dir = default_model_dir("captioner", key)
    gen_dir = resolve_model(generator, "generator") if generator else default_model_dir("generator", key)
    cap, gen = load_model(cap_dir, kind="captioner"), load_model(gen_dir, kind="generator")
    enc = create_encoder(encoder, pretrained=True).eval()
    caption_fn, generate_fn, embed_fn = model_functions(cap, gen, enc)
    drawer = portable_path(gen_dir)
    if oracle:  # the rule-based perfect drawing of each caption: the ceiling for any learned shapes generator
        if key != "shapes":
            raise I2TError("--oracle needs --data shapes (only there are the drawing rules known)")
        drawer, generate_fn = "rule-based drawing of the caption (oracle)", rule_based_drawings

    t = time.time()
    result = evaluate_roundtrip(ds, caption_fn, generate_fn, embed_fn, limit=limit, captions_per_image=per_image,
                                seed=seed)
    seconds = time.time() - t
    if report is not None:
        write_report(result, report, title=f"Round trip on {key} ({drawer})")
    return {
        "data": key, "limit": limit, "per_image": per_image, "seed": seed, "encoder": encoder,
        "captioner": portable_path(cap_dir), "generator": drawer,
        "command": "python scripts/results_roundtrip.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "seconds": round(seconds, 1),
        "scores": result.scores,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--per-image", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder", default="mobilenet_v2")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    ap.add_argument("--report", type=Path, default=None, help="also write the HTML report into this folder")
    ap.add_argument("--generator", default=None,
                    help="a generator name or folder to draw with (default: the one shipped for --data)")
    ap.add_argument("--oracle", action="store_true",
                    help="shapes only: draw each caption with the rule-based renderer instead of the generator "
                         "(the ceiling a learned generator can reach)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from img2text2img.io import write_text_atomic

    payload = run(args.data, args.limit, args.per_image, args.seed, args.encoder, args.oracle, args.report,
                  args.generator)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(payload, indent=2) + "\n")
    print(json.dumps(payload["scores"], indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
