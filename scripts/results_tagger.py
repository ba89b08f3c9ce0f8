#!/usr/bin/env python
"""Train (when missing) and score the taggers on Flickr8k; write one JSON (the table docs/RESULTS.md cites).

Both heads (CNN-RNN tag sequences, linear BCE) on each encoder whose Flickr8k feature cache is finished (so this
script never starts a long encoding run on a shared CPU; pass --build-caches to allow it). Hyper-parameters are
fixed up front (`TaggerRecipe`), the BCE threshold and the best epoch are chosen on the validation split, and the
test split is scored once per model.

    nice -n 10 python scripts/results_tagger.py --threads 1 --out docs/results/tagger.json
    python scripts/results_tagger.py --no-train --out /tmp/tagger.json     # only score existing runs
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from img2text2img.errors import run_reporting_errors

ENCODERS = ("mobilenet_v2", "efficientnet_lite0", "mobilenet_v3_small", "googlenet")
HEADS = ("rnn", "bce")
METRICS = ("micro_precision", "micro_recall", "micro_f1", "macro_precision", "macro_recall", "macro_f1", "sample_f1",
           "exact_match", "mAP", "mean_predicted")


def cache_ready(encoder: str) -> bool:
    from img2text2img.features import list_caches

    return any(c["encoder"] == encoder and c["dataset"] == "flickr8k" and c["complete"] for c in list_caches())


def weights_present(encoder: str) -> bool:
    from img2text2img.models.encoders import create_encoder

    try:
        create_encoder(encoder)
    except Exception:  # noqa: BLE001 - any failure means "no usable weights here"
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs/tagger", help="run folders: RUNS/<encoder>-<head>/")
    ap.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    ap.add_argument("--encoders", nargs="*", default=list(ENCODERS))
    ap.add_argument("--heads", nargs="*", default=list(HEADS))
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--val-images", type=int, default=300, help="validation (model selection) on the first N val images")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--patience", type=int, default=4)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-train", action="store_true", help="score existing runs only")
    ap.add_argument("--build-caches", action="store_true", help="allow encoding Flickr8k for encoders without a cache")
    args = ap.parse_args(argv)

    import torch

    from img2text2img.data import load_dataset
    from img2text2img.io import write_text_atomic
    from img2text2img.tags import dataset_tags
    from img2text2img.train.tagger import train_tagger
    from img2text2img.train.tagger_recipe import TaggerRecipe

    torch.set_num_threads(args.threads)
    ds = load_dataset("flickr8k")
    tags = dataset_tags(ds)
    rows, skipped = [], []
    for enc in args.encoders:
        if not weights_present(enc):
            skipped.append({"encoder": enc, "reason": "needs weights (none on this machine)"})
            continue
        if not cache_ready(enc) and not args.build_caches:
            skipped.append({"encoder": enc, "reason": "no finished Flickr8k feature cache (run `i2t encode` first)"})
            continue
        for head in args.heads:
            run = Path(args.runs) / f"{enc}-{head}"
            if not (run / "best" / "config.json").exists():
                if args.no_train:
                    skipped.append({"encoder": enc, "head": head, "reason": f"not trained ({run})"})
                    continue
                recipe = TaggerRecipe(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                      weight_decay=args.weight_decay, patience=args.patience, warmup_steps=50,
                                      val_images=args.val_images, seed=0)
                summary = train_tagger("flickr8k", f"{enc}+{head}", recipe, out=run, device="cpu", log_every=100,
                                       resume=(run / "last" / "config.json").exists())  # an interrupted run continues
                write_text_atomic(run / "summary.json", json.dumps(summary, indent=2, default=str))
            rows.append(score_run(run, ds, tags))
            print(json.dumps(rows[-1]), flush=True)

    comparisons = []
    for enc in args.encoders:
        by = {r["head"]: r for r in rows if r["encoder"] == enc}
        if "rnn" in by and "bce" in by:
            d_micro = by["rnn"]["micro_f1"] - by["bce"]["micro_f1"]
            d_macro = by["rnn"]["macro_f1"] - by["bce"]["macro_f1"]
            winner = "rnn" if d_micro > 0 else "bce"
            comparisons.append({"encoder": enc, "winner_micro_f1": winner, "rnn_minus_bce_micro_f1": d_micro,
                                "rnn_minus_bce_macro_f1": d_macro,
                                "rnn_minus_bce_exact_match": by["rnn"]["exact_match"] - by["bce"]["exact_match"]})
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "machine": platform.platform(),
            "cpu": platform.processor() or platform.machine(), "python": sys.version.split()[0],
            "torch": torch.__version__, "threads": args.threads, "split": "test (1000 images)",
            "tags": "content words in >= 2 of an image's 5 captions, top 500 by training-image frequency",
            "command": "python scripts/results_tagger.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps({"meta": meta, "rows": rows, "comparisons": comparisons,
                                            "skipped": skipped}, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


def score_run(run: Path, ds, tags: dict) -> dict:
    """Test-split scores of `run/best`, with what the run's summary says about training."""
    from img2text2img.models import load_model
    from img2text2img.train.tagger import evaluate_tagger

    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    model = load_model(run / "best")
    cfg, settings = model.config, model.settings
    t0 = time.time()
    res = evaluate_tagger(model, ds, "test", tags)
    head_params = sum(v.numel() for k, v in model.state_dict().items() if k.startswith("head."))
    aux_bce = summary.get("recipe", {}).get("aux_bce")
    return {"encoder": cfg.encoder, "head": cfg.head, "model": f"{cfg.encoder}+{cfg.head}", "run": str(run),
            "head_params": head_params, "train_seconds": summary.get("train_seconds"), "steps": summary.get("steps"),
            "val_micro_f1": summary.get("best"), "threshold": settings.threshold if cfg.head == "bce" else None,
            "beam": settings.beam if cfg.head == "rnn" else None, "hidden": cfg.hidden if cfg.head == "rnn" else None,
            "aux_bce": aux_bce if cfg.head == "rnn" else None, "eval_seconds": round(time.time() - t0, 1),
            **{k: res.get(k) for k in METRICS}}


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
