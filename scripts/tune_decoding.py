#!/usr/bin/env python
"""Choose a captioner's beam width and length normalisation on the validation split.

    python scripts/tune_decoding.py --model img2text2img/pretrained/captioner --threads 1 \
        --out docs/results/decoding-attention.json

The decoder is trained once; how it searches is a separate choice that moves every metric (a short caption pays
BLEU's brevity penalty, a long one loses precision). Each (beam, length_alpha) pair decodes the whole validation
split from cached encoder features and is scored with the COCO scorer (PTB tokens) and nltk BLEU. The pair with the
best COCO BLEU-4 (the project's selection metric), ties broken by CIDEr-D, is printed; the test split is never
touched here. `--apply` writes the chosen point into the model folder's decoding settings (the `inference` block of
its config.json), so that `i2t caption --model DIR` and `i2t eval captioner --model DIR` decode that way; then score
the test split once.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from machine import cpu_model  # scripts/ is on sys.path when a script runs

from img2text2img.errors import run_reporting_errors


def grid_points(beams: list[int], alphas: list[float]) -> list[tuple[int, float]]:
    """Every (beam, alpha) point, with greedy (beam 1, where alpha means nothing) once."""
    return ([(1, 0.0)] if 1 in beams else []) + [(b, a) for b in beams if b > 1 for a in alphas]


def apply_settings(model_dir: Path, beam: int, length_alpha: float) -> Path:
    """Write the chosen search into a checkpoint's decoding settings (migrating a config that still held them)."""
    from dataclasses import asdict, replace

    from img2text2img.io import write_text_atomic
    from img2text2img.models import resolve_checkpoint_dir
    from img2text2img.models.captioner import migrate_config
    from img2text2img.models.captioner.config import INFERENCE_KEYS

    cfg_file = resolve_checkpoint_dir(model_dir) / "config.json"
    record = json.loads(cfg_file.read_text())
    _, settings = migrate_config(record["config"], record.get("inference", {}))
    record["config"] = {k: v for k, v in record["config"].items() if k not in INFERENCE_KEYS}
    record["inference"] = asdict(replace(settings, beam_size=beam, length_alpha=length_alpha))
    write_text_atomic(cfg_file, json.dumps(record, indent=2))
    return cfg_file


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=None, help="captioner folder (default: the shipped one)")
    ap.add_argument("--data", default="flickr8k")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--split", default="val", choices=["val", "train"], help="never the test split")
    ap.add_argument("--beams", type=int, nargs="+", default=[1, 2, 3, 5])
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.4, 0.7, 1.0, 1.3])
    ap.add_argument("--meteor", action="store_true", help="also METEOR (Java; ~30 s more per point)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    ap.add_argument("--apply", action="store_true", help="write the chosen search into --model's decoding settings")
    args = ap.parse_args(argv)

    import torch

    from img2text2img.data import load_dataset
    from img2text2img.io import write_text_atomic
    from img2text2img.metrics.caption import coco_scores, corpus_bleu_scores
    from img2text2img.models.captioner import default_captioner_dir, load_captioner
    from img2text2img.train.captioner import decode_source, load_features
    from img2text2img.vocab import tokenize

    torch.set_num_threads(args.threads)
    model = load_captioner(args.model).eval()
    ds = load_dataset(args.data, args.data_dir)
    imgs = ds.split(args.split)
    src = load_features(model, ds, imgs)
    refs_raw = [ds.captions[im] for im in imgs]
    refs_tok = [[tokenize(c) for c in r] for r in refs_raw]
    ref_len = sum(min((len(r) for r in rs), default=0) for rs in refs_tok)
    shipped = {"beam_size": model.settings.beam_size, "length_alpha": model.settings.length_alpha}
    rows = []
    for beam, alpha in grid_points(args.beams, args.alphas):
        model.settings.length_alpha = alpha
        t0 = time.perf_counter()
        hyps = decode_source(model, src, beam_size=beam)
        secs = time.perf_counter() - t0
        words = sum(len(h.tokens) for h in hyps)
        row = {"beam": beam, "length_alpha": alpha, "decode_s": round(secs, 1),
               "mean_words": round(words / len(hyps), 2),
               "length_ratio_vs_shortest_ref": round(words / max(ref_len, 1), 3)}
        row.update({k: round(v, 4) for k, v in corpus_bleu_scores(refs_tok, [h.tokens for h in hyps]).items()})
        row.update({k: round(v, 4) for k, v in coco_scores(refs_raw, [h.text for h in hyps], meteor=args.meteor).items()})
        rows.append(row)
        print(json.dumps(row), flush=True)
    model.settings.length_alpha = shipped["length_alpha"]
    best = max(rows, key=lambda r: (r["coco_bleu4"], r["coco_cider_d"]))
    out = {"model": str(args.model or "shipped"), "data": args.data, "split": args.split, "images": len(imgs),
           "shipped": shipped,
           "chosen_by": "coco_bleu4, then coco_cider_d",
           "best": {k: best[k] for k in ("beam", "length_alpha")}, "points": rows,
           "machine": f"{cpu_model()}, torch {torch.__version__}, {args.threads} threads",
           "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
           "command": "python scripts/tune_decoding.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(out, indent=1) + "\n")
    if args.apply:
        cfg_file = apply_settings(Path(args.model or default_captioner_dir()), best["beam"], best["length_alpha"])
        print(f"wrote the search into {cfg_file}")
    print(f"best on {args.split}: beam {best['beam']}, length_alpha {best['length_alpha']} "
          f"(COCO BLEU-4 {best['coco_bleu4']:.4f}, CIDEr-D {best['coco_cider_d']:.4f}) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
