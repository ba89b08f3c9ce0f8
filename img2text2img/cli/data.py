"""`i2t data ...`: make the shapes set, summarise a dataset."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import data_app
from img2text2img.cli.output import console


@data_app.command("shapes")
def shapes(
    out: Annotated[Path, typer.Option(help="Output folder (images/, captions.tsv, tags.tsv, splits/).")],
    n: Annotated[int, typer.Option(min=1, help="Number of images.")] = 5000,
    size: Annotated[int, typer.Option(min=16, max=1024, help="Image side in pixels.")] = 64,
    seed: Annotated[int, typer.Option(help="Same seed, same dataset, byte for byte.")] = 0,
    force: Annotated[bool, typer.Option(help="Replace a shapes set already in OUT (never another folder).")] = False,
) -> None:
    """Generate the synthetic shapes dataset: 1-3 coloured shapes per image with 5 true captions each."""
    from img2text2img.checkpoint import check_target
    from img2text2img.data.shapes import generate_shapes, is_shapes_dataset

    check_target(out, force, "shapes dataset", is_ours=is_shapes_dataset)
    generate_shapes(out, n=n, size=size, seed=seed, progress=True)
    console.print(f"wrote {n} images to {out}")


@data_app.command("info")
def info(
    data: Annotated[str, typer.Argument(help="flickr8k, shapes, or a dataset path in any format (see inspect).")] = (
        "flickr8k"),
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset is (else $I2T_DATA, then ../shared).")] = None,
) -> None:
    """Show where a dataset is and how many images and captions each split has (i2t data inspect: everything)."""
    from img2text2img.data import load_dataset

    ds = load_dataset(data, data_dir)
    console.print(f"{ds.name} ({ds.format}): {ds.root}")
    console.print(f"images with captions: {len(ds.captions)}, captions: {sum(map(len, ds.captions.values()))}")
    for s, imgs in ds.splits.items():
        console.print(f"  {s}: {len(imgs)} images")


@data_app.command("inspect")
def inspect(
    path: Annotated[str, typer.Argument(help="A dataset: flickr8k, shapes, or a path in any format --data takes: a "
                                             "folder with captions.tsv (this project's layout), a Hugging Face "
                                             "ImageFolder (metadata.jsonl/.csv), a Karpathy dataset_*.json, a COCO "
                                             "captions JSON, or Flickr8k.token.txt.")],
    image_dir: Annotated[Path | None, typer.Option(help="Where a JSON or token file's images are (default: beside "
                                                        "it, or in images/ beside it).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the built-in flickr8k is (else $I2T_DATA, then "
                                                       "../shared).")] = None,
    min_count: Annotated[int, typer.Option(min=1, help="Count the vocabulary as training would: words seen at least "
                                                       "this often in the train captions.")] = 5,
    check: Annotated[str, typer.Option(help="How hard each image is checked: decode (every pixel), open (header), "
                                            "exists.")] = "decode",
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Show what training would read from a dataset: its format, images, captions per image, splits, tags, the
    vocabulary size at the training --min-count, and every missing or unreadable image."""
    import json

    from rich.progress import Progress

    from img2text2img.data.inspect import inspect_dataset
    from img2text2img.data.load import CHECKS
    from img2text2img.errors import I2TError

    if check not in CHECKS:
        raise I2TError(f"--check must be one of {', '.join(CHECKS)}, not {check!r}")
    with Progress(transient=True, disable=as_json or not console.is_terminal) as bar:
        def progress(total: int, done: int):
            task = bar.add_task(f"checking images ({check})", total=total, completed=done)
            return lambda n: bar.advance(task, n)

        report = inspect_dataset(path, data_dir, image_dir, min_count=min_count, check=check, progress=progress)
    if as_json:
        console.print_json(json.dumps(report))
        return
    cpi = report["captions_per_image"]
    lines = [
        f"{report['name']} ({report['format']}): {report['path']}",
        f"images: {report['images']} usable of {report['images_listed']} listed, in {report['image_dir']}",
        f"captions: {report['captions']} ({cpi['min']}-{cpi['max']} per image, mean {cpi['mean']})",
        "splits: " + (", ".join(f"{s} {n}" for s, n in report["splits"].items()) or "none")
        + f" ({report['split_origin']})",
        f"tags: {report['tagged_images']} images tagged, {report['distinct_tags']} distinct"
        + (" (top: " + ", ".join(f"{t} {n}" for t, n in report["top_tags"]) + ")" if report["top_tags"] else ""),
        (f"vocabulary: {report['vocabulary_size']} words seen >= {report['vocabulary_min_count']} times in train "
         "captions"),
    ]
    for what in ("missing", "unreadable"):
        bad = report[what]
        lines.append(f"{what}: {bad['count']}" + (" (" + "; ".join(f"{n}: {w}" for n, w in bad["first"])
                                                   + (", ..." if bad["count"] > len(bad["first"]) else "") + ")"
                                                   if bad["count"] else ""))
    for ln in lines:
        console.print(ln, highlight=False, markup=False)
