#!/usr/bin/env python
"""`i2t serve` under load: caption requests at a fixed concurrency on loopback, and the server's memory around them.

    python scripts/bench_serve.py --out docs/bench/serve.json [--data flickr8k|shapes] [--requests 200]
                                  [--concurrency 8] [--photo FILE] [--threads N] [--max-batch 1 8 ...]

Starts `i2t serve` as its own process on a free loopback port, sends `--warmup` requests (not counted), reads the
server's resident memory (VmRSS of /proc/PID/status), then sends `--requests` POST /api/caption (the page's request:
attention maps on) from `--concurrency` client threads, each on its own keep-alive connection, and reads the memory
again. Reported: client latency p50 / p95 / max, the server's own model time (`ms`, of the batch a request ran in),
wait (`queue_ms`) and batch size, requests per second, errors (any non-200 or failed request), RSS before / after / peak (VmHWM) and the growth.
The photo is a Flickr8k test photo with the Flickr8k models, a drawn shapes picture with the shapes models.
Latency on a shared machine stretches with its load: the JSON records the load average before and after.
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from img2text2img.errors import I2TError, run_reporting_errors

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def memory_mb(pid: int) -> dict:
    """VmRSS (now) and VmHWM (peak) of a process, in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            fields[key] = round(int(value.split()[0]) / 1024, 1)
    return {"rss_mb": fields.get("VmRSS"), "peak_rss_mb": fields.get("VmHWM")}


def percentile(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def bench_photo(data: str, photo: str | None) -> tuple[bytes, str]:
    if photo:
        return Path(photo).read_bytes(), Path(photo).name
    if data == "flickr8k":
        from img2text2img import locations

        root = locations.flickr8k_dir(None)
        name = next(n.strip() for n in (root / "splits" / "test.txt").read_text().splitlines() if n.strip())
        return (root / "images" / name).read_bytes(), name
    from img2text2img.data.shapes import draw_caption

    buf = io.BytesIO()
    draw_caption("a large red circle on the left", seed=1).save(buf, format="PNG")
    return buf.getvalue(), "shapes.png"


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 300.0) -> dict:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise I2TError(f"i2t serve exited with {proc.returncode}: {proc.stderr.read().strip()[-500:]}")
        try:
            return httpx.get(url + "/api/health", timeout=2).json()
        except httpx.HTTPError:
            time.sleep(0.5)
    raise I2TError(f"i2t serve did not answer within {timeout:.0f} s")


