"""Terminal output shared by the command modules (not a command itself)."""
from __future__ import annotations

import json
import os
import shlex
import sys
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
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


# the same switches on every inference command
DeviceOption = Annotated[str, typer.Option(help="auto (CUDA when there is a GPU, else the CPU), cpu, cuda or cuda:N.")]
DataOption = Annotated[str | None, typer.Option(
    help="Which shipped model when no --model is given: flickr8k (real photos and sentences; the default) or "
         "shapes (the synthetic coloured shapes).")]
BatchOption = Annotated[int, typer.Option(min=1, max=512, help="Images encoded together when there are many.")]
BackendOption = Annotated[str, typer.Option(
    help="auto: the model's exported ONNX graphs (its onnx/ folder; no torch, a fast start) when it has them, the "
         "device is the CPU and no torch-only option is set, else torch; torch; or onnx (an error when it cannot).")]
PROGRESS_OVER = 50  # a progress bar for more images than this, when stderr is a terminal


def model_option(kind: str) -> object:
    """`--model` of an inference command: a shipped name or a folder."""
    return typer.Option(help=f"A shipped {kind}'s name (`i2t models` lists them) or a {kind} folder (a checkpoint or "
                             f"training run). Default: the Flickr8k {kind}, or the shapes one with --data shapes.")


def inference_model(kind: str, model: str | None, data: str | None, device: str):
    """The one place the inference commands turn --model / --data / --device into a loaded model.

    Why one place: a torch-free runtime (ONNX graphs stored beside a shipped model, img2text2img/runtime/) can be
    chosen here for the models that have one, without touching the commands."""
    from img2text2img.models import inference_device, load_model
    from img2text2img.models.names import resolve_model

    return load_model(resolve_model(model, kind, data), kind=kind, device=inference_device(device))


def runtime_model(kind: str, model: str | None, data: str | None, device: str, backend: str = "auto",
                  torch_only: str | None = None):
    """The torch-free runtime model for `--backend`, or None (then `inference_model` loads the torch one); the rule
    is the library's (`img2text2img.runtime.choose`), with the option's name in its errors."""
    from img2text2img.runtime.choose import choose_runtime

    return choose_runtime(kind, model, data, device, backend, torch_only=torch_only, spelt=("--backend ", "--device "))


def tsv_field(text: str) -> str:
    """A file name as one field of a tab-separated line: backslash, tab, newline and carriage return escaped as
    \\, \\t, \\n, \\r, so a name holding them cannot split or shift a line (undo with one unescape)."""
    return str(text).replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


@contextmanager
def progress_bar(total: int, label: str) -> Iterator[Callable[[int], None]]:
    """`advance(n)` for a bar on stderr when there are more than PROGRESS_OVER items and stderr is a terminal (a
    pipe or a log gets no bar, and stdout, the results, is never touched)."""
    if total <= PROGRESS_OVER or not err_console.is_terminal:
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn(f"[bold]{label}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def warn(msg: str) -> None:
    err_console.print(f"[yellow]warning:[/yellow] {msg}", highlight=False)


def note(msg: str) -> None:
    err_console.print(f"note: {msg}", highlight=False)


def is_tty() -> bool:
    return sys.stdout.isatty()


def write_run_summary(out, summary: dict) -> None:
    """out/summary.json for a training run, with the command line that made it, so a results table can cite it."""
    args = COMMAND_LINE.get()
    summary["command"] = shlex.join(["i2t", *(sys.argv[1:] if args is None else args)])
    Path(out).mkdir(parents=True, exist_ok=True)
    write_text_atomic(Path(out) / "summary.json", json.dumps(summary, indent=2, default=str))


def decode_failure(path: Path, e: BaseException) -> str:
    """One line for a file that could not be read, whatever went wrong (an `I2TError` already says it)."""
    text = str(e).splitlines()[0] if str(e) else ""
    return text if isinstance(e, I2TError) else f"{path}: {type(e).__name__}" + (f" ({text[:200]})" if text else "")


class ImageInputs:
    """The files named on a command line (files and folders), decoded in a thread pool, in input order.

    Commands over many images must go on past bad files and list them at the end; iterating (or `batches`) yields
    the good ones as (path, RGB image) and records the rest, and `finish(verb)` prints the failures and raises the
    exit-2 error. Any exception while reading one file is that file's failure, never the run's. Decoding runs a
    bounded window ahead of the model (Pillow decodes without the GIL), so memory stays flat on big folders. Shared by
    `i2t caption` and `i2t tag` so both behave the same."""

    def __init__(self, paths: list, workers: int | None = None, prepare: Callable | None = None) -> None:
        from img2text2img.data import list_images  # PIL: only for the commands that read images

        self.prepare = prepare  # applied to each image in the decode threads (the runtime's numpy preprocessing)
        self.files, skipped = list_images([str(p) for p in paths])
        self.failed: list[tuple[str, str]] = [(str(p), why) for p, why in skipped if why != "not an image file type"]
        self.workers = workers or max(1, min(4, os.cpu_count() or 1))
        if not self.files:
            raise I2TError("no images found in " + " ".join(map(str, paths)))

    def __len__(self) -> int:
        return len(self.files)

    def decode(self, path: Path):
        from img2text2img.data import load_image

        try:
            img = load_image(path)
            return path, (img if self.prepare is None else self.prepare(img)), None
        except Exception as e:  # noqa: BLE001 - one unreadable file is that file's failure line
            return path, None, decode_failure(path, e)

    def decoded(self, ahead: int = 64) -> Iterator[tuple[Path, object]]:
        """(path, image) of the readable files in input order, at most `ahead` decoded before they are used."""
        files = iter(self.files)
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="i2t-decode")
        try:
            pending = deque(pool.submit(self.decode, f) for _, f in zip(range(max(1, ahead)), files))
            while pending:
                path, img, why = pending.popleft().result()
                nxt = next(files, None)
                if nxt is not None:
                    pending.append(pool.submit(self.decode, nxt))
                if why is None:
                    yield path, img
                else:
                    self.failed.append((str(path), why))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)

    def batches(self, size: int) -> Iterator[list[tuple[Path, object]]]:
        """The readable files in input order, `size` at a time (the last batch may be smaller)."""
        batch: list[tuple[Path, object]] = []
        for item in self.decoded(ahead=2 * size):
            batch.append(item)
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def __iter__(self):
        return self.decoded()

    def finish(self, verb: str) -> None:
        if self.failed:
            for f, why in self.failed:
                err_console.print(f"failed: {why if why.startswith(f) else f'{f}: {why}'}", highlight=False)
            raise I2TError(f"{len(self.failed)} input(s) could not be {verb} (listed above)")
