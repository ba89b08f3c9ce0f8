"""`i2t roundtrip-eval`: caption -> image -> caption BLEU between its bounds, and image -> caption -> image."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import app
from img2text2img.cli.output import DeviceOption, console, note, warn


def default_roundtrip_data(data_dir: Path | None) -> str:
    """Flickr8k when it is on this machine (the photo-trained models), else the shapes set, which is generated on
    the spot, with a one-line note saying so."""
    from img2text2img import locations
    from img2text2img.errors import I2TError

    try:
        locations.flickr8k_dir(data_dir)
        return "flickr8k"
    except I2TError:
        note("Flickr8k not found (pass --data-dir or set $I2T_DATA); using the shapes set (--data shapes)")
        return "shapes"


@app.command("roundtrip-eval")
def roundtrip_eval(
    data: Annotated[str | None, typer.Option(help="flickr8k (the default when the dataset is found, else shapes with a "
                                                  "note), shapes, or a dataset folder.")] = None,
    split: Annotated[str, typer.Option(help="Dataset split to use.")] = "test",
    limit: Annotated[int, typer.Option(min=1, help="Number of images (each sends --per-image captions around).")] = 100,
    per_image: Annotated[int, typer.Option(min=1, max=5, help="Reference captions per image sent through the generator.")] = 1,
    captioner: Annotated[str | None, typer.Option(help="The judge: a shipped captioner's name or a captioner folder "
                                                    "(default: the shipped one for --data).")] = None,
    generator: Annotated[str | None, typer.Option(help="A shipped generator's name or a generator folder (default: "
                                                    "the shipped one for --data).")] = None,
    encoder: Annotated[str, typer.Option(help="Encoder for image->caption->image similarity ('none' to skip).")] = "mobilenet_v2",
    beam: Annotated[int | None, typer.Option(min=1, max=20, help="Beam width of the captioner (default: its own).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for roundtrip.json and report.html.")] = Path("runs/roundtrip"),
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset is (else $I2T_DATA, then ../shared).")] = None,
    seed: Annotated[int, typer.Option(help="Seed for caption sampling, unrelated-photo pairing and generator noise.")] = 0,
    rerank_with: Annotated[str | None, typer.Option(help="A captioner, name or folder (not the judge): each drawing is "
                                                         "the best of --candidates samples by its likelihood of the "
                                                         "sentence.")] = None,
    candidates: Annotated[int, typer.Option(min=1, max=256, help="Samples per drawing with --rerank-with.")] = 8,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="Latent noise scale of a vae/gan generator, "
                                                      "sampling temperature of a scene generator (default: the "
                                                      "model's own), e.g. to choose it on --split val.")] = None,
    guidance: Annotated[float | None, typer.Option(min=0.0, help="pixel/vae/gan generator: draw each sentence this "
                                                   "many times as far from the average training sentence (default: "
                                                   "the model's own), e.g. to choose it on --split val.")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Send captions through the generator and back through the captioner; score BLEU between the bounds
    (upper: captioner on the real photo; lower: on a grey image / an unrelated photo). Writes OUT/roundtrip.json and
    OUT/report.html (open it in a browser)."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from img2text2img.data import load_dataset
    from img2text2img.errors import I2TError
    from img2text2img.models import inference_device, load_model
    from img2text2img.models.names import resolve_model
    from img2text2img.roundtrip import default_model_dir, evaluate_roundtrip, model_functions, write_report

    torch.manual_seed(seed)
    if data is None:
        data = default_roundtrip_data(data_dir)
    ds = load_dataset(data, data_dir)
    key = "shapes" if ds.name.startswith("shape") else ds.name
    dev = inference_device(device)
    judge = resolve_model(captioner, "captioner") if captioner else default_model_dir("captioner", key)
    cap = load_model(judge, kind="captioner", device=dev)
    gen = load_model(resolve_model(generator, "generator") if generator else default_model_dir("generator", key),
                     kind="generator", device=dev)
    if guidance is not None:
        from img2text2img.train.generator import guide

        guide(gen, guidance, data, data_dir)
    if rerank_with is not None:
        from img2text2img.models.generator import reranked

        gen = reranked(gen, rerank_with, candidates, judge=judge)
    enc = None
    if encoder != "none":
        from img2text2img.models.encoders import create_encoder

        try:
            enc = create_encoder(encoder, pretrained=True).eval().to(dev)
        except I2TError as e:
            warn(f"image->caption->image similarity skipped: {e}")
    fns = model_functions(cap, gen, enc, beam_size=beam, temperature=temperature)
    with Progress(TextColumn("[bold]round trip"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task("rt", total=None)
        result = evaluate_roundtrip(ds, *fns, split=split, limit=limit, captions_per_image=per_image, seed=seed,
                                    progress=lambda done, total: bar.update(task, completed=done, total=total))
    if rerank_with is not None:
        result.scores["reranker"] = {"captioner": str(rerank_with), "candidates": candidates}
    if temperature is not None:
        result.scores["temperature"] = temperature
    if guidance is not None:
        result.scores["guidance"] = guidance
    paths = write_report(result, out, title=f"img2text2img round trip on {ds.name} {split} ({result.scores['n_pairs']} captions)")
    s = result.scores
    t = Table(title=f"round trip: {ds.name} {split}, {s['n_images']} images, {s['n_pairs']} captions")
    t.add_column("")
    for b in ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4"):
        t.add_column(b, justify="right")
    for label, k in (("round trip (caption->image->caption)", "roundtrip"), ("upper: real photo", "upper_real_photo"),
                     ("lower: grey image", "lower_grey"), ("lower: other photo", "lower_other_photo")):
        t.add_row(label, *(f"{s[k][f'bleu{n}']:.3f}" for n in range(1, 5)))
    console.print(t)

    def fmt(x):
        return "n/a" if x is None else f"{x:.3f}"

    console.print(f"normalised (vs grey): BLEU-1 {fmt(s['normalised_bleu1'])}  BLEU-4 {fmt(s['normalised_bleu4'])}; "
                  f"(vs other photo): BLEU-1 {fmt(s['normalised_bleu1_vs_other_photo'])}  "
                  f"BLEU-4 {fmt(s['normalised_bleu4_vs_other_photo'])}")
    if "image_to_image" in s:
        i = s["image_to_image"]
        console.print(f"image->caption->image: cosine to own photo {i['cosine_generated_vs_real']:.3f} vs other photo "
                      f"{i['cosine_generated_vs_other']:.3f}; recall@1 {i['recall_at_1']:.3f} (chance "
                      f"{i['chance_recall_at_1']:.3f}), recall@5 {i['recall_at_5']:.3f} among {i['pool']}")
    console.print(f"wrote {paths['json']} and {paths['html']}")
