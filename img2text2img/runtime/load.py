"""Find and load a model folder's exported graphs (its `onnx/` subfolder) as a torch-free runtime model."""
from __future__ import annotations

import json
from pathlib import Path

from img2text2img.errors import I2TError
from img2text2img.runtime.graphs import MANIFEST, read_manifest

RUNTIME_DIR = "onnx"


def model_folder(path: str | Path) -> Path:
    """A checkpoint folder, or a training run folder holding best/ or last/ (as `load_model` accepts)."""
    path = Path(path)
    for sub in ("best", "last"):
        if (path / sub / "config.json").exists() and not (path / "config.json").exists():
            return path / sub
    return path


def runtime_dir(path: str | Path, graphs: str | Path | None = None) -> Path:
    """The `onnx/` folder of a model folder (or `graphs`, exported elsewhere); a one-line I2TError when the model
    has none (or is no model)."""
    model = model_folder(path)
    if not (model / "config.json").exists():
        raise I2TError(f"model folder not found: {path}" if not model.exists() else f"{path}: missing config.json")
    folder = Path(graphs) if graphs is not None else model / RUNTIME_DIR
    if not (folder / MANIFEST).exists():
        raise I2TError(f"{path} has no exported runtime graphs ({folder.name}/); run: "
                       f"python scripts/export_runtime.py {path}")
    return folder


def has_runtime(path: str | Path) -> bool:
    """Whether `load_runtime(path)` would find graphs (cheap: no graph is read): what a CLI asks before choosing the
    torch-free path."""
    model = model_folder(path)
    return (model / "config.json").exists() and (model / RUNTIME_DIR / MANIFEST).exists()


def load_runtime(path: str | Path, kind: str | None = None, threads: int | None = None,
                 graphs: str | Path | None = None):
    """The model in folder `path` as a RuntimeCaptioner, RuntimeTagger, RuntimeGenerator or RuntimeDiffusion, from
    its `onnx/` graphs (or those in `graphs`). `kind` refuses another kind of model; graphs exported from other weights than
    the folder's are refused (export again). `threads`: ONNX Runtime's (default `$I2T_THREADS`, else all cores)."""
    folder = runtime_dir(path, graphs)
    model = model_folder(path)
    manifest = read_manifest(folder)
    try:
        meta = json.loads((model / "config.json").read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise I2TError(f"{model / 'config.json'}: not valid JSON") from None
    if kind is not None and meta.get("kind") != kind:
        raise I2TError(f"{path} holds a {meta.get('kind')} model, not a {kind}")
    if manifest.get("kind") != meta.get("kind") or manifest.get("weights_sha256") != meta.get("weights_sha256"):
        raise I2TError(f"{folder}: the graphs were exported from other weights than {model.name}'s; run: "
                       f"python scripts/export_runtime.py {path} --force")
    if manifest["kind"] == "captioner":
        from img2text2img.runtime.captioner import RuntimeCaptioner

        return RuntimeCaptioner(model, folder, manifest, threads)
    if manifest["kind"] == "tagger":
        from img2text2img.runtime.tagger import RuntimeTagger

        return RuntimeTagger(model, folder, manifest, threads)
    if manifest["kind"] == "generator" and manifest.get("generator") == "diffusion":
        from img2text2img.runtime.diffusion import RuntimeDiffusion

        return RuntimeDiffusion(model, folder, manifest, threads)
    if manifest["kind"] == "generator":
        from img2text2img.runtime.generator import RuntimeGenerator

        return RuntimeGenerator(model, folder, manifest, threads)
    raise I2TError(f"{folder}: unknown runtime model kind {manifest.get('kind')!r}")
