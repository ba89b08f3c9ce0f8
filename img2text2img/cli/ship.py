"""`i2t ship RUN --as NAME`: make a training run a shipped model (fp16, with how it was made)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import app
from img2text2img.cli.output import console


@app.command("ship")
def ship_cmd(
    run: Annotated[Path, typer.Argument(help="Training run folder (its best/ is shipped, else last/) or a checkpoint.")],
    name: Annotated[str, typer.Option("--as", help="Model name: ships into img2text2img/pretrained/NAME; a path "
                                                   "(with a slash) ships into that folder.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="An inference setting to ship with, KEY=VALUE "
                                                     "(e.g. guidance=2.5, beam_size=5); repeatable.")] = None,
    force: Annotated[bool, typer.Option(help="Replace a model already shipped under that name.")] = False,
) -> None:
    """Ship a trained model: weights in fp16 without training-only parts, its vocabulary and metrics, and the
    command, git commit, parent checkpoints and date that made it."""
    from img2text2img.errors import I2TError
    from img2text2img.shipping import ship_run

    settings = {}
    for item in set_ or []:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise I2TError(f"--set {item!r}: write KEY=VALUE, e.g. --set guidance=2.5")
        settings[key.strip()] = value.strip()
    out = ship_run(run, name, settings=settings, force=force)
    console.print(f"shipped {run} as {out}")
