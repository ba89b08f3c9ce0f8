#!/usr/bin/env python
"""Training throughput with 1 and 2 processes (torchrun, DistributedDataParallel, gloo on CPU), same global batch.

    python scripts/bench_ddp.py --out docs/bench/ddp.json [--steps 60] [--kind pixel]

Each configuration trains a generator on the shapes set through the real CLI (`torchrun -m img2text2img train
generator ...`) and reports the engine's own samples/s. With N processes each rank gets global_batch / N samples
per step and 1 torch thread, so on a 2-core machine 1 process x 2 threads and 2 processes x 1 thread use the same
cores: the comparison shows the cost of gradient all-reduce against intra-op threading.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from img2text2img.errors import run_reporting_errors


def run(nproc: int, threads: int, steps: int, kind: str, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
               "-m", "img2text2img", "train", "generator", "--kind", kind, "--data", "shapes:2000", "--steps", str(steps),
               "--batch-size", str(batch), "--checkpoint-every", str(10 * steps), "--threads", str(threads),
               "--device", "cpu", "--out", str(Path(d) / "run")]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
        if r.returncode != 0:
            return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1]}
        m = re.search(r'"samples_per_s": ([0-9.]+)', r.stdout)
        t = re.search(r'"train_seconds": ([0-9.]+)', r.stdout)
        return {"processes": nproc, "threads_per_process": threads, "samples_per_s": float(m.group(1)),
                "train_seconds": float(t.group(1)), "steps": steps, "global_batch": batch}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--kind", default="pixel")
    args = ap.parse_args(argv)
    rows = [run(1, 1, args.steps, args.kind, args.batch), run(1, 2, args.steps, args.kind, args.batch),
            run(2, 1, args.steps, args.kind, args.batch)]
    payload = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "machine": f"{platform.platform()}, {os.cpu_count()} CPUs", "load_average_at_start": os.getloadavg(),
               "model": f"generator {args.kind}", "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
