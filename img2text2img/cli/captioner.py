"""`i2t caption`, `i2t train captioner`, `i2t eval captioner`."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import app, eval_app, train_app
from img2text2img.cli.output import ImageInputs, PrecisionOption, console, warn, write_run_summary

# the same switch on `i2t caption` and `i2t eval captioner`; None keeps the model's own setting
MirrorAverageOption = Annotated[bool | None, typer.Option(
    "--mirror-average/--no-mirror-average",
    help="Read each photo together with its mirror image (features averaged): better captions on Flickr8k, half the "
         "encoding speed. Default: what the model was trained with.")]
NoRepeatOption = Annotated[int | None, typer.Option(
    "--no-repeat", min=0, max=10, metavar="N",
    help="Never write the same N words twice in one caption (3 stops 'a blue shirt and a blue shirt'); 0: off. "
         "Default: the model's own setting.")]


def _set_reading(cap, mirror_average: bool | None, no_repeat: int | None) -> None:
    """Apply the caption and eval commands' shared overrides of how the model reads and searches."""
    if mirror_average is not None:
        cap.config.mirror_average = mirror_average
    if no_repeat is not None:
        cap.config.no_repeat_ngram = no_repeat


@app.command("caption")
def caption(
    paths: Annotated[list[Path], typer.Argument(help="Image files and/or folders of images.")],
    model: Annotated[Path | None, typer.Option(help="Captioner folder (default: the one shipped with the package).")] = None,
    beam: Annotated[int | None, typer.Option(min=1, max=20, help="Beam width (1 = greedy). Default: the one the model "
                                             "was tuned for on the validation split (5 for the shipped captioner).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON line per image: file, caption, logprob, ms.")] = False,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
    mirror_average: MirrorAverageOption = None,
    no_repeat: NoRepeatOption = None,
) -> None:
    """Write one caption per image. Bad files in a folder are skipped and listed at the end (exit code 2)."""
    import torch

    from img2text2img.models.captioner import load_captioner, timed_caption
    from img2text2img.train.engine import pick_device

    inputs = ImageInputs(paths)
    cap = load_captioner(model, device=str(pick_device(device)))
    _set_reading(cap, mirror_average, no_repeat)
    cap.warm_up()
    with torch.inference_mode():
        for f, img in inputs:
            r, ms = timed_caption(cap, img, beam_size=beam)
            if as_json:
                print(json.dumps({"file": str(f), "caption": r.text, "logprob": round(r.logprob, 4), "ms": round(ms, 1)}),
                      flush=True)
            else:
                console.print(f"{f}\t{r.text}", highlight=False, soft_wrap=True)
    inputs.finish("captioned")


