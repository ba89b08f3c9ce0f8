"""Round-trip evaluation: the toolkit checks itself by going around the loop.

Caption -> image -> caption: a reference caption is drawn by the generator and the drawing is captioned again; the
re-caption is scored with corpus BLEU against the original photo's references. A raw BLEU number says little on its
own, so it is placed between two bounds measured on the same images with the same captioner:
  upper = the captioner on the real photo (what a perfect generator could give back),
  lower = the captioner on a blank mid-grey image, and on a random other test photo (what no information gives).
The normalised score (round trip - lower) / (upper - lower) is ~1 when the drawings carry everything the captioner
can read from the photos and ~0 when they carry nothing.

Image -> caption -> image: the real photo is captioned, the caption drawn, and the drawing compared with the photo in
encoder feature space (cosine similarity vs a random other photo, and retrieval recall among 100 test photos).

The module works on plain callables (`caption_fn`, `generate_fn`, `embed_fn`) so that tests can plug in stubs
(a generator that returns the real photo must score ~1, one that returns grey ~0).
"""
from __future__ import annotations

import base64
import html
import io
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image

from img2text2img.data.captions import CaptionDataset
from img2text2img.data.images import load_image
from img2text2img.data.shapes import draw_caption
from img2text2img.errors import I2TError
from img2text2img.io import write_text_atomic
from img2text2img.metrics.caption import corpus_bleu_scores
from img2text2img.models.generator import to_pil
from img2text2img.models.names import DATA_SETS, default_model
from img2text2img.models.names import default_model_dir as names_default_dir
from img2text2img.vocab import tokenize

CaptionFn = Callable[[list[Image.Image]], list[str]]
GenerateFn = Callable[[list[str], int], list[Image.Image]]  # (prompts, seed) -> images
EmbedFn = Callable[[list[Image.Image]], torch.Tensor]  # images -> [N, D] features


@dataclass
class RoundTripRow:
    image: str
    reference: str  # the caption sent through the generator
    recaption: str  # what the captioner read from the drawing
    real_caption: str  # what the captioner read from the real photo
    bleu1: float  # sentence BLEU of the re-caption vs the 5 references (smoothed; for the report only)
    bleu4: float


@dataclass
class RoundTripResult:
    scores: dict
    rows: list[RoundTripRow] = field(default_factory=list)
    images: dict[str, Image.Image] = field(default_factory=dict)  # keys "<image>:real", "<image>:gen", "<image>:i2i"


def normalise(value: float, lower: float, upper: float) -> float | None:
    span = upper - lower
    return None if abs(span) < 1e-9 else (value - lower) / span


def grey_image(size: int = 224) -> Image.Image:
    return Image.new("RGB", (size, size), (128, 128, 128))


def roundtrip_pairs(dataset: CaptionDataset, split: str = "test", limit: int | None = 100,
                    captions_per_image: int = 1, seed: int = 0) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """The first `limit` images of `split`, each one's unrelated photo, and the (image, caption) pairs sent round.

    A function of its own so that anything comparing generators (scripts/compare_generators.py) sends exactly the
    captions `evaluate_roundtrip` sends for the same seed, and its scores stay comparable with the tool's."""
    rng = random.Random(seed)
    images = list(dataset.split(split))[: limit or None]
    if not images:
        raise I2TError(f"split {split!r} of {dataset.name} has no images")
    # A random derangement: every image gets a different photo as its "unrelated image" lower bound.
    order = list(range(len(images)))
    rng.shuffle(order)
    others = list(images)
    for j, i in enumerate(order):
        others[i] = images[order[(j + 1) % len(order)]]
    pairs = []
    for im in images:
        caps = dataset.captions[im]
        chosen = caps if captions_per_image >= len(caps) else rng.sample(caps, captions_per_image)
        pairs += [(im, c) for c in chosen]
    return images, others, pairs


