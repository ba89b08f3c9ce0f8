"""Terminal output shared by the command modules (not a command itself)."""
from __future__ import annotations

import json
import shlex
import sys
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from img2text2img.errors import I2TError
from img2text2img.io import write_text_atomic

# The arguments of the `main()` call being run (a context variable, not a global: nested or concurrent calls each
# see their own), so a training run can record the command line that made it.
COMMAND_LINE: ContextVar[list[str] | None] = ContextVar("COMMAND_LINE", default=None)

# soft_wrap: long lines (file paths, captions, error listings) are never cut into pieces when piped or logged.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)


# the same switch on every `i2t train ...` command (TrainConfig.precision)
PrecisionOption = Annotated[str, typer.Option(
    help="auto (fp16 autocast on CUDA, fp32 on the CPU), fp32, or bf16: bf16 autocast, much faster on CPUs with "
         "bf16 matrix units (Intel AMX), slower on others.")]


def warn(msg: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {msg}", highlight=False)


def is_tty() -> bool:
    return sys.stdout.isatty()


def write_run_summary(out, summary: dict) -> None:
    """out/summary.json for a training run, with the command line that made it, so a results table can cite it."""
    args = COMMAND_LINE.get()
    summary["command"] = shlex.join(["i2t", *(sys.argv[1:] if args is None else args)])
    Path(out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(out) / "summary.json", json.dumps(summary, indent=2, default=str))


class ImageInputs:
    """The files named on a command line (files and folders), loaded one by one.

    Commands over many images must go on past bad files and list them at the end; iterating this yields
    (path, RGB image) for the good ones and records the rest, and `finish(verb)` prints the failures and raises the
    exit-2 error. Shared by `i2t caption` and `i2t tag` so both behave the same."""

    def __init__(self, paths: list) -> None:
        from img2text2img.data import list_images  # PIL: only for the commands that read images

        self.files, skipped = list_images([str(p) for p in paths])
        self.failed: list[tuple[str, str]] = [(str(p), why) for p, why in skipped if why == "not found"]
        if not self.files:
            raise I2TError("no images found in " + " ".join(map(str, paths)))

    def __iter__(self):
        from img2text2img.data import load_image

        for f in self.files:
            try:
                img = load_image(f)
            except I2TError as e:
                self.failed.append((str(f), str(e)))
                continue
            yield f, img

    def finish(self, verb: str) -> None:
        if self.failed:
            for f, why in self.failed:
                err_console.print(f"failed: {why if why.startswith(f) else f'{f}: {why}'}", highlight=False)
            raise I2TError(f"{len(self.failed)} input(s) could not be {verb} (listed above)")
