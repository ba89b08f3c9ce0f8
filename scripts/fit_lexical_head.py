#!/usr/bin/env python
"""Fit the lexical classifiers of open vocabulary (DCC; img2text2img/openvocab/lexical.py) on Flickr8k training photos.

    python scripts/fit_lexical_head.py                      # writes img2text2img/openvocab/lexical/efficientnet_lite0.safetensors

Each photo is labelled by the content words (nouns and adjectives, plurals folded) that any of its captions uses;
the words that label at least --min-photos training photos get a logistic regression on the frozen encoder's pooled
features. The weight decay is chosen by the mean log-loss on the validation photos; the test split is not read.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import numpy as np

from img2text2img.errors import run_reporting_errors


def bce(p: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--encoder", default="efficientnet_lite0", help="a frozen encoder with an exact ImageNet head")
    ap.add_argument("--data", default="flickr8k", help="caption dataset whose photos and captions give the labels")
    ap.add_argument("--min-photos", type=int, default=10, help="fit the words labelling at least this many photos")
    ap.add_argument("--weight-decays", default="1e-2,3e-2,1e-1,3e-1", help="comma-separated; chosen on val")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="default: the package's lexical/<encoder>.safetensors")
    a = ap.parse_args()
    import torch

    from img2text2img.data import load_dataset
    from img2text2img.features import encode_dataset
    from img2text2img.openvocab.lexical import fit_lexical, lexical_path, save_lexical
    from img2text2img.openvocab.tags import is_tag_word
    from img2text2img.tags import build_tag_vocab, derive_tags

    torch.set_num_threads(a.threads)
    ds = load_dataset(a.data)
    train, val = ds.split("train"), ds.split("val")
    tags = derive_tags({im: ds.captions[im] for im in train + val}, min_captions=1)
    vocab = build_tag_vocab(tags, train, max_tags=5000, min_count=a.min_photos)
    words = [w for w in vocab.itos[4:] if is_tag_word(w)]
    col = {w: j for j, w in enumerate(words)}

    def labels(images: list[str]) -> np.ndarray:
        y = np.zeros((len(images), len(words)), dtype=np.float32)
        for i, im in enumerate(images):
            for w in tags.get(im, ()):
                if w in col:
                    y[i, col[w]] = 1.0
        return y

    cache = encode_dataset(a.encoder, ds, images=train + val, grid=False, progress=True)
    xt, xv = (cache.pooled_for(s).float().numpy() for s in (train, val))
    yt, yv = labels(train), labels(val)
    tried = {}
    for wd in (float(v) for v in a.weight_decays.split(",") if v.strip()):
        w, b = fit_lexical(xt, yt, wd)
        p = 1 / (1 + np.exp(-np.clip(xv @ w.T + b, -60, 60)))
        tried[wd] = (bce(p, yv), w, b)
        print(f"weight decay {wd:g}: val log-loss {tried[wd][0]:.5f}", file=sys.stderr)
    best = min(tried, key=lambda k: tried[k][0])
    info = {"encoder": a.encoder, "data": a.data, "fit_on": f"train ({len(train)} photos)", "words": len(words),
            "min_photos": a.min_photos, "weight_decay": best, "chosen_on": f"val log-loss ({len(val)} photos)",
            "val_log_loss": {f"{k:g}": round(v[0], 6) for k, v in tried.items()}, "date": date.today().isoformat(),
            "command": "python scripts/fit_lexical_head.py " + " ".join(sys.argv[1:])}
    out = save_lexical(a.out or lexical_path(a.encoder), words, tried[best][1], tried[best][2], info)
    print(json.dumps({**info, "out": str(out)}, indent=1))


if __name__ == "__main__":
    sys.exit(run_reporting_errors(main))
