"""`i2t encoders` (list the image encoders and whether their weights are here) and `i2t encode` (fill the cache)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import app
from img2text2img.cli.output import console

ENCODER_HELP = ("Encoder name (see `i2t encoders`). mobilenet_v2 (default), efficientnet_lite0, mobilenet_v3_small "
                "and squeezenet1_1 have weights in the shared folder; inception_v3 and googlenet NEED a weight file "
                "(--weights) or --allow-download.")


@app.command("encoders")
def encoders(
    check: Annotated[bool, typer.Option(help="Also build each pretrained encoder to verify its weights (slower).")] = False,
) -> None:
    """List the image encoders: feature size, input size, grid, and where their weights would come from."""
    from rich.table import Table

    from img2text2img.errors import I2TError
    from img2text2img.models.encoders import create_encoder, encoder_spec, list_encoders, weight_dirs

    dirs = weight_dirs()
    table = Table("encoder", "D", "input", "weights", "notes")
    for name in list_encoders():
        spec = encoder_spec(name)
        p = spec.preprocess
        found = next((str(d / s.filename) for d in dirs for s in spec.sources if (d / s.filename).is_file()), None)
        if not spec.sources:
            status = "random init"
        elif found:
            status = "[green]found[/green]"
            if check:
                try:
                    create_encoder(name)
                    status = "[green]ok (sha256 + strict load)[/green]"
                except I2TError as e:
                    status = f"[red]{e}[/red]"
        else:
            status = "[yellow]missing[/yellow]"
        table.add_row(name, str(spec.num_features), f"{p.image_size} (resize {p.resize_size}, {p.interpolation})",
                      status, spec.quality)
    console.print(table)
    console.print(f"weights folders searched: {', '.join(map(str, dirs)) or '(none)'}; set $I2T_WEIGHTS to add one")


@app.command("encode")
def encode(
    encoder: Annotated[str, typer.Option(help=ENCODER_HELP)] = "mobilenet_v2",
    data: Annotated[str, typer.Option(help="flickr8k, shapes, or a dataset folder.")] = "flickr8k",
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset is (else $I2T_DATA, then ../shared).")] = None,
    weights: Annotated[Path | None, typer.Option(help="Explicit weight file (.safetensors, or torchvision .pth).")] = None,
    allow_download: Annotated[bool, typer.Option(help="Allow downloading official weights (needs internet).")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per forward pass.")] = 32,
    workers: Annotated[int, typer.Option(min=0, help="DataLoader worker processes decoding images.")] = 2,
    grid: Annotated[bool, typer.Option("--grid/--no-grid", help="Also store the spatial grid (needed for attention).")] = True,
    cache: Annotated[bool, typer.Option("--cache/--no-cache", help="--no-cache: encode in memory, write nothing.")] = True,
    cache_dir: Annotated[Path | None, typer.Option(help="Cache folder (else $I2T_CACHE, then ~/.cache/img2text2img).")] = None,
    split: Annotated[str | None, typer.Option(help="Only this split (train/val/test); default every image.")] = None,
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: torch's choice).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, or auto.")] = "auto",
) -> None:
    """Encode every image of a dataset once into the feature cache (float16 pooled vectors + spatial grid).

    Training reuses the cache automatically; an interrupted run resumes where it stopped.
    """
    import torch

    from img2text2img.data import load_dataset
    from img2text2img.features import encode_dataset

    if threads:
        torch.set_num_threads(threads)
    ds = load_dataset(data, data_dir)
    images = ds.split(split) if split else None
    result = encode_dataset(encoder, ds, images=images, grid=grid, batch_size=batch_size, num_workers=workers,
                            cache_dir=cache_dir, progress=True, weights=weights, allow_download=allow_download,
                            use_cache=cache, device=device)
    how = result.info.get("status", "")
    secs = result.info.get("seconds")
    rate = f", {len(result) / secs:.1f} images/s" if secs and how != "resumed" else ""
    grid_txt = f", grid {result.grid_shape[0]} x {result.grid_shape[1]}" if result.has_grid else ""
    console.print(f"{how}: {len(result)} images, pooled {result.num_features}{grid_txt}"
                  + (f" in {secs:.1f} s{rate}" if secs else ""))
    console.print(f"cache: {result.path}" if result.path else "not cached (--no-cache)")
