"""Benchmark the opt-in int8 encoder (`Captioner.use_int8`) against the default graph-frozen fp32 one.

In one process, fp32 and int8 timings are interleaved (fp32, int8, fp32, int8, ...) so that load from other jobs
hits both alike; the figure to trust on a busy machine is `ratio` (median of the per-repeat int8/fp32 ratios).

* encoder: the encoder alone on one batch of already preprocessed Flickr8k val images (pooled + grid).
* caption_images: the full `Captioner.caption_images` (PIL preprocessing + encoder + beam search) on PIL images.
* quality (unless --quality-images 0): pooled-feature cosine, captions of the first val images through
  `decode_features` with fp32 vs int8 features, corpus BLEU-4 of each against the references, identical captions.

The int8 copy is calibrated on the first --calibration Flickr8k TRAIN images (deterministic).

    python scripts/bench_int8.py --out docs/bench/int8.json --threads 2
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from machine import cpu_model  # scripts/ is on sys.path when a script runs

from img2text2img.errors import run_reporting_errors


def _interleaved(fns: dict, arg, n_images: int, repeats: int, iters: int) -> dict:
    """images/s per repeat for each fn, round-robin; plus medians and the median per-repeat int8/fp32 ratio."""
    for fn in fns.values():
        fn(arg)  # warm-up
    runs: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            for _ in range(iters):
                fn(arg)
            runs[k].append(n_images * iters / (time.perf_counter() - t0))
    out = {f"{k}_images_per_s": round(statistics.median(v), 2) for k, v in runs.items()}
    out.update({f"{k}_runs": [round(x, 2) for x in v] for k, v in runs.items()})
    out["ratio"] = round(statistics.median(b / a for a, b in zip(runs["fp32"], runs["int8"])), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--beam", type=int, default=3)
    ap.add_argument("--calibration", type=int, default=128, help="Flickr8k train images used to calibrate")
    ap.add_argument("--caption-images", type=int, default=64, help="PIL images per caption_images timing")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quality-images", type=int, default=200)
    args = ap.parse_args(argv)

    import torch

    from img2text2img.data import load_dataset, load_image
    from img2text2img.models.captioner import load_captioner
    from img2text2img.models.encoders.int8 import QuantizedEncoder

    torch.set_num_threads(args.threads)
    ds = load_dataset("flickr8k")
    fp32_cap, int8_cap = load_captioner(None), load_captioner(None)
    enc = fp32_cap.ensure_encoder()
    tf = enc.transform()
    n_val = max(args.batch, args.caption_images, args.quality_images)
    val = ds.split("val")[:n_val]
    pil = [load_image(ds.image_path(im)) for im in val]
    x = torch.stack([tf(im) for im in pil])
    calibration = torch.stack([tf(load_image(ds.image_path(im))) for im in ds.split("train")[:args.calibration]])

    t0 = time.perf_counter()
    int8_on = int8_cap.use_int8(calibration)
    quantize_s = time.perf_counter() - t0
    if not int8_on:
        print("int8 quantization failed; see the warning above", file=sys.stderr)
        return 1
    fp32_enc = enc.for_bulk_inference(x[:args.batch])
    int8_enc = enc.quantized_for_inference(calibration)  # the same calibration gives the captioner's int8 copy
    assert isinstance(int8_enc, QuantizedEncoder)

    rec: dict = {"what": "fp32 (graph-frozen) vs opt-in int8 encoder, interleaved in one process",
                 "encoder": enc.name, "threads": args.threads, "batch": args.batch, "beam": args.beam,
                 "calibration": {"split": "flickr8k train", "images": args.calibration,
                                 "seconds": round(quantize_s, 1)}}
    with torch.inference_mode():
        batch = x[:args.batch]
        rec["encoder_alone"] = _interleaved({"fp32": fp32_enc, "int8": int8_enc}, batch, len(batch), args.repeats, 2)
        print("encoder", json.dumps(rec["encoder_alone"]), flush=True)
    images = pil[:args.caption_images]
    rec["caption_images"] = _interleaved(
        {"fp32": lambda ims: fp32_cap.caption_images(ims, beam_size=args.beam, batch_size=args.batch),
         "int8": lambda ims: int8_cap.caption_images(ims, beam_size=args.beam, batch_size=args.batch)},
        images, len(images), args.repeats, 1)
    print("caption_images", json.dumps(rec["caption_images"]), flush=True)

    if args.quality_images:
        from img2text2img.metrics.caption import corpus_bleu_scores
        from img2text2img.vocab import tokenize

        n = args.quality_images
        with torch.inference_mode():
            feats = {}
            for name, fn in (("fp32", fp32_enc), ("int8", int8_enc)):
                parts = [fn(x[i:i + args.batch]) for i in range(0, n, args.batch)]
                feats[name] = (torch.cat([p for p, _ in parts]), torch.cat([g for _, g in parts]))
        caps = {k: fp32_cap.decode_features(p, g, beam_size=args.beam) for k, (p, g) in feats.items()}
        refs = [[tokenize(c) for c in ds.captions[im]] for im in val[:n]]
        cos = torch.nn.functional.cosine_similarity(feats["fp32"][0], feats["int8"][0])
        rec["quality"] = {
            "images": n, "split": "flickr8k val (first images)",
            "pooled_cosine_mean": round(float(cos.mean()), 4), "pooled_cosine_min": round(float(cos.min()), 4),
            "bleu4_fp32": round(corpus_bleu_scores(refs, [r.tokens for r in caps["fp32"]])["bleu4"], 4),
            "bleu4_int8": round(corpus_bleu_scores(refs, [r.tokens for r in caps["int8"]])["bleu4"], 4),
            "identical_captions": sum(a.tokens == b.tokens for a, b in zip(caps["fp32"], caps["int8"])),
        }
        print("quality", json.dumps(rec["quality"]), flush=True)

    rec["machine"] = {"cpu": cpu_model(), "cpus": os.cpu_count(), "platform": platform.platform(),
                      "torch": torch.__version__, "quantized_engine": torch.backends.quantized.engine,
                      "loadavg_at_end": [round(v, 2) for v in os.getloadavg()]}
    rec["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rec["command"] = "python scripts/bench_int8.py " + " ".join(argv if argv is not None else sys.argv[1:])
    from img2text2img.io import write_text_atomic

    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(args.out, json.dumps(rec, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
