#!/usr/bin/env python
"""What the generators' Fréchet distance can reach: real photos and autoencoder reconstructions, scored as drawings.

    python scripts/generator_references.py --out docs/results/generator-references-flickr8k.json

`results_generator.py` compares one drawing per test photo with the real test photos (N of each, MobileNetV2
features at 128 px). Here the same comparison is made with, in place of the drawings: N real photos of the
validation split (what a generator that drew real photos would score: the floor set by N), and the diffusion
autoencoder's reconstructions of those validation photos (what a perfect denoiser with this autoencoder would
score) and of the test photos themselves.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path

from img2text2img.errors import run_reporting_errors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="flickr8k-diffusion", help="a diffusion generator (its autoencoder is used)")
    ap.add_argument("--data", default="flickr8k")
    ap.add_argument("--images", type=int, default=300, help="photos per set, as results_generator.py uses")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON")
    a = ap.parse_args()
    import torch

    from img2text2img.data import load_dataset
    from img2text2img.metrics.image import encoder_features, frechet_feature_distance
    from img2text2img.models import load_model
    from img2text2img.models.encoders import create_encoder
    from img2text2img.models.generator.api import generator_kind
    from img2text2img.train.generator_data import load_image_captions

    torch.set_num_threads(a.threads)
    gen = load_model(a.model, kind="generator")
    if generator_kind(gen) != "diffusion":
        from img2text2img.errors import I2TError

        raise I2TError(f"{a.model} is a {generator_kind(gen)} generator; this needs a diffusion one (its autoencoder)")
    ds = load_dataset(a.data)
    size, n = gen.config.image_size, a.images
    test, val = (load_image_captions(ds, s, gen.vocab, size, n, gen.config.max_tokens).images.float() / 255
                 for s in ("test", "val"))
    ae = gen.autoencoder.eval()

    @torch.no_grad()
    def reconstruct(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([ae.decode(ae.encode(x[i:i + 64])) for i in range(0, len(x), 64)])

    enc = create_encoder("mobilenet_v2", pretrained=True).eval()
    ft = encoder_features(test, enc, size=128)
    rows = {"real val photos": val, "autoencoder, val photos": reconstruct(val),
            "autoencoder, the test photos": reconstruct(test)}
    result = {name: round(frechet_feature_distance(encoder_features(x, enc, size=128), ft), 1)
              for name, x in rows.items()}
    result = {"frechet_vs_test_photos": result, "images": len(ft), "image_size": size, "encoder": "mobilenet_v2",
              "encoder_input": 128, "model": str(a.model), "data": a.data,
              "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"), "machine": platform.platform(),
              "threads": a.threads, "command": "python scripts/generator_references.py " + " ".join(sys.argv[1:])}
    text = json.dumps(result, indent=1)
    if a.out:
        from img2text2img.io import write_text_atomic

        write_text_atomic(a.out, text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
