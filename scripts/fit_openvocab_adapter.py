"""Fit the open-vocabulary adapter of a captioner whose encoder was fine-tuned (#13): a linear map from its pooled
features to the frozen ImageNet encoder's, so the exact ImageNet head can name objects from the features the
captioner already computed (a second frozen CNN pass would cost more than captioning itself on a CPU).

    python scripts/fit_openvocab_adapter.py --out docs/bench/openvocab.json --key adapter   # the shipped captioner

Ridge regression on Flickr8k training photos (closed form); the ridge strength is chosen on validation photos by
how often the adapted head's top word equals the frozen head's. Writes img2text2img/openvocab/adapters/<enc>-<hash>
(float16) and prints the agreement on test photos.
"""
from __future__ import annotations

import argparse
import json
import sys
from datetime import date
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from img2text2img.data import load_dataset, load_image
from img2text2img.features import encode_dataset
from img2text2img.io import write_text_atomic
from img2text2img.models.captioner import load_captioner
from img2text2img.openvocab import WordDetector
from img2text2img.openvocab.detector import ADAPTERS, adapter_path


def fine_tuned_features(model, ds, names: list[str], batch_size: int = 32) -> torch.Tensor:
    out = []
    for i in tqdm(range(0, len(names), batch_size), desc="encode (fine-tuned)", unit="batch", file=sys.stderr):
        out.append(model.encode_images([load_image(ds.image_path(n)) for n in names[i:i + batch_size]])[0].float())
    return torch.cat(out)


def ridge(x: torch.Tensor, y: torch.Tensor, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """W [Dy, Dx], b [Dy] minimising |x W^T + b - y|^2 + lam * n * |W|^2 (features centred, bias free)."""
    mx, my = x.mean(0), y.mean(0)
    xc, yc = (x - mx).double(), (y - my).double()
    w = torch.linalg.solve(xc.T @ xc + lam * len(x) * torch.eye(x.shape[1], dtype=torch.float64), xc.T @ yc).T
    return w.float(), (my - w.float() @ mx)


def top_word_agreement(det: WordDetector, frozen: WordDetector, x: torch.Tensor, g: torch.Tensor) -> float:
    return float((det.raw_scores(x).argmax(1) == frozen.raw_scores(g).argmax(1)).float().mean())


def confident_agreement(det: WordDetector, frozen: WordDetector, x: torch.Tensor, g: torch.Tensor,
                        th: float = 0.5) -> dict[str, float]:
    """Where either head is sure (top raw score >= th): how often `det`'s sure word is the frozen head's top word,
    how many of its sure words the frozen head scores under 0.1, and how many frozen sure words it finds."""
    want, have = frozen.raw_scores(g), det.raw_scores(x)
    sc, w = have.max(1)
    sure, fsure = sc >= th, want.max(1).values >= th
    found = have.gather(1, want.argmax(1, keepdim=True))[:, 0] >= th
    return {"sure": int(sure.sum()), "precision": float((w == want.argmax(1))[sure].float().mean()),
            "sure_but_frozen_below_0.1": int((sure & (want.gather(1, w[:, None])[:, 0] < 0.1)).sum()),
            "recall_of_frozen_sure": float((found & fsure).sum() / fsure.sum().clamp(min=1))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=None, help="captioner with a fine-tuned encoder (default: the shipped one)")
    ap.add_argument("--train-photos", type=int, default=3000, help="first N Flickr8k training photos to fit on")
    ap.add_argument("--features", type=Path, default=None, help="precomputed fine-tuned pooled features (.npy, rows "
                    "= train[:N] + val + test) instead of encoding")
    ap.add_argument("--out", type=Path, default=None, help="write the fit's numbers as JSON")
    ap.add_argument("--key", default=None, help="with --out: write them as this entry of the file, keeping others")
    a = ap.parse_args()
    torch.set_num_threads(1)
    model = load_captioner(a.model)
    if not model.config.store_encoder:
        sys.exit("this captioner's encoder is frozen: the exact head reads its features, no adapter needed")
    ds = load_dataset("flickr8k")
    split = {"train": ds.split("train")[: a.train_photos], "val": ds.split("val"), "test": ds.split("test")}
    names = split["train"] + split["val"] + split["test"]
    cache = encode_dataset(model.config.encoder, ds, grid=False, progress=True)
    g = cache.pooled_for(names).float()
    x = torch.from_numpy(np.load(a.features)).float() if a.features else fine_tuned_features(model, ds, names)
    n_tr, n_va = len(split["train"]), len(split["val"])
    xs = {"train": x[:n_tr], "val": x[n_tr:n_tr + n_va], "test": x[n_tr + n_va:]}
    gs = {"train": g[:n_tr], "val": g[n_tr:n_tr + n_va], "test": g[n_tr + n_va:]}
    frozen = WordDetector(model.config.encoder, calibration=(1.0, 0.0))
    enc = model.ensure_encoder()
    best = None
    tried = {}
    with torch.inference_mode():
        for lam in (1e-4, 1e-3, 1e-2, 1e-1):
            w, b = ridge(xs["train"], gs["train"], lam)
            lin = nn.Linear(w.shape[1], w.shape[0]).requires_grad_(False)
            lin.weight.copy_(w)
            lin.bias.copy_(b)
            det = WordDetector(model.config.encoder, calibration=(1.0, 0.0), adapter=lin)
            tried[lam] = top_word_agreement(det, frozen, xs["val"], gs["val"])
            if best is None or tried[lam] > tried[best[0]]:
                best = (lam, lin, det)
        lam, lin, det = best
        plain = WordDetector(model.config.encoder, calibration=(1.0, 0.0))  # the head on fine-tuned features
        result = {"date": date.today().isoformat(), "train_photos": n_tr, "ridge": lam,
                  "val_top_word_agreement_by_ridge": {str(k): v for k, v in tried.items()},
                  "test_top_word_agreement": {"adapter": top_word_agreement(det, frozen, xs["test"], gs["test"]),
                                              "no_adapter": top_word_agreement(plain, frozen, xs["test"], gs["test"])},
                  "test_sure_words_at_0.5": {"adapter": confident_agreement(det, frozen, xs["test"], gs["test"]),
                                             "no_adapter": confident_agreement(plain, frozen, xs["test"], gs["test"])}}
    ADAPTERS.mkdir(exist_ok=True)
    path = adapter_path(enc)
    save_file({"weight": lin.weight.detach().half().contiguous(), "bias": lin.bias.detach().half().contiguous()},
              str(path), metadata={"encoder": model.config.encoder, "ridge": str(lam), "train_photos": str(n_tr)})
    result["adapter"] = str(path.relative_to(ADAPTERS.parent.parent.parent))
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        if a.key:
            table = json.loads(a.out.read_text()) if a.out.exists() else {}
            table[a.key] = result
            text = json.dumps(table, indent=1)
        write_text_atomic(a.out, text + "\n")


if __name__ == "__main__":
    main()