def evaluate_roundtrip(
    dataset: CaptionDataset,
    caption_fn: CaptionFn,
    generate_fn: GenerateFn,
    embed_fn: EmbedFn | None = None,
    split: str = "test",
    limit: int | None = 100,
    captions_per_image: int = 1,
    seed: int = 0,
    retrieval_pool: int = 100,
    batch_size: int = 32,
    progress: Callable[[int, int], None] | None = None,
) -> RoundTripResult:
    """Run both loops over the first `limit` images of `split` and return scores, per-row results and images."""
    images, others, pairs = roundtrip_pairs(dataset, split, limit, captions_per_image, seed)
    refs = {im: [tokenize(c) for c in dataset.captions[im]] for im in images}
    photos = {im: load_image(dataset.image_path(im)) for im in images}

    total = len(pairs) + 3 * len(images)
    done = 0

    def tick(n: int) -> None:
        nonlocal done
        done += n
        if progress:
            progress(done, total)

    def batched_caption(pics: list[Image.Image]) -> list[str]:
        out: list[str] = []
        for i in range(0, len(pics), batch_size):
            out += caption_fn(pics[i:i + batch_size])
            tick(min(batch_size, len(pics) - i))
        return out

    real_caps = dict(zip(images, batched_caption([photos[im] for im in images])))
    grey_cap = caption_fn([grey_image(photos[images[0]].width)])[0]
    other_caps = dict(zip(images, batched_caption([photos[o] for o in others])))

    gen_imgs: list[Image.Image] = []
    recaps: list[str] = []
    for i in range(0, len(pairs), batch_size):
        chunk = pairs[i:i + batch_size]
        drawn = generate_fn([c for _, c in chunk], seed + i)
        gen_imgs += drawn
        recaps += caption_fn(drawn)
        tick(len(chunk))

    def bleu(hyps: Sequence[str], keys: Sequence[str]) -> dict:
        return corpus_bleu_scores([refs[k] for k in keys], [tokenize(h) for h in hyps])

    keys = [im for im, _ in pairs]
    rt = bleu(recaps, keys)
    upper = bleu([real_caps[k] for k in keys], keys)
    lower_grey = bleu([grey_cap] * len(keys), keys)
    lower_other = bleu([other_caps[k] for k in keys], keys)
    scores: dict = {
        "n_images": len(images),
        "n_pairs": len(pairs),
        "roundtrip": rt,
        "upper_real_photo": upper,
        "lower_grey": lower_grey,
        "lower_other_photo": lower_other,
        "grey_caption": grey_cap,
    }
    for b in ("bleu1", "bleu4"):
        scores[f"normalised_{b}"] = normalise(rt[b], lower_grey[b], upper[b])
        scores[f"normalised_{b}_vs_other_photo"] = normalise(rt[b], lower_other[b], upper[b])

    rows = []
    result_images: dict[str, Image.Image] = {}
    for (im, ref), rc, g in zip(pairs, recaps, gen_imgs):
        s = _sentence_bleu(refs[im], tokenize(rc))
        rows.append(RoundTripRow(im, ref, rc, real_caps[im], s[0], s[1]))
        result_images.setdefault(f"{im}:real", photos[im])
        result_images.setdefault(f"{im}:gen", g)

    if embed_fn is not None:
        i2i_imgs = []
        for i in range(0, len(images), batch_size):
            chunk = images[i:i + batch_size]
            i2i_imgs += generate_fn([real_caps[k] for k in chunk], seed + 10_000 + i)
            tick(len(chunk))
        for im, g in zip(images, i2i_imgs):
            result_images[f"{im}:i2i"] = g
        scores["image_to_image"] = image_similarity(
            [photos[im] for im in images], i2i_imgs, [photos[o] for o in others], embed_fn, retrieval_pool, batch_size)
    return RoundTripResult(scores, rows, result_images)


def image_similarity(real: list[Image.Image], generated: list[Image.Image], unrelated: list[Image.Image],
                     embed_fn: EmbedFn, pool: int = 100, batch_size: int = 32) -> dict:
    """Cosine similarity of generated vs its real photo and vs an unrelated photo; recall@1/@5 of the real photo among
    the first `pool` real photos when retrieved by the generated image."""

    def embed(pics: list[Image.Image]) -> torch.Tensor:
        feats = [embed_fn(pics[i:i + batch_size]) for i in range(0, len(pics), batch_size)]
        return torch.nn.functional.normalize(torch.cat(feats).float(), dim=-1)

    r, g, u = embed(real), embed(generated), embed(unrelated)
    cos_real = (r * g).sum(-1)
    cos_other = (u * g).sum(-1)
    n = min(pool, len(real))
    sims = g[:n] @ r[:n].T  # [n generated, n real]
    ranks = (sims > sims.diagonal().unsqueeze(1)).sum(1)  # how many real photos beat the true one
    return {
        "cosine_generated_vs_real": float(cos_real.mean()),
        "cosine_generated_vs_other": float(cos_other.mean()),
        "pool": n,
        "recall_at_1": float((ranks < 1).float().mean()),
        "recall_at_5": float((ranks < 5).float().mean()),
        "chance_recall_at_1": 1 / n,
        "chance_recall_at_5": min(5, n) / n,
    }


def _sentence_bleu(refs: list[list[str]], hyp: list[str]) -> tuple[float, float]:
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    if not hyp:
        return 0.0, 0.0
    sm = SmoothingFunction().method1
    return (sentence_bleu(refs, hyp, weights=(1, 0, 0, 0), smoothing_function=sm),
            sentence_bleu(refs, hyp, weights=(0.25,) * 4, smoothing_function=sm))


# ---------------------------------------------------------------------------------------------------------------
# Outputs a person can look at


