"""`i2t caption`, `i2t train captioner`, `i2t eval captioner`, `i2t average`, `i2t ensemble`."""
from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import app, eval_app, train_app
from img2text2img.cli.output import (
    COMMAND_LINE,
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
    warn,
    write_run_summary,
)
from img2text2img.cli.recipe import recipe_options
from img2text2img.train.captioner_recipe import CaptionerRecipe

ForceOption = Annotated[bool, typer.Option(help="Replace a model (or run) already at --out.")]
SayOnceOption = Annotated[bool | None, typer.Option(
    "--say-once/--allow-repeats", help="Say each content word (colours aside) at most once, which stops the search "
    "looping ('a man in a blue shirt is wearing a blue shirt'). Default: the model's own (on for the shipped Flickr8k "
    "captioner).")]


def command_line() -> str:
    """The i2t command being run, as a model's provenance records it."""
    args = COMMAND_LINE.get()
    return shlex.join(["i2t", *(sys.argv[1:] if args is None else args)])


@app.command("caption")
def caption(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.")],
    model: Annotated[str | None, model_option("captioner")] = None,
    data: DataOption = None,
    beam: Annotated[int | None, typer.Option(min=1, max=20, help="Beam width (1 = greedy). Default: the one the model "
                                             "was tuned for on the validation split (5 for the shipped captioner).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per image: file, caption, logprob, ms (the "
                                          "photo's share of its batch's time).")] = False,
    batch_size: BatchOption = 32,
    device: DeviceOption = "auto",
    backend: BackendOption = "auto",
    open_vocab: Annotated[bool | None, typer.Option(
        "--open-vocab/--no-open-vocab", help="Name objects the encoder's ImageNet head is sure of when the caption "
        "lacks them (constrained beam search; a word the captioner never used borrows its nearest known word's rows, "
        "from GloVe; a captioner lacking words of Flickr8k's photo labels also gets those, DCC-style). Default: the "
        "model's own (on for the shipped Flickr8k captioner, off for shapes).")] = None,
    say_once: SayOnceOption = None,
) -> None:
    """Write one caption per image, in the order given (folders: sorted by name), as FILE<TAB>CAPTION lines (a tab,
    newline or backslash in a file name is written \\t, \\n, \\\\) or with --json as JSON lines. Folders are decoded
    in a thread pool and captioned in batches; bad files are skipped and listed at the end (exit code 2)."""
    rt = runtime_model("captioner", model, data, device, backend)
    if rt is not None:  # the torch-free path: ONNX Runtime graphs, the search in numpy
        if say_once is not None:
            rt.say_once = say_once
        inputs = ImageInputs(paths, prepare=rt.prepare)
        with progress_bar(len(inputs), "captioning") as advance:
            for batch, results, ms in runtime_batches(rt, inputs, beam, batch_size, open_vocab):
                show_captions(batch, results, ms, as_json)
                advance(len(batch))
        inputs.finish("captioned")
        return
    import time

    import torch

    from img2text2img.models.captioner.api import FEW_IMAGES, caption_loaded

    inputs = ImageInputs(paths)
    cap = inference_model("captioner", model, data, device)
    if say_once is not None:
        cap.settings.say_once = say_once
    if len(inputs) < FEW_IMAGES:  # a few photos: the plain encoder, no fast copy to build (cold start)
        run, chunk = caption_loaded, FEW_IMAGES
    else:  # the batched path, whose fast encoder is built now so the first batch's time is its own
        cap.warm_up()
        run, chunk = type(cap).caption_images, 2 * batch_size  # two batches: encoding overlaps decoding
    with torch.inference_mode(), progress_bar(len(inputs), "captioning") as advance:
        for batch in inputs.batches(chunk):
            t0 = time.perf_counter()
            results = run(cap, [img for _, img in batch], beam_size=beam, batch_size=batch_size, open_vocab=open_vocab)
            show_captions(batch, results, (time.perf_counter() - t0) * 1000.0 / len(batch), as_json)
            advance(len(batch))
    inputs.finish("captioned")


def show_captions(batch: list, results: list, ms: float, as_json: bool) -> None:
    for (f, _), r in zip(batch, results):
        if as_json:
            print(json.dumps({"file": str(f), "caption": r.text, "logprob": round(r.logprob, 4),
                              "ms": round(ms, 1)}), flush=True)
        else:  # plain print: tab-separated for `cut -f2`, where rich would expand the tab
            print(f"{tsv_field(f)}\t{r.text}", flush=True)


def runtime_batches(rt, inputs: ImageInputs, beam: int | None, batch_size: int, open_vocab: bool | None = None):
    """(batch, captions, ms per photo) per batch of prepared images, in input order: the next batch is encoded on a
    second thread while this one's beams are searched (ONNX Runtime and numpy release the GIL)."""
    import time
    from concurrent.futures import ThreadPoolExecutor

    import numpy as np

    with ThreadPoolExecutor(1, thread_name_prefix="i2t-encode") as pool:
        pending = None
        for batch in inputs.batches(batch_size):
            t0 = time.perf_counter()
            job = pool.submit(rt.encode_arrays, np.stack([x for _, x in batch]))
            if pending is not None:
                yield finish_batch(rt, *pending, beam, open_vocab)
            pending = (batch, job, t0)
        if pending is not None:
            yield finish_batch(rt, *pending, beam, open_vocab)


def finish_batch(rt, batch: list, job, t0: float, beam: int | None, open_vocab: bool | None = None):
    import time

    results = rt.decode_features(*job.result(), beam_size=beam, open_vocab=open_vocab)
    return batch, results, (time.perf_counter() - t0) * 1000.0 / len(batch)


