#!/usr/bin/env python
"""Speed and memory of every model in the toolkit, on this machine, as one JSON file (docs/BENCHMARKS.md cites it).

    python scripts/bench.py --out docs/bench/bench.json [--only caption,tag] [--quick]

Each measurement runs in a fresh subprocess so that its peak RSS (ru_maxrss of that process) belongs to it alone.
Models are untrained (random weights): speed and memory do not depend on the weights, except that an untrained
captioner tends to run to the maximum caption length, so caption latencies here are worst cases.
Encoders are built with random weights too, so the benchmark runs where no weight files exist.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from img2text2img.errors import run_reporting_errors
from img2text2img.io import write_text_atomic

ENCODERS = ("mobilenet_v2", "efficientnet_lite0", "mobilenet_v3_small")
DECODERS = ("lstm", "blstm", "attention")


def _timeit(fn, repeat: int, warmup: int = 1) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _vocab(n: int = 3000):
    from img2text2img.vocab import SPECIALS, Vocabulary

    return Vocabulary(list(SPECIALS) + [f"w{i}" for i in range(n - len(SPECIALS))])


def _images(n: int, size: int = 224):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)) for _ in range(n)]


def bench_caption(encoder: str, decoder: str, repeat: int) -> dict:
    import torch

    from img2text2img.models.captioner import create_captioner
    from img2text2img.models.encoders import create_encoder

    enc = create_encoder(encoder, pretrained=False).eval()
    cap = create_captioner(f"{encoder}+{decoder}", _vocab(), enc.num_features).eval()
    cap.attach_encoder(enc)
    one, many = _images(1), _images(32)
    with torch.inference_mode():
        lat = _timeit(lambda: cap.caption_images(one, beam_size=3), repeat)
        thr = _timeit(lambda: cap.caption_images(many, beam_size=3, batch_size=32), max(1, repeat // 5))
    return {"p50_ms": 1000 * statistics.median(lat), "p95_ms": 1000 * sorted(lat)[int(0.95 * (len(lat) - 1))],
            "batch32_images_per_s": 32 / statistics.median(thr),
            "decoder_params": sum(p.numel() for p in cap.decoder.parameters())}


def bench_tagger(head: str, repeat: int) -> dict:
    import torch

    from img2text2img.models.tagger import create_tagger

    tagger = create_tagger(f"mobilenet_v2+{head}", _vocab(500), encoder_pretrained=False).eval()
    many = _images(32)
    with torch.inference_mode():
        thr = _timeit(lambda: tagger.tag_images(many, top=10), max(1, repeat // 5))
    return {"batch32_images_per_s": 32 / statistics.median(thr)}


def bench_generate(kind: str, repeat: int) -> dict:
    import torch

    from img2text2img.models.generator import create_generator

    gen = create_generator(kind, _vocab()).eval()
    prompts = ["w5 w6 w7 w8 w9 w10"] * 64
    with torch.inference_mode():
        t = _timeit(lambda: gen.generate(prompts, n=1, seed=0, batch_size=64), repeat)
    return {"batch64_images_per_s": 64 / statistics.median(t), "params": sum(p.numel() for p in gen.parameters())}


def bench_train_captioner(decoder: str, repeat: int, grouped: bool = False, bf16: bool = False) -> dict:
    """One optimizer step on cached-feature-shaped input (MobileNetV2: 1280-d, 7x7 grid), batch 64, 16 tokens.
    `grouped`: 13 images x 5 captions (65), each image's features given once (`--group-images`). `bf16`: the
    forward under bf16 autocast, as `--precision bf16` trains (fast only on CPUs with bf16 units)."""
    import contextlib

    import torch

    from img2text2img.models.captioner import create_captioner
    from img2text2img.train.captioner import CaptionerRecipe, caption_loss

    cap = create_captioner(f"mobilenet_v2+{decoder}", _vocab(), 1280).train()
    opt = torch.optim.AdamW(cap.decoder.parameters(), lr=1e-4)
    B, images = (65, 13) if grouped else (64, 64)
    pooled, grid = torch.randn(images, 1280), torch.randn(images, 49, 1280)
    tokens = torch.randint(4, 3000, (B, 16))
    index = torch.arange(images).repeat_interleave(B // images) if grouped else None

    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext():
            logits, aux = cap(tokens, pooled, grid, index=index)
        loss = caption_loss(logits, aux, tokens, CaptionerRecipe())
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = _timeit(step, repeat)
    return {"step_ms": 1000 * statistics.median(t), "samples_per_s": B / statistics.median(t)}


def bench_train_captioner_from_images(decoder: str, repeat: int) -> dict:
    """The same step, but with the frozen MobileNetV2 run on 64 raw 224x224 images first: what training would cost
    without the feature cache (the cache's speed-up is the ratio of the two step times)."""
    import torch

    from img2text2img.models.captioner import create_captioner
    from img2text2img.models.encoders import create_encoder
    from img2text2img.train.captioner import CaptionerRecipe, caption_loss

    enc = create_encoder("mobilenet_v2", pretrained=False).eval()
    cap = create_captioner(f"mobilenet_v2+{decoder}", _vocab(), enc.num_features).train()
    opt = torch.optim.AdamW(cap.decoder.parameters(), lr=1e-4)
    B = 64
    images = torch.randn(B, 3, 224, 224)
    tokens = torch.randint(4, 3000, (B, 16))

    def step():
        with torch.no_grad():
            pooled, grid = enc(images)
        loss = caption_loss(*cap(tokens, pooled, grid), tokens, CaptionerRecipe())
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = _timeit(step, max(2, repeat // 4))
    return {"step_ms": 1000 * statistics.median(t), "samples_per_s": B / statistics.median(t)}


def bench_train_generator(kind: str, repeat: int) -> dict:
    import torch

    from img2text2img.models.generator import GeneratorLoss, create_generator

    gen = create_generator(kind, _vocab()).train()
    objective = GeneratorLoss()
    B = 64
    ids = torch.randint(4, 3000, (B, 12))
    images = torch.rand(B, 3, 64, 64)
    g_opt = torch.optim.Adam(gen.generator_parameters(), lr=1e-4)
    d_opt = torch.optim.Adam(gen.discriminator.parameters(), lr=1e-4) if kind == "gan" else None

    def step():
        if kind == "gan":
            z = torch.randn(B, gen.config.z_dim)
            d_loss, g_fn = objective.gan(gen, ids, images, z)
            d_opt.zero_grad()
            d_loss.backward()
            d_opt.step()
            g_loss, _ = g_fn()
            g_opt.zero_grad()
            g_loss.backward()
            g_opt.step()
        else:
            _, loss, _ = objective(gen, ids, images, step=1)
            g_opt.zero_grad()
            loss.backward()
            g_opt.step()

    t = _timeit(step, repeat)
    return {"step_ms": 1000 * statistics.median(t), "samples_per_s": B / statistics.median(t)}


def bench_train_tagger(head: str, repeat: int) -> dict:
    import torch

    from img2text2img.models.tagger import create_tagger

    tagger = create_tagger(f"mobilenet_v2+{head}", _vocab(500), encoder_pretrained=False).train()
    params = [p for p in tagger.head.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    B = 64
    seq = torch.randint(4, 500, (B, 7))
    seq[:, 0] = 1  # <start>
    multi_hot = torch.zeros(B, 500)
    multi_hot.scatter_(1, seq[:, 1:], 1.0)
    batch = {"features": torch.randn(B, 1280), "inp": seq[:, :-1], "tgt": seq[:, 1:], "multi_hot": multi_hot}

    def step():
        loss, _ = tagger(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()

    t = _timeit(step, repeat)
    return {"step_ms": 1000 * statistics.median(t), "samples_per_s": B / statistics.median(t)}


ITEMS = {}
for _e in ENCODERS:
    for _d in DECODERS:
        ITEMS[f"caption/{_e}+{_d}"] = (bench_caption, (_e, _d))
for _h in ("rnn", "bce"):
    ITEMS[f"tag/mobilenet_v2+{_h}"] = (bench_tagger, (_h,))
    ITEMS[f"train/tagger-{_h}"] = (bench_train_tagger, (_h,))
for _k in ("pixel", "vae", "gan"):
    ITEMS[f"generate/{_k}"] = (bench_generate, (_k,))
    ITEMS[f"train/generator-{_k}"] = (bench_train_generator, (_k,))
for _d in DECODERS:
    ITEMS[f"train/captioner-{_d}"] = (bench_train_captioner, (_d,))
ITEMS["train/captioner-attention-grouped"] = (bench_train_captioner, ("attention", True))
ITEMS["train/captioner-attention-grouped-bf16"] = (bench_train_captioner, ("attention", True, True))
ITEMS["train/captioner-lstm-from-raw-images"] = (bench_train_captioner_from_images, ("lstm",))


def run_item(name: str, repeat: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    fn, args = ITEMS[name]
    res = fn(*args, repeat)
    res["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help="the JSON file to write (required unless --item)")
    ap.add_argument("--only", default=None, help="comma-separated prefixes of items to run (e.g. caption,generate)")
    ap.add_argument("--repeat", type=int, default=20)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--quick", action="store_true", help="5 repeats (a smoke run)")
    ap.add_argument("--item", help=argparse.SUPPRESS)  # internal: run one item in this process
    args = ap.parse_args(argv)
    repeat = 5 if args.quick else args.repeat
    if args.item:
        print(json.dumps(run_item(args.item, repeat, args.threads)))
        return 0
    if args.out is None:
        ap.error("--out is required")
    names = [n for n in ITEMS if not args.only or any(n.startswith(p) for p in args.only.split(","))]
    results = {}
    for n in names:
        t = time.time()
        r = subprocess.run([sys.executable, __file__, "--item", n, "--repeat", str(repeat), "--threads", str(args.threads)],
                           capture_output=True, text=True, check=False)
        if r.returncode != 0:
            results[n] = {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
        else:
            results[n] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"{n}: {results[n]} ({time.time() - t:.0f} s)", file=sys.stderr)
    import torch

    payload = {
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "threads": args.threads, "torch": torch.__version__,
                    "load_average_at_start": os.getloadavg()},
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "repeat": repeat,
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(payload, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
