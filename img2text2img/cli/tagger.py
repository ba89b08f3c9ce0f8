"""`i2t tag`, `i2t train tagger`, `i2t eval tagger`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import app, eval_app, train_app
from img2text2img.cli.output import (
    BackendOption,
    BatchOption,
    DataOption,
    DeviceOption,
    ImageInputs,
    console,
    inference_model,
    model_option,
    progress_bar,
    runtime_model,
    tsv_field,
    write_run_summary,
)
from img2text2img.cli.recipe import recipe_options
from img2text2img.train.tagger_recipe import TaggerRecipe


@app.command("tag")
def tag_cmd(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.")],
    model: Annotated[str | None, model_option("tagger")] = None,
    data: DataOption = None,
    top: Annotated[int, typer.Option(min=1, max=100, help="At most this many tags per image.")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per image: file, tags [[tag, score], ...].")] = False,
    batch_size: BatchOption = 32,
    device: DeviceOption = "auto",
    backend: BackendOption = "auto",
    open_vocab: Annotated[bool | None, typer.Option(
        "--open-vocab/--no-open-vocab", help="Add the objects the encoder's ImageNet head names (cat, cup, car) to "
        "the tag head's words, nouns and adjectives only, on one score scale. Default: the model's own setting "
        "(on for the shipped Flickr8k tagger).", show_default=False)] = None,
) -> None:
    """Print the tags of each image with their scores, in the order given (folders: sorted by name), as
    FILE<TAB>tag (score), ... lines (a tab, newline or backslash in a file name is written \\t, \\n, \\\\) or with
    --json as JSON lines. Folders are decoded in a thread pool and tagged in batches; bad files are skipped and
    listed at the end (exit code 2)."""
    rt = runtime_model("tagger", model, data, device, backend)
    if rt is not None:  # the torch-free path: ONNX Runtime graphs
        import numpy as np

        inputs = ImageInputs(paths, prepare=rt.prepare)
        with progress_bar(len(inputs), "tagging") as advance:
            for batch in inputs.batches(batch_size):
                show_tags(batch, rt.predict_arrays(np.stack([x for _, x in batch]), top=top, open_vocab=open_vocab),
                          as_json)
                advance(len(batch))
        inputs.finish("tagged")
        return
    import torch

    inputs = ImageInputs(paths)
    tagger = inference_model("tagger", model, data, device).bulk_tagger(open_vocab)
    with torch.inference_mode(), progress_bar(len(inputs), "tagging") as advance:
        for batch in inputs.batches(2 * batch_size):
            show_tags(batch, tagger([img for _, img in batch], top=top, batch_size=batch_size), as_json)
            advance(len(batch))
    inputs.finish("tagged")


def show_tags(batch: list, rows: list, as_json: bool) -> None:
    for (f, _), tags in zip(batch, rows):
        if as_json:
            print(json.dumps({"file": str(f), "tags": [[t, round(s, 4)] for t, s in tags]}), flush=True)
        else:  # plain print: tab-separated, where rich would expand the tab
            print(f"{tsv_field(f)}\t" + ", ".join(f"{t} ({s:.2f})" for t, s in tags), flush=True)


@train_app.command("tagger")
@recipe_options(TaggerRecipe)
def train_tagger_cmd(
    recipe: TaggerRecipe,
    out: Annotated[Path, typer.Option(help="Run folder (out/last, out/best, out/summary.json).")],
    model: Annotated[str, typer.Option(help="Registry name: efficientnet_lite0+bce, mobilenet_v2+rnn, "
                                            "small_cnn+rnn-tiny, ...")] = "mobilenet_v2+rnn",
    data: Annotated[str, typer.Option(help="flickr8k, shapes, shapes:N or a dataset folder.")] = "flickr8k",
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset is.")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from out/last.")] = False,
    force: Annotated[bool, typer.Option(help="Replace the run already in OUT (only its checkpoints).")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads.")] = None,
) -> None:
    """Train a tagger: a CNN-RNN tag-sequence decoder or the linear BCE baseline, on cached features by default."""
    import torch

    from img2text2img.train.tagger import train_tagger

    if threads:
        torch.set_num_threads(threads)
    summary = train_tagger(data, model, recipe, out=out, data_dir=data_dir, device=device, resume=resume, force=force)
    write_run_summary(out, summary)
    console.print(f"best val micro-F1 {summary['best']} after {summary['steps']} steps "
                  f"({summary['train_seconds']:.0f} s); model in {out / 'best'}")


@eval_app.command("tagger")
def eval_tagger_cmd(
    model: Annotated[str | None, typer.Option(help="A shipped tagger's name or a tagger folder (default: the shipped "
                                                "one for --data).")] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    data: Annotated[str, typer.Option(help="flickr8k, shapes or a dataset folder.")] = "flickr8k",
    data_dir: Annotated[Path | None, typer.Option()] = None,
    tags: Annotated[str, typer.Option(help="auto (tags.tsv if present, else from captions), file or captions.")] = "auto",
    limit: Annotated[int | None, typer.Option(help="Only the first N images of the split.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the scores as JSON here.")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Score a tagger on a split: micro/macro/per-image precision, recall, F1, exact match, and mAP (BCE head)."""
    from img2text2img.data import load_dataset
    from img2text2img.io import write_text_atomic
    from img2text2img.models.names import shipped_data
    from img2text2img.tags import dataset_tags
    from img2text2img.train.tagger import evaluate_tagger

    shipped_for = shipped_data(data) if model is None else None
    tagger = inference_model("tagger", model, shipped_for, device)
    ds = load_dataset(data, data_dir)
    scores = evaluate_tagger(tagger, ds, split, dataset_tags(ds, source=tags), limit=limit)
    text = json.dumps(scores, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text + "\n")
    console.print_json(text)
