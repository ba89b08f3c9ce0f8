"""`i2t generate`, `i2t train generator`, `i2t eval generator`: draw 64x64 pictures from sentences."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import app, eval_app, train_app
from img2text2img.cli.output import PrecisionOption, console, warn, write_run_summary
from img2text2img.errors import I2TError


def _show_prompt_warnings(caught: list) -> None:
    seen = set()
    for w in caught:
        msg = str(w.message)
        if msg not in seen:
            seen.add(msg)
            warn(msg)


@app.command("generate")
def generate(
    prompts: Annotated[list[str], typer.Argument(help="One or more sentences, e.g. \"a red circle on the left\".")],
    n: Annotated[int, typer.Option("-n", "--n", min=1, max=256, help="Pictures per sentence (a grid when > 1).")] = 1,
    seed: Annotated[int, typer.Option(help="Same seed, same pictures.")] = 0,
    model: Annotated[Path | None, typer.Option(help="Generator checkpoint or run folder (default: the built-in one).")] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="PNG file to write.")] = Path("generated.png"),
    force: Annotated[bool, typer.Option(help="Overwrite OUT if it exists.")] = False,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="Latent noise scale for vae/gan models; for a scene model (the built-in shapes one) the writer's sampling temperature, 0 = each sentence's likeliest scene (default: the model's).")] = None,
    scale: Annotated[int, typer.Option(min=1, max=16, help="Enlarge the PNG by this factor (nearest neighbour).")] = 1,
    data: Annotated[str, typer.Option(help="Which built-in generator draws when no --model is given: shapes (coloured "
                                           "shapes) or flickr8k (photos of people and dogs; blurry at this size).")] = "shapes",
    rerank_with: Annotated[Path | None, typer.Option(help="Captioner folder: draw --candidates samples per picture and "
                                                          "keep the one it finds the sentence most likely for.")] = None,
    candidates: Annotated[int, typer.Option(min=1, max=256, help="Samples per picture with --rerank-with.")] = 8,
    guidance: Annotated[float | None, typer.Option(min=0.0, help="pixel/vae/gan: draw the sentence this many times as "
                                                          "far from the average training sentence (1 = as trained; "
                                                          "default: the model's own, 2.5 for the built-in flickr8k one).")] = None,
) -> None:
    """Draw 64x64 pictures from sentences and write them as one PNG (one row per sentence)."""
    import warnings

    from img2text2img.models.generator import PromptWarning, load_generator, save_grid

    if out.exists() and not force:
        raise I2TError(f"{out} already exists; pass --force to overwrite it")
    if out.suffix.lower() != ".png":
        raise I2TError(f"{out}: the output must be a .png file")
    if model is None:
        from img2text2img.roundtrip import SHIPPED, default_model_dir

        if data not in SHIPPED:
            raise I2TError(f"--data must be one of: {', '.join(SHIPPED)} (or pass --model DIR)")
        model = default_model_dir("generator", data)
    gen = load_generator(model)
    if guidance is not None:
        gen = gen.guided(guidance)
    if rerank_with is not None:
        from img2text2img.rerank import reranked

        gen = reranked(gen, rerank_with, candidates)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PromptWarning)
        images = gen.generate(prompts, n=n, seed=seed, temperature=temperature)
    _show_prompt_warnings([w for w in caught if issubclass(w.category, PromptWarning)])
    save_grid(images, out, ncol=n if len(prompts) > 1 else None, scale=scale)
    console.print(f"wrote {len(images)} image{'s' if len(images) > 1 else ''} to {out}")


@train_app.command("generator")
def train_generator_cmd(
    kind: Annotated[str, typer.Option(help="pixel | vae | gan (or a preset such as pixel-tiny), or scene: for flat-colour pictures such as the shapes set, a writer of scenes (objects as learned sprites; models/scene_generator.py); train it with --batch-size 64 --lr 1e-3.")] = "pixel",
    data: Annotated[str, typer.Option(help="shapes, shapes:N, flickr8k, or a dataset folder.")] = "shapes",
    out: Annotated[Path, typer.Option(help="Run folder (last/, best/, samples/).")] = Path("runs/generator"),
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps.")] = 3000,
    batch_size: Annotated[int, typer.Option(min=1)] = 32,
    lr: Annotated[float, typer.Option()] = 2e-3,
    checkpoint_every: Annotated[int, typer.Option(min=1, help="Steps between checkpoints (each with samples.png).")] = 250,
    seed: Annotated[int, typer.Option()] = 0,
    resume: Annotated[bool, typer.Option(help="Continue the run in OUT from out/last.")] = False,
    limit: Annotated[int | None, typer.Option(help="Use only the first N training images.")] = None,
    glove: Annotated[bool, typer.Option(help="Initialise word vectors from GloVe (embed_dim 50).")] = False,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset is.")] = None,
    init_from: Annotated[Path | None, typer.Option(help="Start from another run's weights (its last/ checkpoint; "
                                                   "same kind), e.g. to fine-tune with --critic; --kind pixel "
                                                   "from a vae run keeps its drawing at z = 0 and drops the "
                                                   "latent code; --kind vae from a pixel run adds one (with "
                                                   "--z-dim/--prior) and draws as the pixel model until "
                                                   "trained.")] = None,
    critic: Annotated[Path | None, typer.Option(help="Captioner checkpoint that reads the drawings back: adds its "
                                                "cross-entropy of the prompt to the loss (pixel, vae). Judge the "
                                                "result with a different captioner.")] = None,
    critic_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the --critic loss.")] = 0.1,
    critic_shift: Annotated[float, typer.Option(min=0.0, help="The critic reads each drawing shifted by up to this "
                                                "many pixels (keeps the generator from fooling it with a pixel "
                                                "pattern).")] = 4.0,
    critic_target: Annotated[str, typer.Option(help="vae: what the critic reads: 'posterior' (reconstructions, "
                                               "anchored by the pixel loss) or 'prior' (samples from z ~ N(0, I); "
                                               "can drift into textures that fool the reader).")] = "posterior",
    critic_tv: Annotated[float, typer.Option(min=0.0, help="Total-variation penalty on the drawings the critic "
                                           "reads (discourages textures that fool it).")] = 0.0,
    perceptual: Annotated[str | None, typer.Option(help="Perceptual term (pixel, vae): an encoder name such as "
                                                   "mobilenet_v2, or a captioner checkpoint whose encoder compares "
                                                   "the drawing with the real image.")] = None,
    perceptual_weight: Annotated[float, typer.Option(min=0.0, help="Weight of the --perceptual term.")] = 1.0,
    perceptual_size: Annotated[int | None, typer.Option(min=32, help="Side in pixels the drawing is resized to "
                                                        "for the --perceptual encoder (default: the encoder's "
                                                        "input size; 112 trained Flickr8k ~4x faster "
                                                        "than 224 here).")] = None,
    prior: Annotated[str | None, typer.Option(help="vae: 'standard' (z ~ N(0, I)) or 'learned' (a prior predicted "
                                              "from the sentence; can be added with --init-from).")] = None,
    adv_weight: Annotated[float | None, typer.Option(min=0.0, help="vae: weight of a matching-aware "
                                                     "discriminator's loss on reconstructions and prior samples "
                                                     "(VAE-GAN; sharper edges; can be added with --init-from).")] = None,
    z_dim: Annotated[int | None, typer.Option(min=1, help="vae/gan: size of the latent code (default: the "
                                              "preset's). A fresh run only.")] = None,
    beta: Annotated[float | None, typer.Option(min=0.0, help="vae: weight of the KL term (default 1). Higher "
                                               "makes the code expensive, so what the sentence says should come "
                                               "from the sentence; can be changed with --init-from.")] = None,
    z_dropout: Annotated[float | None, typer.Option(min=0.0, max=0.99, help="vae: fraction of training drawings "
                                                    "made from the prior's mean instead of the image's code, so "
                                                    "the sentence alone must say where things are (default 0); "
                                                    "can be changed with --init-from.")] = None,
    sentence_dropout: Annotated[float | None, typer.Option(min=0.0, max=0.99, help="vae: fraction of training "
                                                           "sentences replaced by the batch's mean sentence "
                                                           "(classifier-free training, for drawing with --guidance; "
                                                           "default 0); can be changed with --init-from.")] = None,
    leak: Annotated[float | None, typer.Option(min=0.0, max=0.99, help="Negative slope of the decoder's "
                                               "activations (default 0: ReLU). A pixel generator on shapes can "
                                               "lose a whole ReLU stage early and draw flat grey for good; 0.2 "
                                               "keeps it alive. A fresh run only.")] = None,
    output: Annotated[str | None, typer.Option(help="rgb (a colour per pixel, pixel loss) or palette (each pixel "
                                               "picks one of --palette-size colours fitted to the training "
                                               "pictures, cross-entropy loss; draws hard edges). A fresh run, "
                                               "or --init-from an rgb run (only the output head starts afresh); "
                                               "not for gan.")] = None,
    palette_size: Annotated[int | None, typer.Option(min=2, max=256, help="Colours of a palette generator "
                                                     "(default 16).")] = None,
    channels: Annotated[str | None, typer.Option(help="Decoder widths at 4, 8, 16, 32 px, e.g. 128,64,64,32 "
                                                 "(default: the preset's). With --init-from, decoder weights "
                                                 "that still fit are kept and the rest start afresh.")] = None,
    refine: Annotated[int | None, typer.Option(min=0, help="Residual 3x3 blocks after the last N decoder stages "
                                               "(default: the preset's); can be added with --init-from.")] = None,
    decoder: Annotated[str | None, typer.Option(help="conv (one decoder draws the whole picture; the default) or "
                                                "layers (a background colour and one flat-coloured mask per "
                                                "thing the prompt names; rgb output). With --init-from, the text "
                                                "encoder and latent code are kept and the decoder starts afresh.")] = None,
    layers: Annotated[int | None, typer.Option(min=1, max=8, help="layers decoder: how many layers (default 3).")] = None,
    ordinal: Annotated[bool | None, typer.Option("--ordinal/--no-ordinal", help="layers decoder: layer k takes the "
                                                 "k-th thing the prompt names (default: the slots learn how to "
                                                 "share the words out).")] = None,
    window: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="layers decoder: keep each layer within "
                                                 "this radius (a fraction of the side) of its own peak, so a layer "
                                                 "draws one thing, not copies of it at places it might be (0 = off; "
                                                 "can be added with --init-from).")] = None,
    masks: Annotated[str | None, typer.Option(help="layers decoder: how each layer's mask is drawn: conv (a conv "
                                              "net per layer; the default) or sprites (one of --sprites template "
                                              "masks cut from the training pictures, chosen from the word that "
                                              "names the layer's thing and put where its conv mask is: shapes "
                                              "keep their corners; needs --ordinal; can be switched with "
                                              "--init-from).")] = None,
    sprites: Annotated[int | None, typer.Option(min=1, max=256, help="sprites masks: how many template masks "
                                                "(default 16).")] = None,
    count_weight: Annotated[float | None, typer.Option(min=0.0, help="ordinal layers decoder: weight of a term "
                                                       "teaching how many things the prompt names from how many "
                                                       "separate shapes the picture holds (default 0; can be "
                                                       "changed with --init-from).")] = None,
    shift_tolerance: Annotated[int | None, typer.Option(min=0, max=8, help="pixel/vae: score each drawing against "
                                                        "the real image shifted by up to this many pixels, the "
                                                        "best-fitting shift (default 0). Keeps shapes crisp where "
                                                        "the sentence does not fix their exact place; can be "
                                                        "changed with --init-from.")] = None,
    precision: PrecisionOption = "auto",
) -> None:
    """Train a text-to-image generator; a sample grid for fixed prompts is written at every checkpoint."""
    import torch

    from img2text2img.train.engine import TrainConfig
    from img2text2img.train.generator import train_generator

    if threads:
        torch.set_num_threads(threads)
    widths = None
    if channels is not None:
        try:
            widths = tuple(int(c) for c in channels.split(","))
        except ValueError:
            raise I2TError(f"--channels must be comma-separated integers such as 128,64,64,32, not {channels!r}") from None
    cfg = TrainConfig(out=str(out), max_steps=steps, batch_size=batch_size, lr=lr, checkpoint_every=checkpoint_every,
                      seed=seed, resume=resume, device=device, warmup_steps=min(50, steps // 10), log_every=25,
                      precision=precision)
    summary = train_generator(kind, data, cfg, data_dir=data_dir, limit=limit, glove=glove, init_from=init_from,
                              critic=critic, critic_weight=critic_weight,
                              critic_shift=critic_shift, critic_target=critic_target,
                              critic_tv=critic_tv, prior=prior, adv_weight=adv_weight, z_dim=z_dim, beta=beta,
                              z_dropout=z_dropout, sentence_dropout=sentence_dropout, leak=leak, output=output,
                              palette_size=palette_size,
                              channels=widths, refine=refine, shift_tolerance=shift_tolerance,
                              decoder=decoder, layers=layers, ordinal=ordinal, window=window, masks=masks,
                              sprites=sprites, count_weight=count_weight,
                              perceptual=perceptual, perceptual_weight=perceptual_weight,
                              perceptual_size=perceptual_size)
    write_run_summary(out, summary)
    console.print(json.dumps(summary, indent=2, default=str))


@eval_app.command("generator")
def eval_generator_cmd(
    model: Annotated[Path | None, typer.Option(help="Generator checkpoint or run folder (default: built-in).")] = None,
    data: Annotated[str, typer.Option(help="shapes:N, flickr8k, or a dataset folder.")] = "shapes:5000",
    split: Annotated[str, typer.Option()] = "test",
    n: Annotated[int, typer.Option(min=2, help="Test images to compare against.")] = 500,
    encoder: Annotated[str, typer.Option(help="Encoder whose features the distance is measured in.")] = "mobilenet_v2",
    size: Annotated[int, typer.Option(help="Encoder input size (images are resized to it).")] = 128,
    seed: Annotated[int, typer.Option()] = 0,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="Latent noise scale (vae/gan), or a scene generator's sampling temperature (default: the model's).")] = None,
    guidance: Annotated[float | None, typer.Option(min=0.0, help="pixel/vae/gan: distance from the average training sentence to draw at (default: the model's).")] = None,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Also write the result as JSON here.")] = None,
    data_dir: Annotated[Path | None, typer.Option()] = None,
) -> None:
    """Fréchet distance in encoder features (not the standard FID) and image-text cosine scores on a test split."""
    from img2text2img.io import write_text_atomic
    from img2text2img.train.generator import evaluate_generator

    result = evaluate_generator(model, data, split, n, encoder, size, seed, data_dir, temperature, guidance=guidance)
    result["model"] = str(model) if model else "built-in"
    text = json.dumps(result, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text + "\n")
    console.print(text)
