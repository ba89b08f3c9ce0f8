"""Train (when missing) and score the taggers on Flickr8k; write docs/results/tagger.json and docs/results/tagger.md.

Both heads (CNN-RNN tag sequences, linear BCE) on each encoder whose Flickr8k feature cache is finished (so this
script never starts a long encoding run on a shared CPU; pass --build-caches to allow it). Hyper-parameters are
fixed up front, the BCE threshold and the best epoch are chosen on the validation split, and the test split is
scored once per model.

    nice -n 10 python scripts/results_tagger.py --threads 1            # train what is missing, score, write
    python scripts/results_tagger.py --no-train                        # only score existing runs
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
    ap.add_argument("--out", default="docs/results", help="where tagger.json and tagger.md go")
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
    ap.add_argument("--extra", nargs="*", default=[], help="more run folders to score as extra rows (variants)")
    ap.add_argument("--build-caches", action="store_true", help="allow encoding Flickr8k for encoders without a cache")
    args = ap.parse_args(argv)

    import torch

    from img2text2img.data import load_dataset
    from img2text2img.tags import dataset_tags
    from img2text2img.train.engine import TrainConfig
    from img2text2img.train.tagger import train_tagger

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
                cfg = TrainConfig(out=str(run), epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                                  weight_decay=args.weight_decay, patience=args.patience, seed=0, device="cpu",
                                  warmup_steps=50, progress=True, log_every=100,
                                  resume=(run / "last" / "config.json").exists())  # an interrupted run continues
                summary = train_tagger("flickr8k", f"{enc}+{head}", cfg, val_limit=args.val_images, progress=False)
                (run / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
            rows.append(score_run(run, ds, tags, head))
            print(json.dumps(rows[-1]), flush=True)
    for run in map(Path, args.extra):
        if (run / "best" / "config.json").exists():
            rows.append(score_run(run, ds, tags, None))
            print(json.dumps(rows[-1]), flush=True)
        else:
            skipped.append({"encoder": str(run), "reason": "extra run not found"})

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
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "tagger.json").write_text(json.dumps({"meta": meta, "rows": rows, "comparisons": comparisons,
                                                 "skipped": skipped}, indent=2) + "\n", encoding="utf-8")
    (out / "tagger.md").write_text(markdown(meta, rows, comparisons, skipped), encoding="utf-8")
    print(f"wrote {out / 'tagger.json'} and {out / 'tagger.md'}")
    return 0


def score_run(run: Path, ds, tags: dict, head: str | None) -> dict:
    """Test-split scores of `run/best`, with what the run's summary says about training."""
    from img2text2img.models import load_model
    from img2text2img.train.tagger import evaluate_tagger

    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").exists() else {}
    model = load_model(run / "best")
    cfg = model.config
    t0 = time.time()
    res = evaluate_tagger(model, ds, "test", tags)
    head_params = sum(v.numel() for k, v in model.state_dict().items() if k.startswith("head."))
    variant = cfg.head if head is not None else f"{cfg.head} ({run.name})"
    return {"encoder": cfg.encoder, "head": variant, "model": f"{cfg.encoder}+{cfg.head}", "run": str(run),
            "head_params": head_params, "train_seconds": summary.get("train_seconds"), "steps": summary.get("steps"),
            "val_micro_f1": summary.get("best"), "threshold": cfg.threshold if cfg.head == "bce" else None,
            "beam": cfg.beam if cfg.head == "rnn" else None, "hidden": cfg.hidden if cfg.head == "rnn" else None,
            "aux_bce": cfg.aux_bce if cfg.head == "rnn" else None, "eval_seconds": round(time.time() - t0, 1),
            **{k: res.get(k) for k in METRICS}}


def _f(x, digits: int = 3) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def markdown(meta: dict, rows: list[dict], comparisons: list[dict], skipped: list[dict]) -> str:
    lines = [
        "### Tagger: CNN-RNN tag sequences vs. linear BCE (Flickr8k test)",
        "",
        f"{meta['date']}, {meta['machine']}, torch {meta['torch']}, {meta['threads']} thread(s). "
        f"Tags: {meta['tags']}. Frozen ImageNet encoders, heads trained on cached pooled features; best epoch and BCE "
        "threshold chosen on the validation split; test scored once. `{}`.".format(meta["command"]),
        "",
        ("| encoder | head | micro P | micro R | micro F1 | macro P | macro R | macro F1 | per-image F1 | exact match "
         "| mAP | tags/image | head params | train s |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['encoder']} | {r['head']} | {_f(r['micro_precision'])} | {_f(r['micro_recall'])} | {_f(r['micro_f1'])} "
            f"| {_f(r['macro_precision'])} | {_f(r['macro_recall'])} | {_f(r['macro_f1'])} | {_f(r['sample_f1'])} "
            f"| {_f(r['exact_match'])} | {_f(r.get('mAP'))} | {_f(r['mean_predicted'], 2)} | {r['head_params']:,} "
            f"| {_f(r['train_seconds'], 0)} |")
    lines.append("")
    for c in comparisons:
        lines.append(f"- {c['encoder']}: **{c['winner_micro_f1']}** wins on micro F1 by "
                     f"{abs(c['rnn_minus_bce_micro_f1']):.3f} (RNN − BCE: micro F1 {c['rnn_minus_bce_micro_f1']:+.3f}, "
                     f"macro F1 {c['rnn_minus_bce_macro_f1']:+.3f}, exact match {c['rnn_minus_bce_exact_match']:+.3f}).")
    for s in skipped:
        lines.append(f"- {s['encoder']}{' + ' + s['head'] if 'head' in s else ''}: not run, {s['reason']}.")
    lines.append("")
    lines.append("Rows with a run folder in parentheses are variants trained with `i2t train tagger` (no warm-up; "
                 "`-aux` = `--aux-bce 1.0`, `-drop05` = `--dropout 0.5`). Training seconds were measured on a shared "
                 "2-core CPU under a load average of 8-14 and compare only roughly.")
    lines.append("")
    lines.append("mAP needs a score for every tag, which only the BCE head gives (the RNN emits a set); "
                 "exact match is rare because images carry about 5 reference tags out of 500.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
