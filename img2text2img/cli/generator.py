"""`i2t generate`, `i2t train generator`, `i2t eval generator`: draw 64x64 pictures from sentences."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer

from img2text2img.cli import app, eval_app, train_app
from img2text2img.cli.output import (
    COMMAND_LINE,
    BackendOption,
    DeviceOption,
    PrecisionOption,
    console,
    inference_model,
    runtime_model,
    warn,
    write_run_summary,
)
from img2text2img.cli.recipe import recipe_options
from img2text2img.errors import I2TError
from img2text2img.train.diffusion_recipe import DiffusionRecipe
from img2text2img.train.generator_recipe import GeneratorRecipe


def show_prompt_warnings(caught: list, classes: tuple[type, ...]) -> None:
    """Prompt warnings once each as one line; any other warning caught with them is passed on as it came."""
    import warnings

    seen = set()
    for w in caught:
        msg = str(w.message)
        if not issubclass(w.category, classes):
            warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        elif msg not in seen:
            seen.add(msg)
            warn(msg)


def generator_kind(model: str | None, data: str | None) -> str | None:
    """The generator kind (pixel, vae, gan, scene, diffusion) its config.json names, read without loading it (None
    when it cannot be read: the loader then says why)."""
    from img2text2img.models.names import resolve_model
    from img2text2img.runtime.load import model_folder

    try:
        meta = json.loads((model_folder(resolve_model(model, "generator", data)) / "config.json").read_text("utf-8"))
        return str(meta["config"].get("kind", "pixel"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None


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
    temperature: Annotated[float | None, typer.Option(min=0.0, help="vae/gan: latent noise scale; diffusion: scale "
                                                      "of the starting noise (below 1: plainer pictures); scene (the "
                                                      "shipped shapes one): the writer's sampling temperature, 0 = "
                                                      "each sentence's likeliest scene. Default: the model's.")] = None,
    scale: Annotated[int, typer.Option(min=1, max=16, help="Enlarge the PNG by this factor (nearest neighbour).")] = 1,
    data: Annotated[str | None, typer.Option(help="Which shipped generator draws when no --model is given: flickr8k "
                                                  "(photos of people and dogs, blurry at this size; the default) or "
                                                  "shapes (coloured shapes).")] = None,
    rerank_with: Annotated[str | None, typer.Option(help="Any kind: a captioner (shipped name or folder); draw "
                                                         "--candidates samples per picture and keep the one it finds "
                                                         "the sentence most likely for (torch).")] = None,
    candidates: Annotated[int, typer.Option(min=1, max=256, help="Samples per picture with --rerank-with.")] = 8,
    guidance: Annotated[float | None, typer.Option(min=0.0, help="pixel/vae/gan: draw the sentence this many times as "
                                                          "far from the average training sentence (1 = as trained; "
                                                          "2.5 for the shipped flickr8k one); diffusion: the "
                                                          "classifier-free guidance scale (1 = none). Default: the "
                                                          "model's own.")] = None,
    steps: Annotated[int | None, typer.Option(min=1, max=1000, help="diffusion only: DDIM denoising steps (fewer is "
                                              "faster, more is finer; default: the model's own). Refused for other "
                                              "kinds.")] = None,
    device: DeviceOption = "auto",
    backend: BackendOption = "auto",
) -> None:
    """Draw 64x64 pictures from sentences and write them as one PNG (one row per sentence). Options by generator
    kind: --temperature and --guidance apply to pixel/vae/gan and diffusion (--temperature also to scene), --steps
    to diffusion only, --rerank-with to any. A vae/pixel/gan/diffusion model with an onnx/ export draws without
    torch on the CPU (--backend)."""
    import warnings

    from img2text2img.runtime.generator import PromptWarning as RuntimePromptWarning
    from img2text2img.runtime.generator import save_grid

    if out.exists() and not force:
        raise I2TError(f"{out} already exists; pass --force to overwrite it")
    if out.suffix.lower() != ".png":
        raise I2TError(f"{out}: the output must be a .png file")
    kind = generator_kind(model, data)
    if steps is not None and kind is not None and kind != "diffusion":
        raise I2TError(f"--steps is an option of diffusion generators; this is a {kind} generator")
    torch_only = "--rerank-with" if rerank_with is not None else None
    rt = runtime_model("generator", model, data, device, backend, torch_only=torch_only)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", RuntimePromptWarning)
        if rt is not None:  # the torch-free path: one ONNX Runtime graph
            images = rt.generate_pil(prompts, n=n, seed=seed, temperature=temperature, guidance=guidance,
                                     steps=steps)
            classes: tuple[type, ...] = (RuntimePromptWarning,)
        else:
            from img2text2img.models.generator import PromptWarning, generate_images

            warnings.simplefilter("always", PromptWarning)
            gen = inference_model("generator", model, data, device)
            images = generate_images(prompts, model=gen, n=n, seed=seed, temperature=temperature,
                                     rerank_with=rerank_with, candidates=candidates, guidance=guidance, steps=steps)
            classes = (RuntimePromptWarning, PromptWarning)
    show_prompt_warnings(caught, classes)
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
    """Train a text-to-image generator; a sample grid for fixed prompts is written at every checkpoint. (Latent
    diffusion has its own recipe: `i2t train diffusion`.)"""
    if recipe.kind.strip().lower() == "diffusion":
        raise I2TError("a diffusion generator has its own recipe and command: i2t train diffusion --help")
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


DIFFUSION_STAGES = ("autoencoder", "denoiser")  # train.diffusion.AE_DIR, DENOISER_DIR


def is_diffusion_run(path: Path) -> bool:
    """A diffusion training run: nothing but its two stage folders, at least one a run folder."""
    from img2text2img.checkpoint import is_run_folder

    entries = list(path.iterdir())
    return bool(entries) and all(p.name in DIFFUSION_STAGES and p.is_dir() for p in entries) and any(
        is_run_folder(p) for p in entries)


@train_app.command("diffusion")
@recipe_options(DiffusionRecipe)
def train_diffusion_cmd(
    recipe: DiffusionRecipe,
    data: Annotated[str, typer.Option(help="flickr8k, shapes, shapes:N, or a dataset folder.")] = "flickr8k",
    out: Annotated[Path, typer.Option(help="Run folder: stage 1 in OUT/autoencoder, the model in OUT/denoiser "
                                           "(ship it with `i2t ship OUT/denoiser --as NAME`).")] = Path("runs/diffusion"),
    resume: Annotated[bool, typer.Option(help="Continue the run in OUT where it stopped (either stage).")] = False,
    force: Annotated[bool, typer.Option(help="Replace the diffusion run already in OUT (a fresh run only).")] = False,
    data_dir: Annotated[Path | None, typer.Option(help="Where the dataset is.")] = None,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda | cuda:N")] = "auto",
    threads: Annotated[int | None, typer.Option(min=1, help="torch CPU threads (default: torch's choice).")] = None,
    log_every: Annotated[int, typer.Option(min=1, help="Steps between progress lines.")] = 50,
) -> None:
    """Train a latent diffusion generator from scratch in two stages: an autoencoder (L1 + perceptual), then a
    text-conditioned UNet denoiser over its latents with an EMA copy and sentence dropout for guidance. Checkpoints
    and sample grids every --checkpoint-every steps; --resume continues either stage."""
    import shutil

    import torch

    from img2text2img.checkpoint import check_target
    from img2text2img.train.diffusion import train_diffusion

    if resume and force:
        raise I2TError("--resume continues the run in OUT and --force replaces it: pass one of them")
    if threads:
        torch.set_num_threads(threads)
    if not resume:
        check_target(out, force, what="diffusion run", is_ours=is_diffusion_run)
        if out.is_dir():  # --force over a diffusion run (check_target refused anything else): only its stages go
            for stage in DIFFUSION_STAGES:
                if (out / stage).is_dir():
                    shutil.rmtree(out / stage)
    args = COMMAND_LINE.get()
    summary = train_diffusion(data, out, recipe, data_dir=data_dir, resume=resume, device=device,
                              log_every=log_every, progress=True,
                              command=["i2t", *(sys.argv[1:] if args is None else args)])
    den = summary["denoiser"]
    console.print(f"{den.get('steps')} denoiser steps in {den.get('train_seconds', 0):.0f} s; the model is "
                  f"{out / 'denoiser'} (i2t generate PROMPT --model {out / 'denoiser'})")


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
