#!/usr/bin/env python
"""The torch-free runtime against the torch path: cold start of a process that captions / tags / draws once, and
(with --parity N) agreement on N Flickr8k test photos.

    python scripts/bench_runtime.py --out docs/bench/runtime.json [--runs 3] [--parity 1000] [--photo FILE]

Graphs are exported once into a temporary folder (nothing is written into the model folders). Cold start: each
command runs `--runs` times as a fresh `python -c` process and the median wall time is reported; the torch rows do
the same work through `load_model`. Parity: the shipped captioner (its own beam and alpha) captions the first N test
photos both ways: identical captions, and the COCO scores of both (when pycocoevalcap and Java are present; else the
nltk BLEU figures) are reported. Records the machine and its load average: on a shared machine the numbers move.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

from img2text2img.errors import I2TError, run_reporting_errors

ROOT = Path(__file__).resolve().parents[1]
PRETRAINED = ROOT / "img2text2img" / "pretrained"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model  # scripts/ is not a package

PROMPT = "a dog biting a stick"
RUNTIME = {
    "caption": "from img2text2img.runtime import load_runtime\nfrom img2text2img.data.images import load_image\n"
               "m = load_runtime({model!r}, graphs={graphs!r})\nprint(m.caption_images([load_image({photo!r})])[0].text)",
    "tag": "from img2text2img.runtime import load_runtime\nfrom img2text2img.data.images import load_image\n"
           "m = load_runtime({model!r}, graphs={graphs!r})\nprint(m.tag_images([load_image({photo!r})])[0][:5])",
    "generate": "from img2text2img.runtime import load_runtime\nm = load_runtime({model!r}, graphs={graphs!r})\n"
                "m.generate_pil({prompt!r})[0].save({png!r})",
}
TORCH = {
    "caption": "from img2text2img.models import load_model\nfrom img2text2img.data.images import load_image\n"
               "m = load_model({model!r})\nprint(m.caption_images([load_image({photo!r})])[0].text)",
    "tag": "from img2text2img.models import load_model\nfrom img2text2img.data.images import load_image\n"
           "m = load_model({model!r})\nprint(m.tag_images([load_image({photo!r})])[0][:5])",
    "generate": "from img2text2img.models import load_model\nfrom img2text2img.models.generator import save_grid\n"
                "m = load_model({model!r})\nsave_grid(m.generate([{prompt!r}]), {png!r})",
}
CHECK = "import sys\nassert 'torch' not in sys.modules, 'torch was imported'"
MODELS = {"caption": "captioner", "tag": "tagger", "generate": "generator_flickr8k"}


def wall(code: str, runs: int) -> dict:
    times, last = [], ""
    for _ in range(runs):
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=False)
        times.append(time.perf_counter() - t0)
        if r.returncode != 0:
            raise I2TError(f"benchmark process failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
        last = r.stdout.strip()
    return {"median_s": round(statistics.median(times), 3), "runs_s": [round(t, 3) for t in times], "output": last}


def export_all(tmp: Path) -> dict[str, Path]:
    from img2text2img.runtime.export import export_runtime

    graphs = {}
    for task, name in MODELS.items():
        print(f"exporting {name} ...", file=sys.stderr, flush=True)
        graphs[task] = tmp / name
        export_runtime(PRETRAINED / name, graphs[task])
    return graphs


def cold_start(graphs: dict[str, Path], photo: Path, runs: int, tmp: Path) -> list[dict]:
    rows = []
    for task, runtime_code in RUNTIME.items():
        fill = {"model": str(PRETRAINED / MODELS[task]), "graphs": str(graphs[task]), "photo": str(photo),
                "prompt": PROMPT, "png": str(tmp / f"{task}.png")}
        print(f"cold start: {task} ...", file=sys.stderr, flush=True)
        rt = wall(runtime_code.format(**fill) + "\n" + CHECK, runs)
        th = wall(TORCH[task].format(**fill), runs)
        rows.append({"task": task, "model": MODELS[task], "runtime": rt, "torch": th,
                     "graph_mb": round(sum(f.stat().st_size for f in graphs[task].glob("*.onnx")) / 1e6, 1)})
    rows.append({"task": "import torch", "torch": wall("import torch", runs)})
    return rows


def parity(graphs: dict[str, Path], n: int) -> dict:
    import torch

    from img2text2img import locations
    from img2text2img.data import load_dataset, load_image
    from img2text2img.metrics.caption import coco_scores, corpus_bleu_scores
    from img2text2img.models import load_model
    from img2text2img.runtime import load_runtime
    from img2text2img.vocab import tokenize

    ds = load_dataset("flickr8k", data_dir=str(locations.flickr8k_dir()))
    names = ds.split("test")[:n]
    model_dir = PRETRAINED / "captioner"
    rt = load_runtime(model_dir, graphs=graphs["caption"])
    tm = load_model(model_dir)
    a, b, t_rt, t_torch = [], [], 0.0, 0.0
    for i in range(0, len(names), 50):
        images = [load_image(ds.image_path(x)) for x in names[i:i + 50]]
        t0 = time.perf_counter()
        a += [r.text for r in rt.caption_images(images)]
        t1 = time.perf_counter()
        with torch.inference_mode():
            b += [r.text for r in tm.caption_images(images)]
        t_rt, t_torch = t_rt + t1 - t0, t_torch + time.perf_counter() - t1
        print(f"parity: {len(a)}/{len(names)}", file=sys.stderr, flush=True)
    refs = [ds.captions[x] for x in names]
    try:
        scores = {"runtime": coco_scores(refs, a, meteor=False), "torch": coco_scores(refs, b, meteor=False)}
    except I2TError as e:  # no pycocoevalcap / Java here: the nltk BLEU figures still compare the two
        tok_refs = [[tokenize(r) for r in rs] for rs in refs]
        scores = {"note": str(e), "runtime": corpus_bleu_scores(tok_refs, [tokenize(x) for x in a]),
                  "torch": corpus_bleu_scores(tok_refs, [tokenize(x) for x in b])}
    same = sum(x == y for x, y in zip(a, b))
    return {"photos": len(names), "identical": same, "identical_fraction": round(same / max(len(names), 1), 4),
            "beam": rt.beam_size, "length_alpha": rt.length_alpha, "scores": scores,
            "caption_seconds": {"runtime": round(t_rt, 1), "torch": round(t_torch, 1)},
            "differing": [{"image": x, "runtime": p, "torch": q} for x, p, q in zip(names, a, b) if p != q][:20]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    ap.add_argument("--runs", type=int, default=3, help="cold starts per command (the median is reported)")
    ap.add_argument("--parity", type=int, default=0, help="also caption this many Flickr8k test photos both ways")
    ap.add_argument("--photo", type=Path, default=None, help="the photo to caption and tag (default: a Flickr8k one)")
    ap.add_argument("--no-cold-start", action="store_true", help="only the parity check")
    args = ap.parse_args(argv)
    import torch

    from img2text2img import locations

    torch.set_num_threads(min(2, torch.get_num_threads()))
    photo = args.photo or locations.flickr8k_dir() / "images" / "1026685415_0431cbf574.jpg"
    payload: dict = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                     "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}",
                     "load_average_at_start": os.getloadavg()}
    with tempfile.TemporaryDirectory() as d:
        graphs = export_all(Path(d))
        if not args.no_cold_start:
            payload["cold_start"] = cold_start(graphs, photo, args.runs, Path(d))
        if args.parity:
            payload["parity"] = parity(graphs, args.parity)
    payload["load_average_at_end"] = os.getloadavg()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    print(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
