#!/usr/bin/env python
"""How fast a captioner decodes one photo, with and without the weight-side matrix products of a search.

    python scripts/bench_decode.py --threads 2 --out docs/bench/decode.json

Two measurements, on random weights (speed does not depend on them):
1. The decoder's matrix products (vocabulary projection, LSTM gates) at 1..96 rows in three forms: `F.linear`
   (x @ W.T, what nn.Linear does), x @ W.T with a contiguous transposed copy, and (W @ x.T).T. This is why
   `img2text2img.models.captioner.FEW_ROWS` is what it is.
2. Beam-3 decoding of one image's features for a fixed number of words, for the LSTM and attention decoders on
   EfficientNet-Lite0 features, once with `FEW_ROWS` as shipped and once with it emptied (the modules' own products).
Run it on an idle machine: a job on the other core changes both numbers.
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
from datetime import datetime, timezone
from pathlib import Path

from bench import _timeit, _vocab  # scripts/ is on sys.path when a script runs

from img2text2img.errors import run_reporting_errors


def _median_us(fn, repeat: int) -> float:
    return round(1e6 * statistics.median(_timeit(fn, repeat, warmup=max(3, repeat // 10))), 1)


def bench_products(repeat: int) -> list[dict]:
    import torch
    import torch.nn.functional as F

    rows_out = []
    for k, n in ((512, 2549), (768, 2048), (512, 2048)):
        w, b = torch.randn(n, k), torch.randn(n)
        wt, bc = w.t().contiguous(), b[:, None]
        for m in (1, 3, 5, 8, 15, 32, 96):
            x = torch.randn(m, k)
            rows_out.append({"in": k, "out": n, "rows": m,
                             "linear_us": _median_us(lambda: F.linear(x, w, b), repeat),
                             "transposed_copy_us": _median_us(lambda: torch.addmm(b, x, wt), repeat),
                             "weight_side_us": _median_us(lambda: torch.addmm(bc, w, x.t()).t(), repeat)})
    return rows_out


def bench_search(decoder: str, words: int, repeat: int) -> dict:
    import torch

    from img2text2img.models import captioner
    torch.manual_seed(0)
    model = captioner.create_captioner(f"efficientnet_lite0+{decoder}", _vocab(2549), 1280).eval()
    pooled, grid = torch.randn(1, 1280), torch.randn(1, 49, 1280)
    out = {"decoder": decoder, "beam": 3, "words": words}
    shipped = captioner.FEW_ROWS
    with torch.inference_mode():
        for label, few in (("module_ms", range(0)), ("weight_side_ms", shipped)):
            captioner.FEW_ROWS = few
            try:
                out[label] = round(_median_us(lambda: model.decode_features(pooled, grid, 3, max_len=words),
                                              repeat) / 1000, 2)
            finally:
                captioner.FEW_ROWS = shipped
    return out


def main() -> None:
    import torch

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=200, help="timed calls per matrix product")
    p.add_argument("--words", type=int, default=12, help="decoding steps per search (an untrained model never stops)")
    p.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    record = {"machine": f"{platform.platform()}, {platform.processor() or platform.machine()}, torch {torch.__version__}",
              "threads": args.threads, "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "command": "python scripts/bench_decode.py " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if v is not None),
              "products": bench_products(args.repeat),
              "search": [bench_search(d, args.words, max(10, args.repeat // 10)) for d in ("lstm", "attention")]}
    text = json.dumps(record, indent=1)
    if args.out:
        from img2text2img.io import write_text_atomic

        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(Path(args.out), text + "\n")
    for s in record["search"]:
        print(f"{s['decoder']}: beam 3, {s['words']} words: {s['module_ms']} ms with the modules' products, "
              f"{s['weight_side_ms']} ms weight-side")


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
