"""Measure open vocabulary (#13) on Flickr8k: broken captions (<unk>) before/after the mask, COCO scores with and
without open vocabulary, decode time, and optionally the DCC held-out-words protocol and the detector calibration.

    python scripts/openvocab_eval.py --out docs/results/openvocab.json            # 1,000 test photos
    python scripts/openvocab_eval.py --limit 100 --no-coco                        # quick look
    python scripts/openvocab_eval.py --model RUN --held-out cat,horse,bicycle     # DCC: mention F1 per word
    python scripts/openvocab_eval.py --calibrate --split val                      # fit the detector's Platt scaling

"Before" decodes with <unk> allowed (the search as it was), so a caption is broken when its ids held <unk>.
The detector reads the captioner's own pooled features; for a captioner with a fine-tuned encoder (the shipped one)
that is not the exact ImageNet head's input, which the JSON records.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from datetime import date
from pathlib import Path

import torch
from tqdm import tqdm

from img2text2img.data import load_dataset, load_image
from img2text2img.io import write_text_atomic
from img2text2img.models.captioner import load_captioner
from img2text2img.models.captioner import search as search_module
from img2text2img.models.encoders import create_encoder
from img2text2img.openvocab import fit_platt, word_detector
from img2text2img.openvocab.detector import CALIBRATION
from img2text2img.vocab import UNK_ID, tokenize


def allow_unk(logp: torch.Tensor) -> torch.Tensor:  # the search before #13: <pad> and <start> only
    logp = logp.clone()
    logp[:, 0] = -math.inf
    logp[:, 1] = -math.inf
    return logp


def mention_f1(hyps: list[list[str]], refs: list[list[str]], names: set[str]) -> float:
    """F1 of "the caption mentions the word" against "a reference mentions it", over the photos."""
    tp = fp = fn = 0
    for h, rs in zip(hyps, refs):
        said, truth = bool(names & set(h)), any(names & set(tokenize(r)) for r in rs)
        tp, fp, fn = tp + (said and truth), fp + (said and not truth), fn + (truth and not said)
    return 2 * tp / max(2 * tp + fp + fn, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="captioner (shipped name or folder; default the Flickr8k one)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0, help="first N photos of the split (0: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threshold", type=float, default=None, help="detector confidence (default: the model's)")
    ap.add_argument("--no-coco", action="store_true", help="skip the COCO scores (need Java)")
    ap.add_argument("--held-out", default="", help="comma-separated words: mention F1 per word (DCC protocol)")
    ap.add_argument("--calibrate", action="store_true", help=f"fit the detector's Platt scaling, write {CALIBRATION.name}")
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    model = load_captioner(a.model)
    if a.threshold is not None:
        model.settings.open_vocab_threshold = a.threshold
    ds = load_dataset("flickr8k")
    names = ds.split(a.split)[: a.limit or None]
    refs = [ds.captions[n] for n in names]
    before, plain, ov, t_plain, t_ov, raw_scores = [], [], [], 0.0, 0.0, []
    unk_before, frozen = 0, None
    for i in tqdm(range(0, len(names), a.batch_size), desc="photos", unit="batch", file=sys.stderr):
        ims = [load_image(ds.image_path(n)) for n in names[i:i + a.batch_size]]
        pooled, grid = model.encode_images(ims)
        keep = search_module.never_emit
        search_module.never_emit = allow_unk
        try:
            ids, _ = search_module.beam_search(model.decoder, pooled.float(), grid.float() if model.config.uses_grid
                                               else None, model.settings.beam_size, model.config.max_len,
                                               model.settings.length_alpha)
        finally:
            search_module.never_emit = keep
        for row in ids.tolist():
            toks = model.vocab.decode_tokens(row)
            cut = row[: row.index(2)] if 2 in row else row
            unk_before += UNK_ID in cut
            before.append(toks)
        t0 = time.perf_counter()
        plain += model.decode_features(pooled, grid, open_vocab=False)
        t1 = time.perf_counter()
        ov += model.decode_features(pooled, grid, open_vocab=True)
        t_plain, t_ov = t_plain + t1 - t0, t_ov + time.perf_counter() - t1
        if a.calibrate:  # on the frozen pretrained encoder: the exact head's input, what a tagger gives it
            if frozen is None:
                frozen = create_encoder(model.config.encoder).eval()
            with torch.inference_mode():
                x = torch.stack([frozen.transform()(im) for im in ims])
                raw_scores.append(word_detector(model.config.encoder).raw_scores(frozen(x)[0]))
    n = len(names)
    result = {"date": date.today().isoformat(), "model": str(a.model or "captioner"), "split": a.split, "photos": n,
              "encoder_fine_tuned": bool(model.config.store_encoder),
              "threshold": model.settings.open_vocab_threshold, "max_words": model.settings.open_vocab_words,
              "broken_unk_before": unk_before, "broken_unk_after": sum(3 in [model.vocab.stoi.get(t, 3) for t in r.tokens]
                                                                     for r in plain),
              "captions_changed_by_open_vocab": sum(p.text != o.text for p, o in zip(plain, ov)),
              "decode_ms_per_photo": {"plain": 1000 * t_plain / n, "open_vocab": 1000 * t_ov / n},
              "examples": [{"image": nm, "plain": p.text, "open_vocab": o.text}
                           for nm, p, o in zip(names, plain, ov) if p.text != o.text][:20]}
    if not a.no_coco:
        from img2text2img.metrics.caption import coco_scores

        result["coco_plain"] = coco_scores(refs, [r.text for r in plain])
        result["coco_open_vocab"] = coco_scores(refs, [r.text for r in ov])
    if a.held_out:
        from img2text2img.openvocab import plural_forms

        result["held_out"] = {}
        for w in [w.strip() for w in a.held_out.split(",") if w.strip()]:
            forms = set(plural_forms(w))
            rows = [j for j, rs in enumerate(refs) if any(forms & set(tokenize(r)) for r in rs)]
            result["held_out"][w] = {"photos_mentioning": len(rows),
                                     "f1_plain": mention_f1([r.tokens for r in plain], refs, forms),
                                     "f1_open_vocab": mention_f1([r.tokens for r in ov], refs, forms)}
    if a.calibrate:
        det = word_detector(model.config.encoder)
        scores = torch.cat(raw_scores)  # [n, W]
        labels = torch.tensor([[bool(det.table.names(w) & {t for r in rs for t in tokenize(r)}) for w in det.table.words]
                               for rs in refs], dtype=torch.float32)
        top = scores.topk(5, dim=1).indices  # calibrate where it matters: each photo's top words
        a_, b_ = fit_platt(scores.gather(1, top).flatten(), labels.gather(1, top).flatten())
        table = json.loads(CALIBRATION.read_text()) if CALIBRATION.exists() else {}
        table[model.config.encoder] = {"a": a_, "b": b_, "photos": n, "split": a.split,
                                       "features": "frozen",
                                       "date": result["date"]}
        write_text_atomic(CALIBRATION, json.dumps(table, indent=1) + "\n")
        result["calibration"] = table[model.config.encoder]
    text = json.dumps(result, indent=1)
    if a.out:
        write_text_atomic(a.out, text + "\n")
    print(text)


if __name__ == "__main__":
    main()
