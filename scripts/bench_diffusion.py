#!/usr/bin/env python
"""The latent diffusion generator's speed on each path: model time in-process and `i2t generate` cold start.

    python scripts/bench_diffusion.py MODEL_DIR --out docs/bench/diffusion.json [--n 8] [--runs 3] [--backends onnx,torch]

MODEL_DIR: a shipped diffusion folder with its onnx/ graphs (`i2t ship RUN --as DIR`, then
`scripts/export_runtime.py DIR`). Model time: `generate(PROMPT, n)` at the model's steps and guidance after loading
and one warm-up, median of `--runs`, per backend (onnx: the torch-free runtime; torch: DiffusionGenerator), with the
largest pixel difference between the two paths' pictures for the same seed. Cold start: wall and CPU seconds of
`i2t generate PROMPT -n 1` and `-n N --model MODEL_DIR` as fresh processes, median of `--runs`, the backends
alternating run by run so both see the same load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

from img2text2img.errors import I2TError, run_reporting_errors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_cli import PROMPT, i2t_command, summarised, timed
from machine import cpu_model


def model_times(model_dir: Path, backend: str, n: int, runs: int, threads: int | None) -> tuple[dict, object]:
    """In-process: load seconds, then the median `generate` seconds (after one warm-up) -> (times, the pictures)."""
    import numpy as np

    t0 = time.perf_counter()
    if backend == "onnx":
        from img2text2img.runtime import load_runtime

        gen = load_runtime(model_dir, kind="generator", threads=threads)
        settings = {"steps": gen.steps, "guidance": gen.guidance}
        draw = lambda seed: gen.generate(PROMPT, n=n, seed=seed)
    else:
        import torch

        from img2text2img.models import load_model

        if threads:
            torch.set_num_threads(threads)
        gen = load_model(model_dir).eval()
        settings = {"steps": gen.settings.steps, "guidance": gen.settings.guidance}
        draw = lambda seed: gen.generate([PROMPT], n=n, seed=seed).numpy()
    load_s = time.perf_counter() - t0
    pictures = draw(0)
    times, cpu = [], []
    for r in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        draw(r + 1)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    return {"load_s": round(load_s, 3), "median_s": round(statistics.median(times), 3),
            "runs_s": [round(t, 3) for t in times], "median_cpu_s": round(statistics.median(cpu), 3),
            **settings}, np.asarray(pictures)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path, help="a diffusion model folder with onnx/ graphs")
    ap.add_argument("--out", required=True, help="write the result as JSON here (e.g. docs/bench/diffusion.json)")
    ap.add_argument("--n", type=int, default=8, help="pictures per run (-n of i2t generate)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs per measurement (the median is reported)")
    ap.add_argument("--threads", type=int, default=None, help="in-process threads (default: each library's own)")
    ap.add_argument("--backends", default="onnx,torch", help="comma-separated: onnx, torch")
    args = ap.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or any(b not in ("onnx", "torch") for b in backends):
        raise I2TError(f"--backends {args.backends!r}: a comma-separated list of onnx, torch")

    from img2text2img.io import write_text_atomic
    from img2text2img.runtime import has_runtime

    if not has_runtime(args.model):
        raise I2TError(f"{args.model} has no onnx/ graphs; run: python scripts/export_runtime.py {args.model}")
    result: dict = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                                "load_average_before": [round(x, 2) for x in os.getloadavg()]},
                    "date": time.strftime("%Y-%m-%d"), "prompt": PROMPT, "n": args.n,
                    "command": " ".join(["python", "scripts/bench_diffusion.py",
                                         *(argv if argv is not None else sys.argv[1:])]),
                    "model_time": {}, "cold_start": {}}
    pictures = {}
    for b in backends:
        result["model_time"][b], pictures[b] = model_times(args.model, b, args.n, args.runs, args.threads)
        print(b, json.dumps(result["model_time"][b]), flush=True)
    if len(pictures) == 2:
        import numpy as np

        diff = float(np.abs(pictures["onnx"] - pictures["torch"]).max())
        result["max_pixel_difference"] = {"float": diff, "in_255ths": round(diff * 255, 4)}
    i2t = i2t_command()
    with tempfile.TemporaryDirectory(prefix="i2t-bench-") as tmp:
        png = str(Path(tmp) / "x.png")
        runs: dict = {b: {"n1": [], f"n{args.n}": []} for b in backends}
        for _ in range(args.runs):
            for b in backends:
                for key, n in (("n1", 1), (f"n{args.n}", args.n)):
                    runs[b][key].append(timed([*i2t, "generate", PROMPT, "-n", str(n), "--model", str(args.model),
                                               "-o", png, "--force", "--backend", b]))
        result["cold_start"] = {b: {k: summarised(v) for k, v in runs[b].items()} for b in backends}
    print(json.dumps(result["cold_start"]), flush=True)
    result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(lambda: main() and 0))
