#!/usr/bin/env python
"""Score trained generators and write the generator section of docs/RESULTS.md.

    python scripts/results_generator.py --data shapes --run vae-attn=/path/to/run --run vae=/other/run@0.7
    python scripts/results_generator.py --data flickr8k --run pixel=RUN1 --run vae=RUN2 --ship vae
    python scripts/results_generator.py --report-only     # rebuild the section from docs/results/generator-*.json

For every `NAME=RUN[@TEMPERATURE]` (a run folder: its `last/` checkpoint is scored; or a checkpoint folder):
- the Fréchet distance between one drawing per test image (from its first caption) and the real test images, in
  MobileNetV2 pooled features at 128 px (NOT the standard FID, whose Inception weights we do not have), with the
  cosine of each drawing to its own photo vs another photo (`evaluate_generator`);
- the round trip with the dataset's shipped captioner (caption -> drawing -> caption BLEU, normalised between the
  captioner on a grey image and on the real photo; `evaluate_roundtrip`);
- a sample grid for fixed prompts, `docs/img/generator-<data>-<name>.png`.
Each goes to `docs/results/generator-<data>-<name>.json`; the table is generated from those files only.
`--ship NAME` copies that generator (drawing weights only) into the package as the dataset's default.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

from results_doc import doc_for, replace_section  # scripts/ is on sys.path when a script runs

from img2text2img.errors import run_reporting_errors

ROOT = Path(__file__).resolve().parent.parent
BEGIN, END = "<!-- generator:begin -->", "<!-- generator:end -->"


def parse_run(spec: str) -> tuple[str, Path, float | None]:
    name, _, rest = spec.partition("=")
    if not rest:
        raise SystemExit(f"--run wants NAME=RUN[@TEMPERATURE], got {spec!r}")
    path, _, temp = rest.partition("@")
    p = Path(path)
    if (p / "last" / "config.json").exists():
        p = p / "last"
    return name, p, float(temp) if temp else None


def _model_id(folder: str | Path | None) -> dict | None:
    """Where a checkpoint is and which weights it holds (its sha256), so a row says exactly which model it used."""
    if not folder:
        return None
    from img2text2img.models import resolve_checkpoint_dir

    p = resolve_checkpoint_dir(folder)
    cfg = json.loads((p / "config.json").read_text()) if (p / "config.json").exists() else {}
    shown = str(p.resolve().relative_to(ROOT)) if p.resolve().is_relative_to(ROOT) else str(p)
    return {"path": shown, "weights_sha256": cfg.get("weights_sha256"), "source_run": cfg.get("info", {}).get("source_run")}


def _dataset(data: str) -> str:
    """The dataset a --data choice is scored on (shapes: its 5,000-picture set)."""
    return "shapes:5000" if data == "shapes" else data


def score(name: str, path: Path, temperature: float | None, data: str, n_frechet: int, n_roundtrip: int,
          seed: int, out_dir: Path, judge: Path | None = None, reranker: Path | None = None,
          candidates: int = 1, guidance: float | None = None) -> dict:
    import torch

    from img2text2img.checkpoint import load_checkpoint
    from img2text2img.data import load_dataset
    from img2text2img.models import load_model
    from img2text2img.models.encoders import create_encoder
    from img2text2img.models.generator import Generator, PromptWarning, save_grid
    from img2text2img.roundtrip import default_model_dir, evaluate_roundtrip, model_functions
    from img2text2img.train.generator import evaluate_generator, guide, sample_prompts

    ck = load_checkpoint(path, kind="generator")  # read once: the model, and its step and training time
    gen = Generator.from_checkpoint(ck)
    if temperature is not None:
        gen.config.sample_temperature = temperature
    if guidance is not None:
        guide(gen, guidance, _dataset(data))
    info = {**ck.info, "train_seconds": ck.metrics.get("train_seconds")}
    judge = judge or default_model_dir("captioner", data)
    if reranker is not None:  # best of `candidates` samples, chosen by another captioner than the judge
        from img2text2img.rerank import reranked

        gen = reranked(gen, reranker, candidates, judge=judge)
    t0 = time.time()
    ds_name = _dataset(data)
    fr = evaluate_generator(gen, data=ds_name, split="test", n=n_frechet, seed=seed)
    cap = load_model(judge, kind="captioner")
    summary = path.parent / "summary.json"  # a run's last/ sits beside its summary, which names any critic
    run_summary = json.loads(summary.read_text()) if path.name == "last" and summary.exists() else {}
    critic = _model_id(run_summary.get("critic"))
    if critic:  # the hash recorded at training time wins: the path may hold another captioner by now
        critic["weights_sha256"] = run_summary.get("critic_weights_sha256") or critic["weights_sha256"]
        critic["weight"] = run_summary.get("critic_weight")
    enc = create_encoder("mobilenet_v2", pretrained=True).eval()
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PromptWarning)
        rt = evaluate_roundtrip(load_dataset(ds_name), *model_functions(cap, gen, enc), limit=n_roundtrip, seed=seed)
        grid = gen.generate(sample_prompts(data), n=2, seed=seed)
    img = ROOT / "docs" / "img" / f"generator-{data}-{name}.png"
    save_grid(grid, img, ncol=4, scale=2)
    s = rt.scores
    rec = {
        "name": name, "data": data, "run": str(path), "kind": gen.config.kind, "preset_config": gen.config.__dict__,
        "steps": info.get("step"), "train_seconds": info.get("train_seconds"),
        "temperature": gen.config.sample_temperature, "guidance": getattr(gen.config, "guidance", 1.0), "frechet": fr,
        "roundtrip": {"images": s["n_images"], "normalised_bleu4": s["normalised_bleu4"],
                      "normalised_bleu1": s["normalised_bleu1"], "bleu4": s["roundtrip"]["bleu4"],
                      "upper_bleu4": s["upper_real_photo"]["bleu4"], "lower_grey_bleu4": s["lower_grey"]["bleu4"],
                      "image_to_image": s.get("image_to_image")},
        "judge": _model_id(judge), "critic": critic,
        "reranker": {**_model_id(reranker), "candidates": candidates} if reranker is not None else None, "init_from": run_summary.get("init_from"),
        "samples": str(img.relative_to(ROOT)),
        "command": "python scripts/results_generator.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
                   f"{torch.get_num_threads()} threads",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "seconds": round(time.time() - t0, 1),
    }
    from img2text2img.io import write_text_atomic

    write_text_atomic(out_dir / f"generator-{data}-{name}.json", json.dumps(rec, indent=2, default=str))
    return rec


def ship(rec: dict, half: bool = False) -> Path:
    """The dataset's default generator in the package: drawing weights only, with the scores as metrics (`half`:
    in fp16, to keep the package small; re-score the shipped copy, its drawings can differ)."""
    from img2text2img.models import load_model
    from img2text2img.roundtrip import SHIPPED
    from img2text2img.train.generator import guide

    gen = load_model(rec["run"], kind="generator")
    gen.config.sample_temperature = rec["temperature"]
    guide(gen, rec.get("guidance", 1.0), _dataset(rec["data"]))
    dest = ROOT / "img2text2img" / "pretrained" / SHIPPED[rec["data"]]["generator"]
    info = {"source_run": rec["run"], "steps": rec["steps"], "date": rec["date"]}
    if Path(rec["run"]).resolve() == dest.resolve():  # re-shipped with other sampling: keep where it was trained
        before = json.loads((dest / "config.json").read_text()).get("info", {})
        info["trained_in"] = before.get("trained_in") or before.get("source_run")
        info["steps"] = info["steps"] or before.get("steps")
    gen.save(dest, full=False, half=half, metrics={"frechet": rec["frechet"], "roundtrip": rec["roundtrip"]},
             info=info)
    return dest


def _sampling(config: dict) -> tuple:
    """How a generator draws: (temperature, guidance)."""
    return config.get("sample_temperature"), config.get("guidance", 1.0)


def _shipped_runs() -> dict[str, tuple]:
    """source run -> how each generator shipped in the package draws (a row is the shipped one only when it drew
    the same way)."""
    shipped = {}
    for cfg in (ROOT / "img2text2img" / "pretrained").glob("generator*/config.json"):
        c = json.loads(cfg.read_text())
        shipped[c.get("info", {}).get("source_run")] = _sampling(c["config"])
    return shipped


def _f(x, nd=3) -> str:
    return "n/a" if x is None else f"{x:.{nd}f}"


def _readers(r: dict) -> str:
    """'critic -> judge' by weights hash; a row judged by the very captioner it was trained against says so."""
    def short(m: dict | None) -> str:
        return "shipped at the row's date" if not m else f"`{(m.get('weights_sha256') or '?')[:8]}`"

    critic, judge = r.get("critic"), r.get("judge")
    head = f"{short(critic)} (weight {critic.get('weight')})" if critic else "none"
    same = critic and judge and critic.get("weights_sha256") == judge.get("weights_sha256")
    rr = r.get("reranker")
    rerank = f"; best of {rr['candidates']} by {short(rr)}" if rr else ""
    return f"{head} -> {short(judge)}" + (" **self-judged**" if same else "") + rerank


def section(results_dir: Path) -> str:
    recs = [json.loads(p.read_text()) for p in sorted(results_dir.glob("generator-*.json"))]
    recs = [r for r in recs if "frechet" in r and "roundtrip" in r]
    lines = [BEGIN, "## Generator", "",
             "Generated by `python scripts/results_generator.py` from `docs/results/generator-*.json`. Fréchet distance "
             "between one drawing per test image (from its first caption, seed 0) and the real test images, in "
             "**MobileNetV2 pooled features at 128 px** (*not* the standard FID, whose Inception weights we do not "
             "have); lower is better. Cosine: each drawing to its own photo vs to another photo (a gap means "
             "drawings follow their sentences). Round trip: caption -> drawing -> the dataset's shipped captioner, "
             "nltk BLEU-4 normalised between the captioner on a grey image (0) and on the real photo (1).", ""]
    shipped = _shipped_runs()
    lines += ["'train min' is the wall-clock of the run's last training segment (a resumed run counts only the part "
              "after its resume) with 1 torch thread on the shared 2-core machine. **shipped** marks the package's "
              "default for that dataset. Each round trip used the captioner shipped when its row was measured (the row's "
              "date); the round-trip section below uses the current one. 'critic -> judge': the captioner whose "
              "cross-entropy of the prompt was part of the training loss (`i2t train generator --critic`) and the "
              "captioner that scored the round trip, by the first 8 hex digits of their weights' sha256. A "
              "**self-judged** row says how well a generator learned to please one reader, not how well it draws. "
              "'best of k by X': every drawing (Fréchet, round trip and samples alike) is the one of k samples that "
              "captioner X, never the judge, finds its sentence most likely for (`img2text2img.rerank`, "
              "`--rerank-with X --candidates k`).", ""]
    for data in sorted({r["data"] for r in recs}):
        rows = [r for r in recs if r["data"] == data]
        lines += [f"### {data}", "",
                  "| model | kind | steps | train min | temperature | Fréchet | cosine own / other | pixel MSE "
                  "| round-trip BLEU-4 (normalised) | raw / upper / grey BLEU-4 | critic in training -> round-trip judge "
                  "| date |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in sorted(rows, key=lambda r: r["frechet"]["frechet_feature_distance"]):
            f, t = r["frechet"], r["roundtrip"]
            mins = "" if not r.get("train_seconds") else f"{r['train_seconds'] / 60:.0f}"
            drawn = (r["temperature"], r.get("guidance", 1.0))
            mark = " **shipped**" if shipped.get(r["run"]) == drawn else ""
            temp = r["temperature"] if drawn[1] == 1.0 else f"{r['temperature']}, guidance {drawn[1]}"
            lines.append(f"| {r['name']}{mark} | {r['kind']} | {r['steps']} | {mins} | {temp} "
                         f"| {f['frechet_feature_distance']:.1f} | {_f(f['cosine_to_own_image'])} / "
                         f"{_f(f['cosine_to_other_image'])} | {_f(f['pixel_mse'], 4)} | **{_f(t['normalised_bleu4'])}** "
                         f"({t['images']} images) | {_f(t['bleu4'])} / {_f(t['upper_bleu4'])} / "
                         f"{_f(t['lower_grey_bleu4'])} | {_readers(r)} | {r['date']} |")
        lines += ["", " ".join(f"![{r['name']}]({Path(r['samples']).relative_to('docs')})" for r in rows), ""]
        machines = sorted({r["machine"] for r in rows})
        lines += [f"Machine: {'; '.join(machines)}. Commands: " + "; ".join(sorted({f'`{r["command"]}`' for r in rows})), ""]
    lines.append(END)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default="shapes", choices=["shapes", "flickr8k"])
    ap.add_argument("--run", action="append", default=[], help="NAME=RUN[@TEMPERATURE], repeatable")
    ap.add_argument("--frechet-images", type=int, default=300)
    ap.add_argument("--roundtrip-images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--judge", type=Path, default=None,
                    help="captioner for the round trip (default: the dataset's shipped one); must differ from the "
                         "critic a run was trained with, or the score measures that reader's quirks")
    ap.add_argument("--rerank-with", type=Path, default=None, metavar="CAPTIONER",
                    help="draw --candidates samples per picture and keep the one this captioner finds the sentence "
                         "most likely for (must not be the judge)")
    ap.add_argument("--candidates", type=int, default=8, help="samples per picture with --rerank-with")
    ap.add_argument("--guidance", type=float, default=None,
                    help="draw every run with this guidance (Generator._decode; default: each model's own)")
    ap.add_argument("--ship", default=None, metavar="NAME", help="ship this scored generator as the data's default")
    ap.add_argument("--half", action="store_true", help="with --ship: store the shipped weights in fp16")
    ap.add_argument("--results", type=Path, default=ROOT / "docs" / "results")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "RESULTS.md")
    ap.add_argument("--report-only", action="store_true")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    args.results.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        for spec in args.run:
            name, path, temp = parse_run(spec)
            rec = score(name, path, temp, args.data, args.frechet_images, args.roundtrip_images, args.seed, args.results,
                        args.judge, args.rerank_with, args.candidates, args.guidance)
            print(f"{name}: Fréchet {rec['frechet']['frechet_feature_distance']:.1f}, normalised round-trip BLEU-4 "
                  f"{_f(rec['roundtrip']['normalised_bleu4'])} ({rec['seconds']} s)", flush=True)
    if args.ship:
        rec = json.loads((args.results / f"generator-{args.data}-{args.ship}.json").read_text())
        print(f"shipped {args.ship} to {ship(rec, args.half)}")
    doc = doc_for(args.results, args.doc, ROOT)
    replace_section(doc, section(args.results), BEGIN, END)
    print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
