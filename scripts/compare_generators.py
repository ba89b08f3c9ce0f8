#!/usr/bin/env python
"""Compare generators by the round trip, read by several captioners, over many sampling seeds, paired.

    python scripts/compare_generators.py --data flickr8k --split test --limit 1000 --seeds 0-9 \\
        --generator vae=img2text2img/pretrained/generator_flickr8k \\
        --generator pixel=runs/gen-pixel-flickr8k/last --reader lstm=LSTM_DIR --reader attention=shipped \\
        --out docs/results/compare-flickr8k-test.json

Why: one round trip at one seed moves by about 0.03 with the caption each photo sends round, more than most
differences between two Flickr8k generators, and one captioner's taste can favour one kind of blur. Here every
generator draws the very captions `i2t roundtrip-eval` sends for each seed (`roundtrip.roundtrip_pairs`), every
reader reads every drawing, and the JSON gives per seed and reader the normalised BLEU-4 (against the grey-image
lower bound and the real-photo upper bound, which are captioned once per reader) and, for each generator against
the first, the mean paired difference with its standard error over seeds and how many seeds it is ahead at.
A generator spec is NAME=DIR[@GUIDANCE]; a reader is NAME=DIR, or NAME=shipped for the package's captioner.
Any generator kind (pixel, vae, gan, diffusion); `--steps N` draws every diffusion generator in N denoising steps
(the others have none), e.g. --generator vae=img2text2img/pretrained/generator_flickr8k
--generator diffusion=runs/diffusion-flickr8k/denoiser/last --steps 25.
`--rerank NAME=CAPTIONER` draws generator NAME best of `--candidates` by that captioner (`models.generator.rerank`); a
reader with the reranker's weights does not read those drawings, so each reranked row is judged by another reader.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from machine import cpu_model  # scripts/ is on sys.path when a script runs

from img2text2img.errors import I2TError, run_reporting_errors


def parse_seeds(text: str) -> list[int]:
    """'0-4' or '0,2,5' -> seeds."""
    try:
        if "-" in text:
            a, b = text.split("-")
            return list(range(int(a), int(b) + 1))
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise I2TError(f"--seeds takes 'A-B' or 'A,B,C', not {text!r}") from None


def parse_spec(spec: str, what: str) -> tuple[str, str, float | None]:
    """NAME=DIR[@GUIDANCE] -> (name, dir, guidance or None)."""
    name, sep, rest = spec.partition("=")
    if not sep or not name or not rest:
        raise I2TError(f"--{what} takes NAME=DIR, not {spec!r}")
    path, at, g = rest.partition("@")
    try:
        return name, path, float(g) if at else None
    except ValueError:
        raise I2TError(f"the guidance after @ in {spec!r} is not a number") from None


def paired(a: list[float], b: list[float]) -> dict:
    """Mean of a - b with its standard error over the seeds, and at how many seeds a is ahead of b."""
    d = [x - y for x, y in zip(a, b)]
    n = len(d)
    mean = sum(d) / n
    se = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1) / n) if n > 1 else None
    return {"mean_difference": mean, "standard_error": se, "ahead_at": sum(x > 0 for x in d), "seeds": n}


def compare(data: str, split: str, limit: int, seeds: list[int], generators: list[tuple[str, str, float | None]],
            readers: list[tuple[str, str]], data_dir: str | None = None, batch_size: int = 32,
            rerank: dict[str, str] | None = None, candidates: int = 8, steps: int | None = None) -> dict:
    """Round trips of every generator read by every reader at every seed (see the module docstring). `rerank` maps
    a generator's name to a captioner folder that picks its best of `candidates` drawings (`models.generator.rerank`);
    a reader with that captioner's weights does not read those drawings (it would score its own choice). `steps`:
    the denoising steps of every diffusion generator (None: each one's own)."""
    import torch
    from tqdm import tqdm

    from img2text2img.data import load_dataset
    from img2text2img.data.images import load_image
    from img2text2img.metrics.caption import corpus_bleu_scores
    from img2text2img.models import load_model, weights_sha256
    from img2text2img.models.generator import PromptWarning, reranked
    from img2text2img.models.generator.api import generator_kind, with_steps
    from img2text2img.roundtrip import default_model_dir, grey_image, model_functions, normalise, roundtrip_pairs
    from img2text2img.train.generator import guide
    from img2text2img.vocab import tokenize

    ds = load_dataset(data, data_dir)

    def captioner_dir(path: str) -> str:
        return str(default_model_dir("captioner", data)) if path == "shipped" else path

    caps = {name: load_model(captioner_dir(path), kind="captioner") for name, path in readers}
    reader_sha = {name: weights_sha256(captioner_dir(path)) for name, path in readers}
    rerank = {name: captioner_dir(path) for name, path in (rerank or {}).items()}
    unknown = sorted(set(rerank) - {g[0] for g in generators})
    if unknown:
        raise I2TError(f"--rerank names no generator: {', '.join(unknown)}")
    gens, skip = {}, set()
    for name, path, g in generators:
        model = load_model(path, kind="generator")
        if steps is not None and generator_kind(model) == "diffusion":
            model = with_steps(model, steps)
        gens[name] = guide(model, g, data, data_dir) if g is not None else model
        if name in rerank:
            gens[name] = reranked(gens[name], rerank[name], candidates)
            skip |= {(name, r) for r, sha in reader_sha.items() if sha and sha == weights_sha256(rerank[name])}

    # Each reader reads and each generator draws through the very callables `i2t roundtrip-eval` uses
    # (roundtrip.model_functions: the captioner's own search, the generator's own temperature and guidance).
    caption_fn = {name: model_functions(cap, None)[0] for name, cap in caps.items()}
    generate_fn = {name: model_functions(None, gen)[1] for name, gen in gens.items()}

    def read(reader, pics: list) -> list[list[str]]:
        out = []
        for i in range(0, len(pics), batch_size):
            out += [tokenize(t) for t in caption_fn[reader](pics[i:i + batch_size])]
        return out

    images, _, _ = roundtrip_pairs(ds, split, limit, 1, seeds[0])
    refs = [[tokenize(c) for c in ds.captions[im]] for im in images]
    photos = [load_image(ds.image_path(im)) for im in images]
    bounds = {}
    for reader in caps:  # with one caption per photo the references do not depend on the seed, nor do the bounds
        upper = corpus_bleu_scores(refs, read(reader, photos))["bleu4"]
        grey = corpus_bleu_scores(refs, read(reader, [grey_image(photos[0].width)]) * len(refs))["bleu4"]
        bounds[reader] = {"upper_bleu4": upper, "grey_bleu4": grey}
    del photos

    rows = []
    bar = tqdm(total=len(seeds) * len(gens), desc="drawing and reading", unit="run", file=sys.stderr)
    for seed in seeds:
        _, _, pairs = roundtrip_pairs(ds, split, limit, 1, seed)
        prompts = [c for _, c in pairs]
        for name in gens:
            drawn = []
            # batches and seeds as in evaluate_roundtrip; a test caption's rare words are read as <unk> there too,
            # so saying so for every run would only bury the progress bar
            with torch.inference_mode(), warnings.catch_warnings():
                warnings.simplefilter("ignore", PromptWarning)
                for i in range(0, len(prompts), batch_size):
                    drawn += generate_fn[name](prompts[i:i + batch_size], seed + i)
            for reader in caps:
                if (name, reader) in skip:
                    continue
                b4 = corpus_bleu_scores(refs, read(reader, drawn))["bleu4"]
                b = bounds[reader]
                rows.append({"generator": name, "reader": reader, "seed": seed, "bleu4": b4,
                             "normalised_bleu4": normalise(b4, b["grey_bleu4"], b["upper_bleu4"])})
            bar.update(1)
    bar.close()

    summary = {}
    first = generators[0][0]
    for reader in caps:
        by = {name: [r["normalised_bleu4"] for r in rows if r["generator"] == name and r["reader"] == reader]
              for name in gens if (name, reader) not in skip}
        summary[reader] = {name: {"mean": sum(v) / len(v),
                                  **({f"vs_{first}": paired(v, by[first])} if name != first and first in by else {})}
                           for name, v in by.items()}
    return {"bounds": bounds, "summary": summary, "rows": rows,
            "not_read": [{"generator": g, "reader": r, "why": "reranked by this reader's weights"} for g, r in sorted(skip)]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog=__doc__.split("\n\n", 1)[1])
    ap.add_argument("--data", default="flickr8k")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=1000, help="photos per run (first N of the split)")
    ap.add_argument("--seeds", default="0-4", help="sampling seeds: 'A-B' or 'A,B,C' (each picks the caption sent "
                    "round for every photo, and the noise)")
    ap.add_argument("--generator", action="append", required=True, metavar="NAME=DIR[@G]",
                    help="a generator (repeat; the first is the one the others are compared with); @G draws it at "
                         "guidance G")
    ap.add_argument("--reader", action="append", required=True, metavar="NAME=DIR",
                    help="a captioner that reads the drawings back (repeat); DIR 'shipped' = the package's")
    ap.add_argument("--rerank", action="append", default=[], metavar="NAME=CAPTIONER",
                    help="draw generator NAME best of --candidates, picked by this captioner (repeat; 'shipped' = the "
                         "package's); readers with its weights skip those drawings")
    ap.add_argument("--candidates", type=int, default=8, help="samples per picture for --rerank (default 8)")
    ap.add_argument("--steps", type=int, default=None,
                    help="denoising steps of every diffusion generator (default: each one's own; others have none)")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ap.add_argument("--out", type=Path, required=True, help="JSON file to write")
    args = ap.parse_args(argv)

    def run() -> int:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        gens = [parse_spec(s, "generator") for s in args.generator]
        readers = [parse_spec(s, "reader")[:2] for s in args.reader]
        if len({g[0] for g in gens}) != len(gens) or len({r[0] for r in readers}) != len(readers):
            raise I2TError("generator and reader names must be unique")
        seeds = parse_seeds(args.seeds)
        t0 = time.time()
        rerank = dict(parse_spec(s, "rerank")[:2] for s in args.rerank)
        result = compare(args.data, args.split, args.limit, seeds, gens, readers, args.data_dir,
                         rerank=rerank, candidates=args.candidates, steps=args.steps)
        result.update({
            "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
            "data": args.data, "split": args.split, "photos": args.limit, "seeds": seeds,
            "steps": args.steps,
            "generators": {n: {"dir": p, "guidance": g, "reranker": rerank.get(n),
                               "candidates": args.candidates if n in rerank else None} for n, p, g in gens},
            "readers": {n: p for n, p in readers},
            "seconds": round(time.time() - t0, 1),
            "machine": f"{cpu_model()}, {os.cpu_count()} CPUs, {platform.platform()}, torch {torch.__version__}",
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        })
        from img2text2img.io import write_text_atomic

        write_text_atomic(args.out, json.dumps(result, indent=1))
        for reader, by in result["summary"].items():
            for name, s in by.items():
                vs = next((v for k, v in s.items() if k.startswith("vs_")), None)
                extra = (f"  {vs['mean_difference']:+.3f} ± {vs['standard_error']:.3f} vs {gens[0][0]}, ahead at "
                         f"{vs['ahead_at']}/{vs['seeds']} seeds") if vs and vs["standard_error"] is not None else ""
                print(f"{reader:>12} {name:>12} normalised BLEU-4 {s['mean']:.3f}{extra}")
        print(f"wrote {args.out}")
        return 0

    return run_reporting_errors(run)


if __name__ == "__main__":
    sys.exit(main())
