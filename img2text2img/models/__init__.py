"""Models and the one-call loader.

`load_model(path)` reads a checkpoint folder and builds the right model from the `kind` stored in its config.json;
the kinds map to classes by name (no `if/elif` over model names).
"""
from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from img2text2img.errors import I2TError

# kind -> "module:Class"; each class has `from_checkpoint(ckpt: Checkpoint)`.
MODEL_KINDS = {
    "captioner": "img2text2img.models.captioner:Captioner",
    "tagger": "img2text2img.models.tagger:Tagger",
    "generator": "img2text2img.models.generator:Generator",
}


@contextmanager
def evaluating(module) -> Iterator[None]:
    """Run the block with `module` in eval mode (dropout off, BatchNorm on its statistics), then give back the mode
    it had. Why: inference methods are called from training loops too (validation, reranking, sample grids), and
    must not leave a model that was training switched to eval."""
    was_training = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was_training)


def resolve_checkpoint_dir(path: str | Path) -> Path:
    """A training run folder holds `best/` and `last/`; accept it as well as a checkpoint folder itself."""
    path = Path(path)
    for sub in ("best", "last"):
        if (path / sub / "config.json").exists() and not (path / "config.json").exists():
            return path / sub
    return path


def weights_sha256(path: str | Path) -> str | None:
    """The sha256 of a checkpoint's weights as its config.json records it (None without one), without loading or
    hashing the weights: how scripts and training runs name exactly which model they used or compared against."""
    import json

    cfg = resolve_checkpoint_dir(path) / "config.json"
    return json.loads(cfg.read_text(encoding="utf-8")).get("weights_sha256") if cfg.exists() else None


def load_model(path: str | Path, kind: str | None = None, device: str = "cpu"):
    """Load any checkpoint folder (or training run folder) as a ready-to-use model in eval mode."""
    from img2text2img.checkpoint import load_checkpoint

    ckpt = load_checkpoint(resolve_checkpoint_dir(path), kind=kind)
    target = MODEL_KINDS.get(ckpt.kind)
    if target is None:
        raise I2TError(f"{path}: unknown model kind {ckpt.kind!r}")
    module, cls = target.split(":")
    model = getattr(importlib.import_module(module), cls).from_checkpoint(ckpt)
    return model.to(device).eval()
