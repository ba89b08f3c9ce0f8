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
    data: Annotated[str, typer.Argument(help="flickr8k, shapes, or a dataset folder.")] = "flickr8k",
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset is (else $I2T_DATA, then ../shared).")] = None,
) -> None:
    """Show where a dataset is and how many images and captions each split has."""
    from img2text2img.data import load_dataset

    ds = load_dataset(data, data_dir)
    console.print(f"{ds.name}: {ds.root}")
    console.print(f"images with captions: {len(ds.captions)}, captions: {sum(map(len, ds.captions.values()))}")
    for s, imgs in ds.splits.items():
        console.print(f"  {s}: {len(imgs)} images")