@train_app.command("captioner")
def train_captioner_cmd(
    out: Annotated[Path, typer.Option(help="Run folder (out/last, out/best, out/summary.json).")],
    model: Annotated[str, typer.Option(help="Registry name, e.g. mobilenet_v2+attention, small_cnn+lstm-tiny.")] = "mobilenet_v2+attention",
    encoder: Annotated[str | None, typer.Option(help="Encoder (overrides the one in --model).")] = None,
    decoder: Annotated[str | None, typer.Option(help="lstm, blstm or attention (overrides the one in --model).")] = None,
    data: Annotated[str, typer.Option(help="flickr8k, shapes, shapes:N or a dataset folder.")] = "flickr8k",
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset is.")] = None,
    epochs: Annotated[int, typer.Option(min=1)] = 8,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    lr: Annotated[float, typer.Option()] = 1e-3,
    weight_decay: Annotated[float, typer.Option()] = 0.0,
    grad_clip: Annotated[float, typer.Option()] = 5.0,
    dropout: Annotated[float | None, typer.Option(help="Override the preset's dropout.")] = None,
    label_smoothing: Annotated[float | None, typer.Option(help="Override the preset's (or --init-from model's) label smoothing.")] = None,
    min_count: Annotated[int, typer.Option(help="Rarer words become <unk>.")] = 5,
    glove: Annotated[bool, typer.Option(help="Initialise word embeddings from GloVe (50-d).")] = False,
    patience: Annotated[int | None, typer.Option(help="Early stopping: evaluations without BLEU-4 gain.")] = 3,
    val_images: Annotated[int | None, typer.Option(help="Validation BLEU on the first N val images.")] = None,
    eval_every: Annotated[int | None, typer.Option(help="Steps between validations (default: each epoch).")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str, typer.Option()] = "auto",
    resume: Annotated[bool, typer.Option(help="Continue from out/last.")] = False,
    threads: Annotated[int | None, typer.Option(help="torch CPU threads.")] = None,
    init_from: Annotated[Path | None, typer.Option(help="Start from this captioner (its weights, config and vocabulary).")] = None,
    scst: Annotated[bool, typer.Option(help="Self-critical training on CIDEr-D after cross-entropy (needs --init-from; "
                                            "use a small --lr such as 2e-5).")] = False,
    scst_samples: Annotated[int, typer.Option(min=2, help="Captions sampled per image with --scst.")] = 5,
    group_images: Annotated[bool, typer.Option(help="A batch is --batch-size images with all their captions (13 "
                                                    "Flickr8k images = 65 captions), so each image's features are "
                                                    "projected once, not once per caption: faster training of the "
                                                    "attention decoder.")] = False,
    mirror_average: Annotated[bool, typer.Option(help="Train (and later caption) on the mean of each photo's "
                                                      "and its mirror image's features (a feature cache of its "
                                                      "own).")] = False,
    refine_layers: Annotated[int | None, typer.Option(min=0, max=8, help="attention decoder: self-attention "
                                                         "layers over the projected grid cells, run once per image "
                                                         "(default 0: none). A fresh run only.")] = None,
    attribute_words: Annotated[int | None, typer.Option(
        min=0, max=64, help="attention decoder: also attend to the N words a detector head finds most likely in "
                            "the photo's captions (semantic attention; default 0: off). Can be added to an "
                            "--init-from model; its new weights start untrained.")] = None,
    attribute_weight: Annotated[float | None, typer.Option(
        min=0.0, help="Weight of that word detector's loss (default 0.02).")] = None,
    encoder_trainable_blocks: Annotated[int | None, typer.Option(
        min=0, help="Fine-tune the pretrained encoder's last N blocks with the decoder (EfficientNet-Lite0: 2 = head "
                    "conv + BatchNorm, 3 adds the last stage). Trains on photos, not cached features, and stores "
                    "the encoder in the checkpoint.")] = None,
    precision: PrecisionOption = "auto",
) -> None:
    """Train a captioner on cached encoder features (teacher forcing, Adam + cosine schedule, early stopping on
    validation BLEU-4, a checkpoint per epoch). With --scst, fine-tune a trained one on its own sampled captions,
    rewarded by CIDEr-D (self-critical sequence training)."""
    import torch

    from img2text2img.train.captioner import CaptionTrainOptions, train_captioner
    from img2text2img.train.engine import TrainConfig

    if threads:
        torch.set_num_threads(threads)
    if encoder or decoder:
        enc, _, dec = model.partition("+")
        model = f"{encoder or enc}+{decoder or dec}"
    overrides: dict = {} if label_smoothing is None else {"label_smoothing": label_smoothing}
    if dropout is not None:
        overrides["dropout"] = dropout
    if mirror_average:
        overrides["mirror_average"] = True
    if refine_layers is not None:
        overrides["refine_layers"] = refine_layers
    if encoder_trainable_blocks is not None:
        overrides["encoder_trainable_blocks"] = encoder_trainable_blocks
    if attribute_words is not None:
        overrides["attribute_words"] = attribute_words
    if attribute_weight is not None:
        overrides["attribute_weight"] = attribute_weight
    opts = CaptionTrainOptions(model=model, data=data, data_dir=str(data_dir) if data_dir else None, min_count=min_count,
                               glove=glove, overrides=overrides, val_images=val_images,
                               init_from=str(init_from) if init_from else None, scst=scst, scst_samples=scst_samples,
                               group_images=group_images)
    cfg = TrainConfig(out=str(out), epochs=epochs, max_steps=max_steps, batch_size=batch_size, lr=lr,
                      weight_decay=weight_decay, grad_clip=grad_clip, patience=patience, eval_every=eval_every,
                      seed=seed, device=device, resume=resume, precision=precision)
    summary = train_captioner(opts, cfg)
    write_run_summary(out, summary)
    console.print(f"best val BLEU-4 {summary['best']} after {summary['steps']} steps "
                  f"({summary['train_seconds']:.0f} s); model in {out / 'best'}")


