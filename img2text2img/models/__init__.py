"""Models and the one-call loader.

`load_model(model)` takes a shipped model's name (`models/names.py`) or a checkpoint folder and builds the model its
config.json's `kind` names. The families are looked up in `MODEL_KINDS` (kind -> module path) and imported only then,
so that loading a tagger does not import the generator, and no family module has to be imported by this package
(which each of them imports). torch is imported only when a model is loaded, so that the names table, `i2t models`
and `i2t --help` stay fast.
"""
from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from img2text2img.errors import ConfigError, I2TError
from img2text2img.models.names import resolve_model

CONFIG = "config.json"  # checkpoint.CONFIG, without importing torch with it

# kind -> (module, class); the class has `from_checkpoint(ckpt: Checkpoint)`
MODEL_KINDS = {
    "captioner": ("img2text2img.models.captioner", "Captioner"),
    "tagger": ("img2text2img.models.tagger", "Tagger"),
    "generator": ("img2text2img.models.generator", "Generator"),
}
# "generator" checkpoints whose config kind is one of these (the packages import models.generator's parts)
DIFFUSION = ("img2text2img.models.diffusion", "DiffusionGenerator")
GENERATOR_KINDS = {"diffusion": DIFFUSION, "latent-gan": ("img2text2img.models.gan", "LatentGAN")}


@contextmanager
def evaluating(module) -> Iterator[None]:
    """Run the block with `module` in eval mode, then give back the mode it had: inference methods are called from
    training loops too (validation, reranking, sample grids) and must not leave a training model in eval mode."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A shipped model's name, a checkpoint folder, or a training run folder (it holds `best/` and `last/`) -> the
    checkpoint folder."""
    path = resolve_model(path)
    for sub in ("best", "last"):
        if (path / sub / CONFIG).exists() and not (path / CONFIG).exists():
            return path / sub
    return path


def weights_sha256(path: str | Path) -> str | None:
    """The sha256 of a checkpoint's weights as its config.json records it (None without one), without loading or
    hashing the weights: how scripts and runs name exactly which model they used."""
    cfg = resolve_checkpoint_dir(path) / CONFIG
    return json.loads(cfg.read_text(encoding="utf-8")).get("weights_sha256") if cfg.exists() else None


# Files that exist on a machine with an NVIDIA driver (Linux, WSL): what `may_have_cuda` looks for
NVIDIA_FILES = ("/dev/nvidia0", "/dev/nvidiactl", "/proc/driver/nvidia/version", "/dev/dxg")


def may_have_cuda() -> bool:
    """Whether torch might see a CUDA GPU here, decided without importing torch (which costs seconds): an NVIDIA
    driver's files exist and CUDA_VISIBLE_DEVICES does not hide every device. A False is certain enough to run on
    the CPU without asking torch; a True is for torch (`inference_device`) to confirm."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", "unset").strip() in ("", "-1"):
        return False
    return any(Path(f).exists() for f in NVIDIA_FILES)


def cpu_inference(device: str | None = "auto") -> bool:
    """Whether `--device` surely means the CPU, without importing torch: `cpu`, or `auto` on a machine without an
    NVIDIA driver. What the CLI asks before it takes the torch-free runtime."""
    choice = ("auto" if device is None else str(device)).strip().lower()
    return choice == "cpu" or (choice == "auto" and not may_have_cuda())


def inference_device(device: str | None = "auto") -> str:
    """`auto` (or None) -> "cuda" when torch sees a GPU, else "cpu"; anything else is checked and returned. For
    inference only: training picks its device per rank (`train.engine.pick_device`)."""
    import torch

    choice = ("auto" if device is None else device).strip().lower()  # "" is a typo (an unset $VAR), not auto
    if choice == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(choice)
    except (RuntimeError, ValueError):
        raise I2TError(f"--device {device!r}: use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise I2TError(f"--device {device} asked for, but CUDA is not available on this machine")
    return str(dev)


def load_model(path: str | Path, kind: str | None = None, device: str = "cpu"):
    """Load a shipped model by name (`load_model("shapes-captioner")`), or any checkpoint or training run folder, as
    a ready-to-use model in eval mode; `device` may be "auto"."""
    from img2text2img.checkpoint import load_checkpoint  # torch: only when a model is loaded

    if not isinstance(path, (str, os.PathLike)):
        raise I2TError(f"expected a {kind or 'model'} name or folder, got {type(path).__name__}")
    ckpt = load_checkpoint(resolve_checkpoint_dir(resolve_model(path, kind)), kind=kind)
    if ckpt.kind not in MODEL_KINDS:
        raise I2TError(f"{path}: unknown model kind {ckpt.kind!r}")
    module, cls = MODEL_KINDS[ckpt.kind]
    if ckpt.kind == "generator" and isinstance(ckpt.config, dict) and ckpt.config.get("kind") in GENERATOR_KINDS:
        # dispatched here, not in the generator package: models.diffusion and models.gan import models.generator
        module, cls = GENERATOR_KINDS[ckpt.config["kind"]]
    try:
        model = getattr(importlib.import_module(module), cls).from_checkpoint(ckpt)
    except ConfigError as e:  # a config.json value of the wrong type or range: name the file it is in
        raise I2TError(f"{ckpt.path / CONFIG}: {e}") from None
    except I2TError as e:  # an unknown decoder, encoder or head name, a vocabulary of another size: name the folder
        raise (e if str(ckpt.path) in str(e) else I2TError(f"{ckpt.path}: {e}")) from None
    except (RuntimeError, MemoryError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        # weights that do not fit the network config.json describes (a hand-edited or mixed-up folder)
        msg = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise I2TError(f"{ckpt.path}: config.json and model.safetensors do not describe one model ({msg})") from None
    return model.to(inference_device(device)).eval()
