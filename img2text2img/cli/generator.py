"""`i2t generate`, `i2t train generator`, `i2t eval generator`: draw 64x64 pictures from sentences."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import app, eval_app, train_app
from img2text2img.cli.output import DeviceOption, PrecisionOption, console, inference_model, warn, write_run_summary
from img2text2img.cli.recipe import recipe_options
from img2text2img.errors import I2TError
from img2text2img.train.generator_recipe import GeneratorRecipe


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
    model: Annotated[str | None, typer.Option(help="A shipped generator's name (`i2t models`: flickr8k-vae, "
                                                "shapes-scene) or a generator checkpoint / run folder. Default: the "
                                                "Flickr8k one, or the shapes one with --data shapes.")] = None,
    out: Annotated[Path, typer.Option("-o", "--out", help="PNG file to write.")] = Path("generated.png"),
    force: Annotated[bool, typer.Option(help="Overwrite OUT if it exists.")] = False,
    temperature: Annotated[float | None, typer.Option(min=0.0, help="Latent noise scale for vae/gan models; for a scene model (the shipped shapes one) the writer's sampling temperature, 0 = each sentence's likeliest scene (default: the model's).")] = None,
    scale: Annotated[int, typer.Option(min=1, max=16, help="Enlarge the PNG by this factor (nearest neighbour).")] = 1,
    data: Annotated[str | None, typer.Option(help="Which shipped generator draws when no --model is given: flickr8k "
                                                  "(photos of people and dogs, blurry at this size; the default) or "
                                                  "shapes (coloured shapes).")] = None,
    rerank_with: Annotated[str | None, typer.Option(help="A captioner (shipped name or folder): draw --candidates "
                                                         "samples per picture and keep the one it finds the sentence "
                                                         "most likely for.")] = None,
    candidates: Annotated[int, typer.Option(min=1, max=256, help="Samples per picture with --rerank-with.")] = 8,
    guidance: Annotated[float | None, typer.Option(min=0.0, help="pixel/vae/gan: draw the sentence this many times as "
                                                          "far from the average training sentence (1 = as trained; "
                                                          "default: the model's own, 2.5 for the shipped flickr8k one).")] = None,
    device: DeviceOption = "auto",
) -> None:
    """Draw 64x64 pictures from sentences and write them as one PNG (one row per sentence)."""
    import warnings

    from img2text2img.models.generator import PromptWarning, reranked, save_grid

    if out.exists() and not force:
        raise I2TError(f"{out} already exists; pass --force to overwrite it")
    if out.suffix.lower() != ".png":
        raise I2TError(f"{out}: the output must be a .png file")
    gen = inference_model("generator", model, data, device)
    if guidance is not None:
        gen = gen.guided(guidance)
    if rerank_with is not None:
        gen = reranked(gen, rerank_with, candidates)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", PromptWarning)
        images = gen.generate(prompts, n=n, seed=seed, temperature=temperature)
    _show_prompt_warnings([w for w in caught if issubclass(w.category, PromptWarning)])
    save_grid(images, out, ncol=n if len(prompts) > 1 else None, scale=scale)
    console.print(f"wrote {len(images)} image{'s' if len(images) > 1 else ''} to {out}")


@train_app.command("generator")
@recipe_options(GeneratorRecipe)
def train_generator_cmd(
    recipe: GeneratorRecipe,
    data: Annotated[str, typer.Option(help="shapes, shapes:N, flickr8k, or a dataset folder.")] = "shapes",
    out: Annotated[Path, typer.Option(help="Run folder (last/, best/, samples/).")] = Path("runs/generator"),
    resume: Annotated[bool, typer.Option(help="Continue the run in OUT from out/last.")] = False,
    force: Annotated[bool, typer.Option(help="Replace the run already in OUT (a fresh run only).")] = False,
    init_from: Annotated[Path | None, typer.Option(help="Start from another run's weights (its last/ checkpoint; "
                                                   "same kind; a vae may gain --prior learned).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset is.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    threads: Annotated[int | None, typer.Option(help="torch CPU threads (default: torch's choice).")] = None,
    precision: PrecisionOption = "auto",
) -> None:
    """Train a text-to-image generator; a sample grid for fixed prompts is written at every checkpoint."""
    import torch

    from img2text2img.checkpoint import check_target
    from img2text2img.train.generator import train_config, train_generator

    if threads:
        torch.set_num_threads(threads)
    if not resume:  # fail before the pictures are loaded, not after (fit() checks again before it writes)
        check_target(out, force, what="training run")
    cfg = train_config(recipe, out, resume=resume, force=force, device=device, precision=precision)
    summary = train_generator(recipe, data, cfg, data_dir=data_dir, init_from=init_from)
    write_run_summary(out, summary)
    console.print(json.dumps(summary, indent=2, default=str))


@eval_app.command("generator")
def eval_generator_cmd(
    model: Annotated[str | None, typer.Option(help="A shipped generator's name or a generator checkpoint / run folder "
                                                "(default: the shipped one for --data).")] = None,
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
    device: DeviceOption = "auto",
) -> None:
    """Fréchet distance in encoder features (not the standard FID) and image-text cosine scores on a test split."""
    from img2text2img.io import write_text_atomic
    from img2text2img.models.names import default_model, shipped_data
    from img2text2img.train.generator import evaluate_generator

    shipped = default_model("generator", shipped_data(data)) if model is None else None
    gen = inference_model("generator", model if shipped is None else shipped.name, None, device)
    result = evaluate_generator(gen, data, split, n, encoder, size, seed, data_dir, temperature, guidance=guidance)
    result["model"] = shipped.name if shipped else str(model)
    text = json.dumps(result, indent=2)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomic(out, text + "\n")
    console.print(text)