@eval_app.command("captioner")
def eval_captioner_cmd(
    model: Annotated[Path | None, typer.Option(help="Captioner folder (default: the shipped one).")] = None,
    split: Annotated[str, typer.Option(help="train, val or test.")] = "test",
    data: Annotated[str, typer.Option(help="flickr8k, shapes or a dataset folder.")] = "flickr8k",
    data_dir: Annotated[Path | None, typer.Option()] = None,
    beam: Annotated[int | None, typer.Option(min=1, max=20, help="Beam width (default: the model's own).")] = None,
    coco: Annotated[bool, typer.Option(help="Also the COCO metrics (pycocoevalcap + Java).")] = True,
    limit: Annotated[int | None, typer.Option(help="Only the first N images of the split.")] = None,
    out: Annotated[Path | None, typer.Option(help="Write the scores as JSON here.")] = None,
    mirror_average: MirrorAverageOption = None,
    no_repeat: NoRepeatOption = None,
) -> None:
    """Score a captioner against all references of a split: nltk BLEU-1..4 and COCO BLEU, METEOR, ROUGE-L, CIDEr-D."""
    from img2text2img.io import write_text_atomic
    from img2text2img.models.captioner import load_captioner
    from img2text2img.train.captioner import evaluate_captioner

    cap = load_captioner(model)
    _set_reading(cap, mirror_average, no_repeat)
    if not coco:
        warn("COCO metrics off: only nltk BLEU")
    scores = evaluate_captioner(cap, data, split, beam_size=beam, coco=coco,
                                data_dir=str(data_dir) if data_dir else None, limit=limit)
    text = json.dumps(scores, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text + "\n")
    console.print_json(text)


@app.command("average")
def average_cmd(
    members: Annotated[list[Path], typer.Argument(help="Two or more captioner folders of one lineage: epochs of a run, "
                                                       "or a run and a fine-tune started from it (--init-from).")],
    out: Annotated[Path, typer.Option(help="Where to write the averaged checkpoint.")] = Path("runs/average"),
    half: Annotated[bool, typer.Option(help="Store the weights as fp16 (half the size).")] = False,
) -> None:
    """Average captioners' weights into one checkpoint (a model soup): often a little better than each member, and
    no slower, unlike an ensemble. Members trained apart from different random starts do not average well."""
    from img2text2img.models.captioner import average_captioners

    model = average_captioners(members)
    model.save(out, half=half, info={"averaged": [str(m) for m in members]})
    console.print(f"wrote the average of {len(members)} {model.config.encoder}+{model.config.decoder} captioners to {out}")


@app.command("ensemble")
def ensemble_cmd(
    members: Annotated[list[Path], typer.Argument(help="Two or more captioner folders on the same encoder and "
                                                       "vocabulary: runs with other --seed values, or other decoders "
                                                       "(lstm + attention).")],
    out: Annotated[Path, typer.Option(help="Where to write the ensemble checkpoint.")] = Path("runs/ensemble"),
    half: Annotated[bool, typer.Option(help="Store the weights as fp16 (half the size).")] = False,
) -> None:
    """Combine captioners trained apart into one checkpoint that averages their word probabilities at every step.

    Use it like any captioner: `i2t caption photo.jpg --model OUT`, `i2t eval captioner --model OUT`."""
    from img2text2img.models.captioner import ensemble_captioners

    model = ensemble_captioners(members)
    model.save(out, half=half, info={"members": [str(m) for m in members]})
    kinds = "+".join(c.decoder for c in model.config.member_configs())
    console.print(f"wrote an ensemble of {model.config.members} decoders ({kinds}) on {model.config.encoder} to {out}")
