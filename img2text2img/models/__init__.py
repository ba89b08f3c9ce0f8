"""Models and the one-call loader.

`load_model(path)` reads a checkpoint folder and builds the model its config.json's `kind` names. The families are
looked up in `MODEL_KINDS` (kind -> module path) and imported only then, so that loading a tagger does not import the
generator, and no family module has to be imported by this package (which each of them imports).
"""
from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from img2text2img.checkpoint import CONFIG, load_checkpoint
from img2text2img.errors import I2TError

# kind -> (module, class); the class has `from_checkpoint(ckpt: Checkpoint)`
MODEL_KINDS = {
    "captioner": ("img2text2img.models.captioner", "Captioner"),
    "tagger": ("img2text2img.models.tagger", "Tagger"),
    "generator": ("img2text2img.models.generator", "Generator"),
}


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
    """A training run folder holds `best/` and `last/`; accept it as well as a checkpoint folder itself."""
    path = Path(path)
    for sub in ("best", "last"):
        if (path / sub / CONFIG).exists() and not (path / CONFIG).exists():
            return path / sub
    return path


def weights_sha256(path: str | Path) -> str | None:
    """The sha256 of a checkpoint's weights as its config.json records it (None without one), without loading or
    hashing the weights: how scripts and runs name exactly which model they used."""
    cfg = resolve_checkpoint_dir(path) / CONFIG
    return json.loads(cfg.read_text(encoding="utf-8")).get("weights_sha256") if cfg.exists() else None


def load_model(path: str | Path, kind: str | None = None, device: str = "cpu"):
    """Load any checkpoint folder (or training run folder) as a ready-to-use model in eval mode."""
    ckpt = load_checkpoint(resolve_checkpoint_dir(path), kind=kind)
    if ckpt.kind not in MODEL_KINDS:
        raise I2TError(f"{path}: unknown model kind {ckpt.kind!r}")
    module, cls = MODEL_KINDS[ckpt.kind]
    model = getattr(importlib.import_module(module), cls).from_checkpoint(ckpt)
    return model.to(device).eval()