def run_load(url: str, photo: bytes, name: str, requests: int, concurrency: int) -> list[dict]:
    """`requests` captions from `concurrency` threads, each on its own connection; one record per request."""
    import httpx

    records: list[dict] = []
    lock = threading.Lock()
    todo = iter(range(requests))

    def worker() -> None:
        with httpx.Client(base_url=url, timeout=120) as client:
            while True:
                with lock:
                    i = next(todo, None)
                if i is None:
                    return
                t0 = time.perf_counter()
                try:
                    r = client.post("/api/caption", files={"image": (name, photo, "application/octet-stream")})
                    body = r.json() if r.status_code == 200 else {}
                    rec = {"status": r.status_code, "ms": body.get("ms"), "queue_ms": body.get("queue_ms"),
                           "batch": body.get("batch"), "caption": body.get("caption")}
                except Exception as e:  # noqa: BLE001 - a failed request is an error to count, not the bench's end
                    rec = {"status": None, "error": f"{type(e).__name__}: {e}"[:200]}
                rec["latency_ms"] = (time.perf_counter() - t0) * 1000.0
                with lock:
                    records.append(rec)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return records


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="write the result as JSON here (e.g. docs/bench/serve.json)")
    ap.add_argument("--data", default=None, help="flickr8k or shapes (default: what `i2t serve` picks)")
    ap.add_argument("--requests", type=int, default=200)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--warmup", type=int, default=10, help="requests sent before the memory is read (not counted)")
    ap.add_argument("--photo", default=None, help="the photo to caption (default: see above)")
    ap.add_argument("--threads", type=int, default=None, help="the server's torch threads (default: torch's)")
    ap.add_argument("--max-batch", type=int, nargs="*", default=None,
                    help="the server's --max-batch; several values start one server each, in turn (default: the "
                         "server's own, 8); 1 runs the requests one at a time, for comparison")
    args = ap.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1:
        raise I2TError("--requests and --concurrency must be at least 1")

    from img2text2img.io import write_text_atomic
    from img2text2img.serve.models import default_data

    data = args.data or default_data()
    photo, name = bench_photo(data, args.photo)
    result: dict = {"machine": {"cpu": cpu_model(), "cores": os.cpu_count(), "python": platform.python_version(),
                                "load_average_before": [round(x, 2) for x in os.getloadavg()]},
                    "date": time.strftime("%Y-%m-%d"),
                    "command": " ".join(["python", "scripts/bench_serve.py", *(argv if argv is not None else sys.argv[1:])]),
                    "data": data, "photo": name, "photo_bytes": len(photo), "requests": args.requests,
                    "concurrency": args.concurrency, "runs": []}
    for max_batch in args.max_batch or [None]:
        run = one_server(args, data, photo, name, max_batch)
        result["runs"].append(run)
        print(json.dumps({k: run[k] for k in ("max_batch", "errors", "latency_ms", "requests_per_s", "memory")}),
              flush=True)
    result["machine"]["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(result, indent=2) + "\n")
    return result


def one_server(args, data: str, photo: bytes, name: str, max_batch: int | None) -> dict:
    """Start `i2t serve`, warm it, measure the load and its memory, stop it."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "img2text2img", "serve", "--port", str(port), "--data", data, "--device", "cpu"]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    if max_batch:
        cmd += ["--max-batch", str(max_batch)]
    run: dict = {"load_average_before": [round(x, 2) for x in os.getloadavg()]}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.perf_counter()
        health = wait_ready(url, proc)
        run["startup_s"] = round(time.perf_counter() - t0, 2)
        run["max_batch"] = health.get("max_batch")
        run["models"] = {k: (v or {}).get("name") for k, v in health["models"].items()}
        run_load(url, photo, name, args.warmup, min(args.warmup, args.concurrency))
        before = memory_mb(proc.pid)
        t1 = time.perf_counter()
        records = run_load(url, photo, name, args.requests, args.concurrency)
        wall = time.perf_counter() - t1
        after = memory_mb(proc.pid)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
    ok = [r for r in records if r["status"] == 200]
    lat = [r["latency_ms"] for r in records]
    run.update({
        "errors": len(records) - len(ok),
        "error_examples": [r.get("error") or r["status"] for r in records if r["status"] != 200][:5],
        "distinct_captions": sorted({r["caption"] for r in ok}),
        "latency_ms": {"p50": round(percentile(lat, 0.5), 1), "p95": round(percentile(lat, 0.95), 1),
                       "max": round(max(lat), 1), "mean": round(statistics.mean(lat), 1)},
        "server_model_ms_p50": round(statistics.median(r["ms"] for r in ok), 1) if ok else None,
        "server_queue_ms_p50": round(statistics.median(r["queue_ms"] for r in ok), 1) if ok else None,
        "server_batch_mean": round(statistics.mean(r["batch"] for r in ok), 2) if ok else None,
        "requests_per_s": round(len(records) / wall, 2),
        "memory": {"rss_before_mb": before["rss_mb"], "rss_after_mb": after["rss_mb"],
                   "peak_rss_before_mb": before["peak_rss_mb"], "peak_rss_after_mb": after["peak_rss_mb"],
                   "growth_pct": round(100.0 * (after["rss_mb"] / before["rss_mb"] - 1.0), 1)},
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    })
    return run


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(lambda: main() and 0))
