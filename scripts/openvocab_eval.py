"""Measure open vocabulary (#13) on Flickr8k: broken captions (<unk>) before/after the mask, COCO scores with and
without open vocabulary, the time it adds, the DCC held-out-words protocol, and the detector calibration.

    python scripts/openvocab_eval.py --calibrate --split val --no-coco             # fit Platt scaling (ships)
    python scripts/openvocab_eval.py --split val --thresholds 0.5,0.6,0.7,0.8,0.9  # choose the threshold on val
    python scripts/openvocab_eval.py --threshold 0.6                               # 1,000 test photos, once
    python scripts/openvocab_eval.py --model RUN --held-out horse/pony,car         # DCC: mention F1 and METEOR
    python scripts/openvocab_eval.py --tagger --split val                          # the tagger, plain vs merged
    python scripts/openvocab_eval.py --drawings 200                                # <unk> on round-trip drawings

Each takes `--out docs/bench/openvocab.json --key NAME` to keep its numbers in that file's NAME entry.

"Before" decodes with <unk> allowed (the search as it was), so a caption is broken when its ids held <unk>.
Times are per photo on this machine with the thread count given (--threads, default 1): encoding, the plain
search, and what open vocabulary adds (detector + constrained re-decoding of the photos that need it).
A threshold sweep decodes again at each threshold (words the caption vocabulary lacks are forced first, so which
word a photo gets can depend on the threshold).
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
from img2text2img.features import encode_dataset
from img2text2img.io import write_text_atomic
from img2text2img.models.captioner import load_captioner
from img2text2img.models.captioner import search as search_module
from img2text2img.models.captioner.openvocab import OpenVocab
from img2text2img.openvocab import fit_platt, word_detector
from img2text2img.openvocab.detector import CALIBRATION, calibration_key
from img2text2img.openvocab.heldout import mentions, word_forms
from img2text2img.vocab import END_ID, UNK_ID, tokenize


def write_result(out: Path | None, key: str | None, result: dict) -> None:
    """Print `result`; with --out write it there, or with --key too into that file's `key` entry, keeping the
    others (docs/bench/openvocab.json holds every measurement of #13, one entry per command)."""
    text = json.dumps(result, indent=1)
    print(text)
    if out is None:
        return
    if key:
        table = json.loads(out.read_text()) if out.exists() else {}
        table[key] = result
        text = json.dumps(table, indent=1)
    write_text_atomic(out, text + "\n")


def allow_unk(logp: torch.Tensor) -> torch.Tensor:  # the search before #13: <pad> and <start> only
    logp = logp.clone()
    logp[:, 0] = -math.inf
    logp[:, 1] = -math.inf
    return logp


def mention_f1(hyps: list[str], refs: list[list[str]], forms: frozenset[str]) -> dict[str, float]:
    """F1 of "the caption mentions the word" against "a reference mentions it", over all photos (DCC)."""
    tp = fp = fn = 0
    for h, rs in zip(hyps, refs):
        said, truth = mentions(h, forms), any(mentions(r, forms) for r in rs)
        tp, fp, fn = tp + (said and truth), fp + (said and not truth), fn + (truth and not said)
    return {"f1": 2 * tp / max(2 * tp + fp + fn, 1), "tp": tp, "fp": fp, "fn": fn}


def fit_calibration(scores: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    top = scores.topk(5, dim=1).indices  # calibrate where it matters: each photo's top words
    return fit_platt(scores.gather(1, top).flatten(), labels.gather(1, top).flatten())


def word_labels(det, refs) -> torch.Tensor:
    return torch.tensor([[bool(det.table.names(w) & {t for r in rs for t in tokenize(r)}) for w in det.table.words]
                         for rs in refs], dtype=torch.float32)


def tagger_at_home(split: str, thresholds: list[float]) -> dict:
    """The shipped Flickr8k tagger on a split, plain vs open vocabulary (its encoder is the frozen Lite0, so the
    cached features serve both): tag micro P/R/F1 against the captions' tags. A detected word outside the tag
    vocabulary counts as wrong here, though it may be right: this measures the loss at home, not the gain."""
    from img2text2img.metrics.tags import tag_scores
    from img2text2img.models.tagger import load_tagger
    from img2text2img.models.tagger.openvocab import tagger_detector
    from img2text2img.openvocab.tags import is_tag_word, merge_tags
    from img2text2img.tags import dataset_tags, order_tags

    tagger = load_tagger(None).eval()
    ds = load_dataset("flickr8k")
    names = ds.split(split)
    gold_all = dataset_tags(ds)
    gold = [order_tags(gold_all.get(n, []), tagger.vocab) for n in names]
    pooled = encode_dataset(tagger.config.encoder, ds, grid=False).pooled_for(names).float()
    det = tagger_detector(tagger, strict=True)
    with torch.inference_mode():
        head = tagger.predict_features(tagger.pool(pooled, None), top=None)
        dets = det.detect(pooled, top=10, min_score=min(thresholds))
    rows = {"plain": [[t for t, _ in h] for h in head],
            "nouns_adjectives": [[t for t, _ in h if is_tag_word(t)] for h in head]}
    for th in thresholds:
        rows[f"open_vocab@{th}"] = [[t for t, _ in merge_tags(h, [x for x in d if x.score >= th], top=None)]
                                    for h, d in zip(head, dets)]
    result = {"date": date.today().isoformat(), "split": split, "photos": len(names),
              "tag_threshold": tagger.settings.threshold,
              **{k: {m: v for m, v in tag_scores(r, gold).items() if m.startswith("micro")} for k, r in rows.items()},
              "photos_with_new_words": {k: sum(any(t not in tagger.vocab.stoi for t in r) for r in v)
                                        for k, v in rows.items() if k.startswith("open")}}
    return result


def broken_on_drawings(model, ds, n: int) -> dict:
    """<unk> captions of the round trip's drawings (the shipped Flickr8k generator's pictures of the first `n` test
    captions), with <unk> allowed (the search before #13) and forbidden (now)."""
    from img2text2img.models.generator import generate_images

    prompts = [ds.captions[im][0] for im in ds.split("test")[:n]]
    pictures = generate_images(prompts, data="flickr8k", seed=0)
    counts = {}
    for key, mask in (("before", allow_unk), ("after", search_module.never_emit)):
        keep, search_module.never_emit = search_module.never_emit, mask
        try:
            broken = 0
            for i in range(0, n, 32):
                pooled, grid = model.encode_images(pictures[i:i + 32])
                ids, _ = search_module.beam_search(model.decoder, pooled.float(), grid.float() if model.config.uses_grid
                                                   else None, model.settings.beam_size, model.config.max_len,
                                                   model.settings.length_alpha)
                broken += sum(UNK_ID in (r[: r.index(END_ID)] if END_ID in r else r) for r in ids.tolist())
        finally:
            search_module.never_emit = keep
        counts[key] = broken
    return {"drawings": n, "broken_unk_before": counts["before"], "broken_unk_after": counts["after"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="captioner (shipped name or folder; default the Flickr8k one)")
    ap.add_argument("--split", default="test")
    ap.add_argument("--limit", type=int, default=0, help="first N photos of the split (0: all)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--threshold", type=float, default=None, help="detector confidence (default: the model's)")
    ap.add_argument("--words", type=int, default=None, help="at most this many forced words per caption "
                    "(1 or 2; default: the model's)")
    ap.add_argument("--thresholds", default="", help="comma-separated: score every threshold (choose on val)")
    ap.add_argument("--no-coco", action="store_true", help="skip the COCO scores (need Java)")
    ap.add_argument("--no-unk-count", action="store_true", help="skip the <unk>-allowed search")
    ap.add_argument("--held-out", default="", help="DCC: comma-separated words, synonyms after '/' "
                    "(horse/pony,car): mention F1 over the photos and METEOR on those whose references name it")
    ap.add_argument("--calibrate", action="store_true", help=f"fit the detectors' Platt scaling into {CALIBRATION.name}")
    ap.add_argument("--out", type=Path, default=None, help="write the numbers as JSON")
    ap.add_argument("--key", default=None, help="with --out: write them as this entry of the file, keeping others")
    ap.add_argument("--drawings", type=int, default=0, help="only count <unk> captions of N round-trip drawings")
    ap.add_argument("--tagger", action="store_true", help="score the shipped tagger instead, plain vs open vocab")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.drawings:
        return write_result(a.out, a.key, {"date": date.today().isoformat(), **broken_on_drawings(
            load_captioner(a.model), load_dataset("flickr8k"), a.drawings)})
    if a.tagger:
        return write_result(a.out, a.key, tagger_at_home(
            a.split, [float(t) for t in a.thresholds.split(",") if t.strip()] or [0.2, 0.3, 0.5, 0.7]))
    model = load_captioner(a.model)
    if a.threshold is not None:
        model.settings.open_vocab_threshold = a.threshold
    if a.words is not None:
        model.settings.open_vocab_words = a.words
    sweep = sorted(float(t) for t in a.thresholds.split(",") if t.strip())
    ov = OpenVocab(model)
    ds = load_dataset("flickr8k")
    names = ds.split(a.split)[: a.limit or None]
    refs = [ds.captions[n] for n in names]
    model.warm_up()
    plain, ov_text, raw = [], [], []
    forced: dict[float, list[str]] = {}
    t_enc = t_plain = t_ov = 0.0
    unk_before = 0
    s = model.settings
    for i in tqdm(range(0, len(names), a.batch_size), desc="photos", unit="batch", file=sys.stderr):
        ims = [load_image(ds.image_path(n)) for n in names[i:i + a.batch_size]]
        t0 = time.perf_counter()
        pooled, grid = model.encode_images(ims)
        t_enc += time.perf_counter() - t0
        if not a.no_unk_count:
            keep, search_module.never_emit = search_module.never_emit, allow_unk
            try:
                with torch.inference_mode():  # the features are inference tensors; the decoder's weights need grad
                    ids, _ = search_module.beam_search(model.decoder, pooled.float(), grid.float() if model.config.uses_grid
                                                       else None, s.beam_size, model.config.max_len,
                                                       s.length_alpha)
            finally:
                search_module.never_emit = keep
            for row in ids.tolist():
                unk_before += UNK_ID in (row[: row.index(END_ID)] if END_ID in row else row)
        t0 = time.perf_counter()
        out = model.decode_features(pooled, grid, open_vocab=False)
        t1 = time.perf_counter()
        if sweep:  # one constrained decode per threshold: which word is forced can depend on it
            g = grid.float() if model.config.uses_grid else None
            for t in sweep:
                new = ov.redecode(pooled.float(), g, out, s.beam_size, model.config.max_len, t, s.open_vocab_words)
                forced.setdefault(t, []).extend(" ".join(new[j][0]) if j in new else r.text
                                                for j, r in enumerate(out))
        elif not a.calibrate:  # the calibration it would use is being fitted
            ovr = model.decode_features(pooled, grid, open_vocab=True)
            t_ov += time.perf_counter() - t1
            ov_text += [r.text for r in ovr]
        t_plain += t1 - t0
        plain += [r.text for r in out]
        if a.calibrate:
            raw.append(ov.detector.raw_scores(pooled))
    n = len(names)
    result = {"date": date.today().isoformat(), "model": str(a.model or "captioner"), "split": a.split, "photos": n,
              "threads": a.threads, "encoder_fine_tuned": bool(model.config.store_encoder),
              "detector": "adapter" if ov.detector.adapter is not None else "exact head",
              "lexical_words": 0 if ov.lexical is None else len(ov.lexical.words),  # DCC classifiers it may add
              "max_words": s.open_vocab_words,
              "broken_unk_before": None if a.no_unk_count else unk_before,
              "broken_unk_after": sum("<unk>" in t.split() for t in plain)}
    coco = None
    if not a.no_coco:
        from img2text2img.metrics.caption import coco_scores as coco

        result["coco_plain"] = coco(refs, plain)
    if sweep:
        result["sweep"] = {}
        for t in sweep:
            texts = forced[t]
            row = {"captions_changed": sum(x != p for x, p in zip(texts, plain))}
            if coco:
                row.update(coco(refs, texts))
            if a.held_out:  # choose the held-out model's threshold on val by its mean mention F1
                groups = [g.strip().split("/") for g in a.held_out.split(",") if g.strip()]
                row["held_out_mean_f1"] = sum(mention_f1(texts, refs, word_forms(w))["f1"] for w in groups) / len(groups)
            result["sweep"][str(t)] = row
    elif not a.calibrate:
        result["threshold"] = s.open_vocab_threshold
        result["captions_changed_by_open_vocab"] = sum(p != o for p, o in zip(plain, ov_text))
        result["ms_per_photo"] = {"encode": 1000 * t_enc / n, "search": 1000 * t_plain / n,
                                  "open_vocab_extra": 1000 * (t_ov - t_plain) / n}
        result["open_vocab_extra_percent"] = 100 * (t_ov - t_plain) / (t_enc + t_plain)
        result["examples"] = [{"image": nm, "plain": p, "open_vocab": o}
                              for nm, p, o in zip(names, plain, ov_text) if p != o][:20]
        if coco:
            result["coco_open_vocab"] = coco(refs, ov_text)
    if a.held_out and not sweep:
        result["held_out"] = {}
        for group in [g.strip() for g in a.held_out.split(",") if g.strip()]:
            words = group.split("/")
            forms = word_forms(words)
            rows = [j for j, rs in enumerate(refs) if any(mentions(r, forms) for r in rs)]
            entry = {"photos_mentioning": len(rows), "closed": mention_f1(plain, refs, forms),
                     "open": mention_f1(ov_text, refs, forms)}
            if coco and rows:
                for key, texts in (("closed", plain), ("open", ov_text)):
                    entry[key]["meteor"] = coco([refs[j] for j in rows], [texts[j] for j in rows])["coco_meteor"]
            result["held_out"][words[0]] = entry
        ho = result["held_out"].values()
        result["held_out_mean"] = {k: {"f1": sum(e[k]["f1"] for e in ho) / len(ho),
                                       **({"meteor": sum(e[k]["meteor"] for e in ho) / len(ho)} if coco else {})}
                                   for k in ("closed", "open")}
    if a.calibrate:
        table = json.loads(CALIBRATION.read_text()) if CALIBRATION.exists() else {}
        enc = model.config.encoder
        fits = {calibration_key(enc, ov.detector.adapter is not None): (ov.detector, torch.cat(raw))}
        if ov.detector.adapter is not None:  # the frozen encoder too (the tagger's, a frozen-feature captioner's)
            frozen = word_detector(enc)
            pooled = encode_dataset(enc, ds, grid=False, progress=True).pooled_for(names).float()
            fits[calibration_key(enc, False)] = (frozen, frozen.raw_scores(pooled))
        result["calibration"] = {}
        for key, (det, scores) in fits.items():
            a_, b_ = fit_calibration(scores, word_labels(det, refs))
            table[key] = {"a": a_, "b": b_, "photos": n, "split": a.split, "date": result["date"]}
            result["calibration"][key] = table[key]
        write_text_atomic(CALIBRATION, json.dumps(table, indent=1) + "\n")
    write_result(a.out, a.key, result)


if __name__ == "__main__":
    main()
