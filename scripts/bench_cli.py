#!/usr/bin/env python
"""What a user waits for at the command line: cold start and folder throughput of `i2t`, timed from the shell.

    python scripts/bench_cli.py --out docs/bench/cli.json [--photos 300] [--runs 3] [--data-dir DIR] [--backends auto,torch]

Cold start: the wall time of `i2t --help`, `i2t caption PHOTO`, `i2t tag PHOTO` and `i2t generate PROMPT -o x.png`
as fresh processes with the shipped (default) models, median of `--runs`. Folder throughput: `i2t caption DIR` and
`i2t tag DIR` over the first `--photos` Flickr8k test photos (a folder of links to them) at the default search;
start-up is taken off by subtracting the median cold start of the same command on one photo, so the rate is
photos / (folder wall - one-photo wall). The first output line's time is recorded too (the fast encoder is built
and the first batch done by then). Wall times on a shared machine stretch with its load (the JSON records the load
average before and after); the CPU seconds (user + system) of each command stretch much less, so they are recorded
too: on an idle machine with C cores a command takes at least cpu_s / C. Each of `--backends` is passed as
`--backend` to caption, tag and generate (auto: the shipped models' ONNX graphs, without torch; torch: the torch
models); the backends' runs alternate, so both paths are timed under the same load.
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
import tempfile
import time
from pathlib import Path

from img2text2img.errors import I2TError, run_reporting_errors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model

PROMPT = "a dog biting a stick"


def i2t_command() -> list[str]:
    """The `i2t` beside this Python (the venv's), else the module run by this interpreter."""
    exe = Path(sys.executable).with_name("i2t")
    return [str(exe)] if exe.exists() else [sys.executable, "-c", "from img2text2img.cli import run; run()"]


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(args: list[str], stream: bool = False) -> dict:
    """Run one command: its wall seconds, CPU seconds (user + system: what a loaded machine does not inflate much),
    output lines and when the first line came."""
    cpu0 = children_cpu_s()
    t0 = time.perf_counter()
    first = None
    lines = 0
    with subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        for _ in p.stdout:
            lines += 1
            if first is None:
                first = time.perf_counter() - t0
        err = p.stderr.read()
        rc = p.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise I2TError(f"{' '.join(args[-3:])} failed (exit {rc}): {err.strip().splitlines()[-1] if err.strip() else ''}")
    return {"wall_s": round(wall, 3), "cpu_s": round(children_cpu_s() - cpu0, 3),
            "first_line_s": None if first is None else round(first, 3), "lines": lines}


def median_of(runs: int, args: list[str]) -> dict:
    return summarised([timed(args) for _ in range(runs)])


def summarised(runs_: list[dict]) -> dict:
    walls = [r["wall_s"] for r in runs_]
    return {"median_s": round(statistics.median(walls), 3), "runs_s": walls,
            "median_cpu_s": round(statistics.median(r["cpu_s"] for r in runs_), 3)}


def test_photos(data_dir: str | None, n: int) -> list[Path]:
    from img2text2img import locations

    root = locations.flickr8k_dir(data_dir)
    names = [line.strip() for line in (root / "splits" / "test.txt").read_text().splitlines() if line.strip()]
    photos = [root / "images" / name for name in names[:n]]
    missing = [p for p in photos if not p.exists()]
    if missing:
        raise I2TError(f"{len(missing)} Flickr8k test photos missing, e.g. {missing[0]}")
    return photos


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="write the result as JSON here (e.g. docs/bench/cli.json)")
    ap.add_argument("--photos", type=int, default=300, help="Flickr8k test photos in the folder runs")
    ap.add_argument("--runs", type=int, default=3, help="cold-start runs per command (the median is reported)")
    ap.add_argument("--data-dir", default=None, help="the Flickr8k folder (default: $I2T_DATA, then ../shared)")
    ap.add_argument("--skip-folders", action="store_true", help="cold start only")
    ap.add_argument("--backends", default="auto,torch",
                    help="comma-separated --backend values of caption, tag and generate (auto, torch, onnx)")
    args = ap.parse_args(argv)

    from img2text2img.io import write_text_atomic

    i2t = i2t_command()
    photos = test_photos(args.data_dir, args.photos)
    result: dict = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                                "load_average_before": [round(x, 2) for x in os.getloadavg()]},
                    "date": time.strftime("%Y-%m-%d"), "command": " ".join(["python", "scripts/bench_cli.py",
                                                                           *(argv if argv is not None else sys.argv[1:])])}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or any(b not in ("auto", "torch", "onnx") for b in backends):
        raise I2TError(f"--backends {args.backends!r}: a comma-separated list of auto, torch, onnx")
    with tempfile.TemporaryDirectory(prefix="i2t-bench-") as tmp:
        png = Path(tmp) / "x.png"
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for p in photos:
            (folder / p.name).symlink_to(p)
        result["cold_start"] = {"help": median_of(args.runs, [*i2t, "--help"])}
        runs: dict = {b: {"caption_photo": [], "tag_photo": [], "generate": []} for b in backends}
        for _ in range(args.runs):  # backends alternate, run by run
            for b in backends:
                flag = ["--backend", b]
                runs[b]["caption_photo"].append(timed([*i2t, "caption", str(photos[0]), *flag]))
                runs[b]["tag_photo"].append(timed([*i2t, "tag", str(photos[0]), *flag]))
                runs[b]["generate"].append(timed([*i2t, "generate", PROMPT, "-o", str(png), "--force", *flag]))
        result["backends"] = {b: {"cold_start": {k: summarised(v) for k, v in runs[b].items()}} for b in backends}
        print(json.dumps(result["cold_start"]), json.dumps(result["backends"]), flush=True)
        if not args.skip_folders:
            for b in backends:
                folders = result["backends"][b]["folders"] = {}
                for verb in ("caption", "tag"):
                    run = timed([*i2t, verb, str(folder), "--backend", b], stream=True)
                    one = result["backends"][b]["cold_start"][f"{verb}_photo"]
                    run["photos"] = len(photos)
                    run["startup_s"] = one["median_s"]
                    run["photos_per_s"] = round(len(photos) / max(1e-6, run["wall_s"] - one["median_s"]), 2)
                    run["cpu_s_per_photo"] = round((run["cpu_s"] - one["median_cpu_s"]) / len(photos), 4)
                    folders[verb] = run
                    print(b, verb, json.dumps(run), flush=True)
    result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(lambda: main() and 0))
