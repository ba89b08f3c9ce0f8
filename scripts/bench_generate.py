#!/usr/bin/env python
"""Generation speed: images per second at 64x64 for a batch size, on this machine.

    python scripts/bench_generate.py [--model DIR] [--batch 64] [--threads 2] [--out docs/bench/generate.json]

Times `Generator.generate` end to end (prompt tokens -> text encoder -> decoder -> float images in [0, 1]) over
several repeats after a warm-up, and reports the median, so one slow repeat on a shared CPU does not decide it.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

from img2text2img.errors import run_reporting_errors


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="shapes-scene", help="generator name or checkpoint / run folder (default: shapes-scene)")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="write the result as JSON here (e.g. docs/bench/generate.json)")
    args = ap.parse_args(argv)

    import torch

    from img2text2img.io import write_text_atomic
    from img2text2img.models.generator import load_generator
    from img2text2img.train.generator import SAMPLE_PROMPTS

    torch.set_num_threads(args.threads)
    gen = load_generator(args.model, device=args.device)
    prompts = (SAMPLE_PROMPTS["shapes"] * (args.batch // 8 + 1))[: args.batch]
    ids = gen.prompt_ids(prompts)
    for _ in range(2):
        gen.generate(ids, n=1, seed=0, batch_size=args.batch)
    times, cpu = [], []
    for r in range(args.repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        gen.generate(ids, n=1, seed=r, batch_size=args.batch)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    med = statistics.median(times)
    result = {
        "images_per_s_median": round(args.batch / med, 1),
        "images_per_s_best": round(args.batch / min(times), 1),
        # CPU seconds this process actually got: on a shared, overloaded machine wall-clock speed says more about
        # the neighbours than about the model, while images per CPU-second (with --threads 1: per core) does not.
        "images_per_cpu_s_median": round(args.batch / statistics.median(cpu), 1),
        "batch": args.batch, "repeats": args.repeats, "threads": args.threads, "device": args.device,
        "image_size": gen.config.image_size, "kind": gen.config.kind,
        "model": args.model or "built-in (img2text2img/pretrained/generator)",
        "parameters": sum(p.numel() for p in gen.parameters()),
        "cpu_count": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
        "torch": torch.__version__, "python": platform.python_version(),
    }
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(args.out, text + "\n")
    print(text)
    return result


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
