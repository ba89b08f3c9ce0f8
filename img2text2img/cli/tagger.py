"""`i2t tag`, `i2t train tagger`, `i2t eval tagger`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import app, eval_app, train_app
from img2text2img.cli.output import ImageInputs, PrecisionOption, console, write_run_summary


@app.command("tag")
def tag_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.")],
    model: Annotated[Path | None, typer.Option(help="Tagger folder (default: the one shipped with the package).")] = None,
    top: Annotated[int, typer.Option(min=1, max=100, help="At most this many tags per image.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per image: file, tags [[tag, score], ...].")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Print the tags of each image with their scores. Bad files are skipped and listed at the end (exit code 2)."""
    from img2text2img.models.tagger import load_tagger
    from img2text2img.train.engine import pick_device

    inputs = ImageInputs(paths)
    tagger = load_tagger(model, device=str(pick_device(device)))
    for f, img in inputs:
        tags = tagger.tag_images([img], top=top)[0]
        if as_json:
            print(json.dumps({"file": str(f), "tags": [[t, round(s, 4)] for t, s in tags]}), flush=True)
        else:
            console.print(f"{f}\t" + ", ".join(f"{t} ({s:.2f})" for t, s in tags), highlight=False, soft_wrap=True)
    inputs.finish("tagged")


@train_app.command("tagger")
def train_tagger_cmd(
    out: Annotated[Path, typer.Option(help="Run folder (out/last, out/best, out/summary.json).")],
    model: Annotated[str, typer.Option(help="Registry name: mobilenet_v2+rnn, mobilenet_v2+bce, small_cnn+rnn-tiny, ...")] = "mobilenet_v2+rnn",
    encoder: Annotated[str | None, typer.Option(help="Encoder (overrides the one in --model).")] = None,
    head: Annotated[str | None, typer.Option(help="rnn or bce (overrides the one in --model).")] = None,
    data: Annotated[str, typer.Option(help="flickr8k, shapes, shapes:N or a dataset folder.")] = "flickr8k",
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset is.")] = None,
    tags: Annotated[str, typer.Option(help="auto (tags.tsv if present, else from captions), file or captions.")] = "auto",
    max_tags: Annotated[int, typer.Option(min=1, help="Tag vocabulary: the N most frequent tags.")] = 500,
    rotate90: Annotated[bool, typer.Option(help="Rotate training images by 0/90/180/270 degrees (trains from images, "
                                                "running the encoder every step: slow on a CPU).")] = False,
    trainable_blocks: Annotated[int, typer.Option(min=0, help="Fine-tune the last N encoder blocks (trains from images).")] = 0,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not use the feature cache (trains from images).")] = False,
    epochs: Annotated[int, typer.Option(min=1)] = 30,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option()] = 2e-3,
    weight_decay: Annotated[float, typer.Option()] = 1e-4,
    hidden: Annotated[int | None, typer.Option(help="RNN state size (overrides the preset).")] = None,
    dropout: Annotated[float | None, typer.Option(help="Override the preset's dropout.")] = None,
    aux_bce: Annotated[float | None, typer.Option(help="RNN: weight of an auxiliary per-tag BCE loss on the image term.")] = None,
    patience: Annotated[int | None, typer.Option(help="Early stopping: evaluations without micro-F1 gain.")] = 5,
    val_images: Annotated[int | None, typer.Option(help="Validate on the first N val images.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Steps between validations (default: each epoch).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option()] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from out/last.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    precision: PrecisionOption = "auto",
) -> None:
    """Train a tagger: a CNN-RNN tag-sequence decoder or the linear BCE baseline, on cached features by default."""
    import torch

    from img2text2img.train.engine import TrainConfig
    from img2text2img.train.tagger import train_tagger

    if threads:
        torch.set_num_threads(threads)
    if encoder or head:
        enc, _, hd = model.partition("+")
        model = f"{encoder or enc}+{head or hd}"
    overrides: dict = {}
    if trainable_blocks:
        overrides["trainable_blocks"] = trainable_blocks
    if hidden is not None:
        overrides["hidden"] = hidden
    if dropout is not None:
        overrides["dropout"] = dropout
    if aux_bce is not None:
        overrides["aux_bce"] = aux_bce
    cfg = TrainConfig(out=str(out), epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
                      weight_decay=weight_decay, patience=patience, eval_every=eval_every, seed=seed, device=device,
                      resume=resume, precision=precision)
    summary = train_tagger(data, model, cfg, data_dir=data_dir, overrides=overrides, rotate90=rotate90,
                           use_cache=not no_cache, tag_source=tags, max_tags=max_tags, val_limit=val_images)
    write_run_summary(out, summary)
    console.print(f"best val micro-F1 {summary['best']} after {summary['steps']} steps "
                  f"({summary['train_seconds']:.0f} s); model in {out / 'best'}")


@eval_app.command("tagger")
def eval_tagger_cmd(
    model: Annotated[Path | None, typer.Option(help="Tagger folder (default: the shipped one).")] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    data: Annotated[str, typer.Option(help="flickr8k, shapes or a dataset folder.")] = "flickr8k",
    data_dir: Annotated[Path | None, typer.Option()] = None,
    tags: Annotated[str, typer.Option(help="auto (tags.tsv if present, else from captions), file or captions.")] = "auto",
    limit: Annotated[int | None, typer.Option(help="Only the first N images of the split.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the scores as JSON here.")] = None,
) -> None:
    """Score a tagger on a split: micro/macro/per-image precision, recall, F1, exact match, and mAP (BCE head)."""
    from img2text2img.data import load_dataset
    from img2text2img.io import write_text_atomic
    from img2text2img.models.tagger import load_tagger
    from img2text2img.tags import dataset_tags
    from img2text2img.train.tagger import evaluate_tagger

    tagger = load_tagger(model)
    ds = load_dataset(data, data_dir)
    scores = evaluate_tagger(tagger, ds, split, dataset_tags(ds, source=tags), limit=limit)
    text = json.dumps(scores, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text + "\n")
    console.print_json(text)