@train_app.command("captioner")
@recipe_options(CaptionerRecipe)
def train_captioner_cmd(
    recipe: CaptionerRecipe,
    out: Annotated[Path, typer.Option(help="Run folder (out/last, out/best, out/summary.json).")],
    data: Annotated[str, typer.Option(help="flickr8k, shapes, shapes:N or a dataset folder.")] = "flickr8k",
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset is.")] = None,
    init_from: Annotated[Path | None, typer.Option(help="Start from this captioner (its network, weights, "
                                                        "vocabulary and decoding settings).")] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda, cuda:N or auto.")] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from out/last.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    force: ForceOption = False,
) -> None:
    """Train a captioner on cached encoder features (teacher forcing, AdamW + cosine schedule, early stopping on
    validation BLEU-4, a checkpoint per epoch). With --scst, fine-tune a trained one on its own sampled captions,
    rewarded by CIDEr-D (self-critical sequence training)."""
    import torch

    from img2text2img.checkpoint import check_target
    from img2text2img.train.captioner import train_captioner
    from img2text2img.train.engine import train_config

    if threads:
        torch.set_num_threads(threads)
    if not resume:  # fail before features are encoded, not after (fit() checks again before it writes)
        check_target(out, force, what="training run")
    cfg = train_config(recipe, out=str(out), device=device, resume=resume, force=force)
    summary = train_captioner(recipe, cfg, data,
                              data_dir=str(data_dir) if data_dir else None,
                              init_from=str(init_from) if init_from else None)
    write_run_summary(out, summary)
    console.print(f"best val BLEU-4 {summary['best']} after {summary['steps']} steps "
                  f"({summary['train_seconds']:.0f} s); model in {out / 'best'}")


@eval_app.command("captioner")
def eval_captioner_cmd(
    model: Annotated[str | None, typer.Option(help="A shipped captioner's name or a captioner folder (default: the "
                                                "shipped one for --data).")] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    data: Annotated[str, typer.Option(help="flickr8k, shapes or a dataset folder.")] = "flickr8k",
    data_dir: Annotated[Path | None, typer.Option()] = None,
    beam: Annotated[int | None, typer.Option(min=1, max=20, help="Beam width (default: the model's own).")] = None,
    coco: Annotated[bool, typer.Option(help="Also the COCO metrics (pycocoevalcap + Java).")] = True,
    limit: Annotated[int | None, typer.Option(help="Only the first N images of the split.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the scores as JSON here.")] = None,
    device: DeviceOption = "auto",
    say_once: SayOnceOption = None,
) -> None:
    """Score a captioner against all references of a split: nltk BLEU-1..4 and COCO BLEU, METEOR, ROUGE-L, CIDEr-D."""
    from img2text2img.io import write_text_atomic
    from img2text2img.models.names import shipped_data
    from img2text2img.train.captioner import evaluate_captioner

    shipped_for = shipped_data(data) if model is None else None
    cap = inference_model("captioner", model, shipped_for, device)
    if say_once is not None:
        cap.settings.say_once = say_once
    if not coco:
        warn("COCO metrics off: only nltk BLEU")
    scores = evaluate_captioner(cap, data, split, beam_size=beam, coco=coco,
                                data_dir=str(data_dir) if data_dir else None, limit=limit)
    text = json.dumps(scores, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text + "\n")
    console.print_json(text)


def save_combined(model, out: Path, members: list[Path], half: bool) -> None:
    """Write an averaged or ensembled captioner with its members as parents (in its provenance, and in the
    summary.json that `i2t ship OUT --as NAME` reads)."""
    from img2text2img.shipping import provenance

    command = command_line()
    model.save(out, half=half, info=provenance(command, members))
    write_run_summary(out, {"parents": [str(m) for m in members]})


@app.command("average")
def average_cmd(
    members: Annotated[list[Path], typer.Argument(help="Two or more captioner folders of one lineage: epochs of a run, "
                                                       "or a run and a fine-tune started from it (--init-from).")],
    out: Annotated[Path, typer.Option(help="Where to write the averaged checkpoint.")] = Path("runs/average"),
    half: Annotated[bool, typer.Option(help="Store the weights as fp16 (half the size).")] = False,
    force: ForceOption = False,
) -> None:
    """Average captioners' weights into one checkpoint (a model soup): often a little better than each member, and
    no slower, unlike an ensemble. Members trained apart from different random starts do not average well."""
    from img2text2img.checkpoint import check_target
    from img2text2img.models.captioner import average_captioners

    check_target(out, force)
    model = average_captioners(members)
    save_combined(model, out, members, half)
    console.print(f"wrote the average of {len(members)} {model.config.encoder}+{model.config.decoder} captioners to {out}")


@app.command("ensemble")
def ensemble_cmd(
    members: Annotated[list[Path], typer.Argument(help="Two or more captioner folders on the same encoder and "
                                                       "vocabulary: runs with other --seed values, or other decoders "
                                                       "(lstm + attention).")],
    out: Annotated[Path, typer.Option(help="Where to write the ensemble checkpoint.")] = Path("runs/ensemble"),
    half: Annotated[bool, typer.Option(help="Store the weights as fp16 (half the size).")] = False,
    force: ForceOption = False,
) -> None:
    """Combine captioners trained apart into one checkpoint that averages their word probabilities at every step.

    Use it like any captioner: `i2t caption photo.jpg --model OUT`, `i2t eval captioner --model OUT`."""
    from img2text2img.checkpoint import check_target
    from img2text2img.models.captioner import ensemble_captioners

    check_target(out, force)
    model = ensemble_captioners(members)
    save_combined(model, out, members, half)
    kinds = "+".join(c.decoder for c in model.config.member_configs())
    console.print(f"wrote an ensemble of {model.config.members} decoders ({kinds}) on {model.config.encoder} to {out}")
