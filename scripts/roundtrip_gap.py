"""Where a shapes generator's round trip falls short of the rule-based ceiling, by how many shapes a prompt names.

    i2t roundtrip-eval --data shapes --split val --limit 300 --encoder none --seed 0 --out /tmp/rt
    python scripts/roundtrip_gap.py /tmp/rt/roundtrip.json --split val --limit 300 --seed 0

The ceiling is the same round trip with each prompt drawn by the exact drawing rules (`roundtrip.rule_based_drawings`,
whatever the prompt leaves open picked at random), read by the same shipped shapes captioner. Both runs send the
same prompts (same split, limit and seed), so the per-prompt sentence BLEU-4 can be compared row by row. Why: the
normalised score says how far a generator is from the ceiling, not where; a generator that misses mostly on
two-shape prompts needs different work than one that misses backgrounds.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

from img2text2img.errors import run_reporting_errors

SHAPE_WORDS = re.compile(r"\b(circle|square|triangle|star|cross|diamond)s?\b")


def shapes_named(prompt: str) -> int:
    return len(SHAPE_WORDS.findall(prompt))


def ceiling_rows(split: str, limit: int, seed: int, threads: int) -> tuple[list[dict], float]:
    import torch

    from img2text2img.data import load_dataset
    from img2text2img.models import load_model
    from img2text2img.roundtrip import default_model_dir, evaluate_roundtrip, model_functions, rule_based_drawings

    torch.set_num_threads(threads)
    captioner = load_model(default_model_dir("captioner", "shapes"), kind="captioner")
    generator = load_model(default_model_dir("generator", "shapes"), kind="generator")
    caption_fn, _, _ = model_functions(captioner, generator)  # the judge reads as in `i2t roundtrip-eval`
    result = evaluate_roundtrip(load_dataset("shapes"), caption_fn, rule_based_drawings, None, split=split,
                                limit=limit, seed=seed)
    return [vars(r) for r in result.rows], result.scores["normalised_bleu4"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("roundtrip_json", type=Path, help="roundtrip.json written by `i2t roundtrip-eval --data shapes`")
    ap.add_argument("--split", default="val")
    ap.add_argument("--limit", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, help="also write the table as JSON here")
    args = ap.parse_args()

    try:
        model = json.loads(args.roundtrip_json.read_text())
    except (OSError, ValueError) as exc:
        sys.exit(f"cannot read {args.roundtrip_json}: {exc}")
    if "rows" not in model:
        sys.exit(f"{args.roundtrip_json} has no per-prompt rows: give the roundtrip.json of `i2t roundtrip-eval`")
    rows, ceiling = ceiling_rows(args.split, args.limit, args.seed, args.threads)
    if [r["reference"] for r in rows] != [r["reference"] for r in model["rows"]]:
        sys.exit("the round trip was run on other prompts: use the same --split, --limit and --seed as roundtrip-eval")
    groups: dict[int, list[tuple[float, float]]] = defaultdict(list)
    for m, c in zip(model["rows"], rows):
        groups[shapes_named(m["reference"])].append((m["bleu4"], c["bleu4"]))
    table = []
    for n in sorted(groups):
        pairs = groups[n]
        table.append({"shapes_named": n, "prompts": len(pairs),
                      "generator_bleu4": sum(p for p, _ in pairs) / len(pairs),
                      "ceiling_bleu4": sum(c for _, c in pairs) / len(pairs),
                      "summed_loss": sum(c - p for p, c in pairs)})
    print(f"normalised BLEU-4: generator {model['scores']['normalised_bleu4']:.3f}, ceiling {ceiling:.3f}")
    print("shapes named | prompts | generator BLEU-4 | ceiling BLEU-4 | summed loss")
    for t in table:
        print(f"{t['shapes_named']:12d} | {t['prompts']:7d} | {t['generator_bleu4']:16.3f} | "
              f"{t['ceiling_bleu4']:14.3f} | {t['summed_loss']:.1f}")
    if args.out:
        args.out.write_text(json.dumps({"ceiling_normalised_bleu4": ceiling, "groups": table,
                                        "command": "python scripts/roundtrip_gap.py " + " ".join(sys.argv[1:])},
                                       indent=2))


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
