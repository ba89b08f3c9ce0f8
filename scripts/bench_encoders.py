#!/usr/bin/env python
"""Benchmark the image encoders on this machine: images/s and peak RSS at batch 1 and batch 32.

Each (encoder, batch size) runs in its own subprocess so that peak RSS (ru_maxrss) belongs to that run alone.
Throughput is the encoder's forward pass (pooled + grid) on random input of the encoder's own size, in
`torch.inference_mode()`, after one warm-up pass: `images_per_s` for the plain module, `images_per_s_torchscript` and
`images_per_s_onnx` for the two frozen copies `Encoder.for_bulk_inference` can build (`max_abs_diff_*`: their largest
distance from the module's features), and `images_per_s_frozen` for the one `i2t encode` and `i2t caption` use by
default (ONNX Runtime when installed). Image decoding is not included; the
end-to-end `i2t encode` time is in docs/BENCHMARKS.md.

    python scripts/bench_encoders.py --out docs/bench/encoders.json --iters 3 --threads 2
    python scripts/bench_encoders.py --encoders mobilenet_v2 --end-to-end flickr8k --out docs/bench/encode-flickr8k.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from img2text2img.errors import run_reporting_errors


def run_one(name: str, batch: int, iters: int, threads: int) -> dict:
    import torch

    from img2text2img.errors import I2TError
    from img2text2img.models.encoders import create_encoder

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    try:
        enc = create_encoder(name)
        weights = "pretrained" if enc.weights_sha256 else "random"
    except I2TError:  # googlenet / inception_v3 have no weights here; speed does not depend on the values
        enc, weights = create_encoder(name, pretrained=False), "random"
    enc.eval()
    S = enc.preprocess.image_size
    x = torch.randn(batch, 3, S, S)
    with torch.inference_mode():
        enc(x)  # warm-up
        t0 = time.perf_counter()
        for _ in range(iters):
            enc(x)
        dt = time.perf_counter() - t0
        ref = enc(x)[1]
        fast_rates, diffs = {}, {}
        for backend in ("torch", "onnx"):
            fast = enc.for_bulk_inference(x, backend=backend)
            diffs[backend] = round(float((fast(x)[1] - ref).abs().max()), 7)  # also the warm-up
            t0 = time.perf_counter()
            for _ in range(iters):
                fast(x)
            fast_rates[backend] = round(batch * iters / (time.perf_counter() - t0), 2)
    from img2text2img.models.encoders.onnx import uses_onnx

    default = "onnx" if uses_onnx() else "torch"
    return {"encoder": name, "batch": batch, "iters": iters, "weights": weights, "image_size": S,
            "num_features": enc.num_features, "grid": list(enc.grid_hw),
            "images_per_s": round(batch * iters / dt, 2), "ms_per_batch": round(1000 * dt / iters, 1),
            "images_per_s_frozen": fast_rates[default], "default_backend": default,
            "images_per_s_torchscript": fast_rates["torch"], "images_per_s_onnx": fast_rates["onnx"],
            "max_abs_diff_torchscript": diffs["torch"], "max_abs_diff_onnx": diffs["onnx"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def end_to_end(name: str, data: str, threads: int, workers: int, batch: int) -> dict:
    """`i2t encode` as a user runs it (JPEG decoding, preprocessing, forward, float16 memmap writes), into a fresh
    temporary cache so nothing is reused; the issue's target is all 8,091 Flickr8k images in under 5 minutes."""
    import tempfile

    import torch

    from img2text2img.features import encode_dataset

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="i2t-bench-encode-") as tmp:
        t0 = time.perf_counter()
        cache = encode_dataset(name, data, cache_dir=tmp, batch_size=batch, num_workers=workers, progress=False)
        secs = time.perf_counter() - t0
        n = len(cache)
    return {"encoder": name, "data": data, "images": n, "seconds": round(secs, 1), "minutes": round(secs / 60, 2),
            "images_per_s": round(n / secs, 1), "threads": threads, "workers": workers, "batch": batch,
            "target_minutes": 5.0, "meets_target": bool(secs < 300) if data == "flickr8k" else None,
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoders", nargs="*", default=None, help="default: every registered encoder")
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 32])
    ap.add_argument("--iters", type=int, default=3, help="timed passes per (encoder, batch) after one warm-up")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="the JSON file to write (required)")
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one case, print JSON
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--end-to-end", default=None, metavar="DATA",
                    help="instead: time a full `i2t encode` of DATA (e.g. flickr8k) with the first --encoders entry")
    ap.add_argument("--workers", type=int, default=2, help="DataLoader workers for --end-to-end")
    args = ap.parse_args(argv)
    if args.out is None and not args.one:
        ap.error("--out is required")

    if args.end_to_end:
        import torch

        rec = end_to_end((args.encoders or ["mobilenet_v2"])[0], args.end_to_end, args.threads, args.workers, 32)
        rec.update(machine={"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                            "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
                   date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                   command="python scripts/bench_encoders.py " + " ".join(argv if argv is not None else sys.argv[1:]))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rec, indent=1) + "\n")
        print(json.dumps(rec))
        return 0
    if args.one:
        print(json.dumps(run_one(args.one, args.batch, args.iters, args.threads)))
        return 0

    from img2text2img.models.encoders import list_encoders

    names = args.encoders or list_encoders()
    results = []
    for name in names:
        for b in args.batches:
            # batch-1 runs are quick: time more of them so the number is not one noisy pass
            iters = args.iters * (5 if b == 1 else 1)
            cmd = [sys.executable, __file__, "--one", name, "--batch", str(b), "--iters", str(iters),
                   "--threads", str(args.threads)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if out.returncode != 0:
                results.append({"encoder": name, "batch": b, "error": out.stderr.strip().splitlines()[-1:]})
            else:
                results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(json.dumps(results[-1]), flush=True)
    import torch

    report = {
        "what": "encoder forward (pooled + grid) on random input, inference_mode, after 1 warm-up pass; plain module and its frozen TorchScript and ONNX Runtime copies",
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads": args.threads, "loadavg_at_end": [round(x, 2) for x in os.getloadavg()]},
        "command": "python scripts/bench_encoders.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
