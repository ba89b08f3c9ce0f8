#!/usr/bin/env python
"""Measure the round trip with the shipped models and write the round-trip section of docs/RESULTS.md.

    python scripts/results_roundtrip.py --data shapes --limit 200
    python scripts/results_roundtrip.py --data flickr8k --limit 200
    python scripts/results_roundtrip.py --report-only      # rebuild the section from docs/results/roundtrip-*.json

Each run writes docs/results/roundtrip-<data>.json (scores + the command + machine + date) and the HTML report
beside it; the markdown table is generated from the JSON files only.
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

from results_doc import doc_for, replace_section  # scripts/ is on sys.path when a script runs

from img2text2img.errors import run_reporting_errors

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- roundtrip:begin -->", "<!-- roundtrip:end -->"


def run(data: str, limit: int, per_image: int, seed: int, out_dir: Path, encoder: str, oracle: bool = False) -> dict:
    import torch

    from img2text2img.data import load_dataset
    from img2text2img.models import load_model
    from img2text2img.models.encoders import create_encoder
    from img2text2img.roundtrip import default_model_dir, evaluate_roundtrip, model_functions, write_report

    torch.manual_seed(seed)
    ds = load_dataset(data)
    key = "shapes" if ds.name.startswith("shape") else ds.name
    cap_dir, gen_dir = default_model_dir("captioner", key), default_model_dir("generator", key)
    cap, gen = load_model(cap_dir, kind="captioner"), load_model(gen_dir, kind="generator")
    enc = create_encoder(encoder, pretrained=True).eval()
    caption_fn, generate_fn, embed_fn = model_functions(cap, gen, enc)
    name, drawer = key, str(gen_dir.relative_to(ROOT))
    if oracle:  # the rule-based perfect drawing of each caption: the ceiling for any learned shapes generator
        if key != "shapes":
            raise SystemExit("--oracle needs --data shapes (only there are the drawing rules known)")
        from img2text2img.roundtrip import rule_based_drawings

        name, drawer = f"{key}-oracle", "rule-based drawing of the caption (oracle)"
        generate_fn = rule_based_drawings

    t = time.time()
    result = evaluate_roundtrip(ds, caption_fn, generate_fn, embed_fn, limit=limit, captions_per_image=per_image,
                                seed=seed)
    seconds = time.time() - t
    paths = write_report(result, out_dir / f"roundtrip-{name}", title=f"Round trip on {key} ({drawer})")
    payload = {
        "data": key, "limit": limit, "per_image": per_image, "seed": seed, "encoder": encoder,
        "captioner": str(cap_dir.relative_to(ROOT)), "generator": drawer,
        "command": "python scripts/results_roundtrip.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "seconds": round(seconds, 1),
        "scores": result.scores, "report": str(paths["html"].relative_to(ROOT)),
    }
    (out_dir / f"roundtrip-{name}.json").write_text(json.dumps(payload, indent=2))
    return payload


def section(results_dir: Path) -> str:
    rows = []
    for p in sorted(results_dir.glob("roundtrip-*.json")):
        r = json.loads(p.read_text())
        s = r["scores"]

        def f(x):
            return "n/a" if x is None else f"{x:.3f}"

        i2i = s.get("image_to_image", {})
        rows.append(
            f"| {r['data']} | {s['n_images']} / {s['n_pairs']} | {f(s['roundtrip']['bleu1'])} / {f(s['roundtrip']['bleu4'])} | "
            f"{f(s['upper_real_photo']['bleu1'])} / {f(s['upper_real_photo']['bleu4'])} | "
            f"{f(s['lower_grey']['bleu1'])} / {f(s['lower_grey']['bleu4'])} | "
            f"{f(s['lower_other_photo']['bleu1'])} / {f(s['lower_other_photo']['bleu4'])} | "
            f"**{f(s['normalised_bleu1'])} / {f(s['normalised_bleu4'])}** | "
            f"{f(s['normalised_bleu1_vs_other_photo'])} / {f(s['normalised_bleu4_vs_other_photo'])} | "
            f"{f(i2i.get('cosine_generated_vs_real'))} vs {f(i2i.get('cosine_generated_vs_other'))} | "
            f"{f(i2i.get('recall_at_1'))} / {f(i2i.get('recall_at_5'))} (chance {f(i2i.get('chance_recall_at_1'))} / "
            f"{f(i2i.get('chance_recall_at_5'))}) | {r['captioner']}, {r['generator']} | {r['date']} | `{r['command']}` |")
    head = [
        BEGIN, "## Round trip (shipped models)", "",
        "Caption -> image -> caption: each test image's reference caption is drawn by the generator and the drawing is "
        "captioned again; corpus BLEU (nltk, no smoothing) against the image's 5 references. Upper bound: the same "
        "captioner on the real photo; lower bounds: on a mid-grey image, and on a random other test photo. Normalised = "
        "(round trip - lower) / (upper - lower). Image -> caption -> image: cosine similarity of MobileNetV2 features "
        "between the drawing made from the photo's caption and the photo (vs another photo), and recall of the photo "
        "among the evaluated test photos when retrieved by the drawing. HTML reports with every row are in "
        "`docs/results/roundtrip-*/report.html`.", "",
        "| data | images / captions | round trip B1 / B4 | upper B1 / B4 | lower grey B1 / B4 | lower other B1 / B4 | "
        "normalised (grey) B1 / B4 | normalised (other photo) B1 / B4 | i->c->i cosine own vs other | recall@1 / @5 | "
        "models | date | command |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    return "\n".join(head + rows + ["", END])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="shapes")
    ap.add_argument("--limit", type=int, default=200)
    ap.add_argument("--per-image", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--encoder", default="mobilenet_v2")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "RESULTS.md")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--oracle", action="store_true",
                    help="shapes only: draw each caption with the rule-based renderer instead of the generator "
                         "(the ceiling a learned generator can reach)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.results.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        r = run(args.data, args.limit, args.per_image, args.seed, args.results, args.encoder, args.oracle)
        print(json.dumps(r["scores"], indent=2))
    doc = doc_for(args.results, args.doc, ROOT)
    replace_section(doc, section(args.results), BEGIN, END)
    print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