def _data_uri(img: Image.Image, size: int = 128) -> str:
    img = img.copy()
    img.thumbnail((size, size))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def render_html(result: RoundTripResult, title: str = "img2text2img round trip") -> str:
    """A self-contained page (images embedded as data URIs): the scores, then one row per caption sent around."""
    s = result.scores
    head = [
        ("BLEU-4 round trip", s["roundtrip"]["bleu4"]), ("BLEU-4 upper (real photo)", s["upper_real_photo"]["bleu4"]),
        ("BLEU-4 lower (grey)", s["lower_grey"]["bleu4"]), ("BLEU-4 lower (other photo)", s["lower_other_photo"]["bleu4"]),
        ("normalised BLEU-4", s["normalised_bleu4"]), ("normalised BLEU-1", s["normalised_bleu1"]),
    ]
    parts = [
        "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{html.escape(title)}</title>",
        ("<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #ccc;"
         "padding:4px 8px;vertical-align:middle}img{image-rendering:pixelated;width:128px;height:128px}</style>"),
        "</head><body>", f"<h1>{html.escape(title)}</h1>", "<table><tbody>",
    ]
    parts += [f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in head]
    parts += ["</tbody></table>", "<h2>Rows</h2>", ('<table id="rows"><thead><tr><th>#</th><th>original photo</th>'
              "<th>reference caption (sent to the generator)</th><th>generated image</th><th>re-caption</th>"
              "<th>caption of the real photo</th><th>BLEU-1</th><th>BLEU-4</th></tr></thead><tbody>")]
    for i, r in enumerate(result.rows):
        real = result.images.get(f"{r.image}:real")
        gen = result.images.get(f"{r.image}:gen")
        parts.append(
            f'<tr class="row"><td>{i + 1}</td>'
            f'<td><img alt="{html.escape(r.image)}" src="{_data_uri(real) if real else ""}"><br>{html.escape(r.image)}</td>'
            f"<td>{html.escape(r.reference)}</td>"
            f'<td><img alt="generated" src="{_data_uri(gen) if gen else ""}"></td>'
            f"<td>{html.escape(r.recaption)}</td><td>{html.escape(r.real_caption)}</td>"
            f"<td>{r.bleu1:.3f}</td><td>{r.bleu4:.3f}</td></tr>")
    parts += ["</tbody></table>", "</body></html>"]
    return "\n".join(parts)


def write_report(result: RoundTripResult, out: str | Path, title: str = "img2text2img round trip") -> dict[str, Path]:
    """Write `roundtrip.json` and `report.html` into `out` (atomically, each)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    payload = {"scores": result.scores, "rows": [r.__dict__ for r in result.rows]}
    write_text_atomic(out / "roundtrip.json", json.dumps(payload, indent=2))
    write_text_atomic(out / "report.html", render_html(result, title))
    return {"json": out / "roundtrip.json", "html": out / "report.html"}


# ---------------------------------------------------------------------------------------------------------------
# Models -> the callables above


# The shipped models that belong together, per dataset (from the one names table): a round trip only means
# something when the captioner and the generator were trained on the same kind of data (the shapes generator cannot
# draw Flickr8k sentences).
SHIPPED = {data: {kind: default_model(kind, data).folder for kind in ("captioner", "generator")} for data in DATA_SETS}


def default_model_dir(kind: str, data: str) -> Path:
    """The shipped `kind` ("captioner" / "generator") for dataset `data`, or a one-line error naming what to pass."""
    if data not in SHIPPED:
        raise I2TError(f"no {kind} for {data} ships with this version; pass --{kind} DIR (a trained {kind} folder)")
    return names_default_dir(kind, data)


def rule_based_drawings(prompts: list[str], seed: int) -> list[Image.Image]:
    """A `GenerateFn` for the shapes set: each prompt drawn by the exact drawing rules (`data.shapes.draw_caption`,
    prompt i with seed + i; whatever a prompt leaves open is picked at random). Why: the round trip of this perfect
    generator is the ceiling any learned shapes generator can reach, so scores are read against it."""
    return [draw_caption(p, seed + i) for i, p in enumerate(prompts)]


def model_functions(captioner, generator, encoder=None, beam_size: int | None = None,
                    temperature: float | None = None) -> tuple[CaptionFn, GenerateFn, EmbedFn | None]:
    """Wrap loaded models as the callables `evaluate_roundtrip` takes (`beam_size=None`: the captioner's own search,
    so a round trip reads the drawings the way the captioner reads photos; `temperature=None`: the generator's own)."""
    def caption_fn(images: list[Image.Image]) -> list[str]:
        return [r.text for r in captioner.caption_images(images, beam_size=beam_size)]

    def generate_fn(prompts: list[str], seed: int) -> list[Image.Image]:
        return to_pil(generator.generate(prompts, n=1, seed=seed, temperature=temperature))

    embed_fn = None
    if encoder is not None:
        tf = encoder.transform()

        @torch.inference_mode()
        def embed_fn(images: list[Image.Image]) -> torch.Tensor:
            device = next(encoder.parameters()).device  # a CUDA encoder (--device auto) gets its input there
            pooled, _ = encoder(torch.stack([tf(im) for im in images]).to(device))
            return pooled.cpu()

    return caption_fn, generate_fn, embed_fn
