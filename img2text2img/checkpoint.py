"""A trained model is one folder: `config.json` + `model.safetensors` + `vocab.json` (+ `metrics.json`, + trainer state).

Folders are written to a temporary sibling and renamed into place, so a crash or a kill while saving leaves either
the previous checkpoint or the new one, never a mixture. Loading verifies the format version, the weights' sha256 and
the vocabulary's fingerprint, and turns any mismatch into a one-line `I2TError`.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from img2text2img.config import config_to_dict
from img2text2img.errors import I2TError
from img2text2img.io import atomic_folder, backup_of, legacy_backup_of, sha256_file, write_error
from img2text2img.version import __version__
from img2text2img.vocab import Vocabulary

FORMAT_VERSION = 1
CONFIG, WEIGHTS, VOCAB, METRICS = "config.json", "model.safetensors", "vocab.json", "metrics.json"
TRAINER_TENSORS, TRAINER_JSON = "trainer.safetensors", "trainer.json"
# what this package writes into a checkpoint folder (the trainers add a sample grid, average/ensemble a summary):
# `--force` replaces a checkpoint folder only when it holds nothing else, so no file a user put there is lost
OWN_FILES = {CONFIG, WEIGHTS, VOCAB, METRICS, TRAINER_TENSORS, TRAINER_JSON, "summary.json", "samples.png"}


@dataclass
class Checkpoint:
    """What a checkpoint folder holds, read and verified."""

    path: Path
    kind: str
    config: dict
    state_dict: dict[str, torch.Tensor]
    vocab: Vocabulary
    metrics: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)  # provenance and extras saved by the trainer (step, command, ...)
    # how the model is used, apart from what the network is (beam width, guidance, temperature); {} in checkpoints
    # written before the two were kept apart, whose model config still holds these keys
    inference: dict = field(default_factory=dict)


def save_model(model, path: str | Path, state_dict: dict[str, torch.Tensor], *, kind: str,
               metrics: dict | None = None, info: dict | None = None, half: bool = False) -> Path:
    """A model that carries `config`, `vocab` and inference `settings` dataclasses as a checkpoint folder: the one
    way the generators write themselves, so a new kind cannot forget its settings or its vocabulary."""
    if model.vocab is None:
        raise I2TError(f"cannot save a {kind} without its vocabulary")
    return save_checkpoint(path, kind=kind, config=config_to_dict(model.config), state_dict=state_dict,
                           vocab=model.vocab, metrics=metrics, info=info, half=half,
                           inference=config_to_dict(model.settings))


def save_checkpoint(
    path: str | Path,
    *,
    kind: str,
    config: dict,
    state_dict: dict[str, torch.Tensor],
    vocab: Vocabulary,
    metrics: dict | None = None,
    info: dict | None = None,
    trainer_state: dict | None = None,
    half: bool = False,
    inference: dict | None = None,
) -> Path:
    """Write a checkpoint folder atomically. `half=True` stores floating tensors as float16 (for shipped models);
    `inference` is the model's inference settings, saved beside its network config."""
    path = Path(path)
    with atomic_folder(path) as tmp:
        tensors = {}
        for k, v in state_dict.items():
            v = v.detach().cpu()
            if half and v.is_floating_point():
                v = v.half()
            tensors[k] = v.contiguous()
        write_tensors(tensors, tmp / WEIGHTS, path)
        vocab.save(tmp / VOCAB)
        meta = {
            "format_version": FORMAT_VERSION,
            "library_version": __version__,
            "kind": kind,
            "config": config,
            "inference": inference or {},
            "vocab_sha256": vocab.sha256,
            "weights_sha256": sha256_file(tmp / WEIGHTS),
            "info": info or {},
        }
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        if metrics is not None:
            (tmp / METRICS).write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        if trainer_state is not None:
            flat, skeleton = flatten_state(trainer_state)
            write_tensors(flat, tmp / TRAINER_TENSORS, path)
            (tmp / TRAINER_JSON).write_text(json.dumps(skeleton), encoding="utf-8")
    return path


def write_tensors(tensors: dict[str, torch.Tensor], file: Path, target: Path) -> None:
    """safetensors' writer raises its own error type (not OSError) on a full disk: one line naming the target."""
    try:
        save_file(tensors, str(file))
    except (SafetensorError, OSError) as e:
        raise write_error(target, e) from None


def is_checkpoint_folder(path: str | Path) -> bool:
    """A folder whose config.json is this package's (a format version and a kind), not any config.json."""
    try:
        meta = json.loads((Path(path) / CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "format_version" in meta and "kind" in meta


def checkpoint_exists(path: str | Path) -> bool:
    """A checkpoint at `path`, or its backup left by a save interrupted between its two renames."""
    return any(is_checkpoint_folder(p) for p in (Path(path), backup_of(path), legacy_backup_of(path)))


def load_checkpoint(path: str | Path, kind: str | None = None) -> Checkpoint:
    """Read and verify a checkpoint folder; `kind` (e.g. "captioner") refuses a checkpoint of another model kind."""
    path = Path(path)
    if not path.exists():
        old = next((p for p in (backup_of(path), legacy_backup_of(path)) if (p / CONFIG).exists()), None)
        if old is None:
            raise I2TError(f"model folder not found: {path}")
        path = old  # a save was interrupted between its two renames
    if not path.is_dir():
        raise I2TError(f"{path} is not a model folder (expected a folder with {CONFIG}, {WEIGHTS}, {VOCAB})")
    for name in (CONFIG, WEIGHTS, VOCAB):
        if not (path / name).exists():
            raise I2TError(f"{path}: missing {name}")
    try:
        meta = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (ValueError, RecursionError):
        raise I2TError(f"{path / CONFIG}: not valid JSON") from None
    except OSError as e:
        raise I2TError(f"{path / CONFIG}: cannot read ({e.strerror or e})") from None
    if not isinstance(meta, dict):
        raise I2TError(f"{path / CONFIG}: not a checkpoint's config (a JSON {type(meta).__name__}, not an object)")
    if meta.get("format_version") != FORMAT_VERSION or isinstance(meta.get("format_version"), bool):
        raise I2TError(f"{path}: checkpoint format version {meta.get('format_version')!r} is not supported "
                       f"(expected {FORMAT_VERSION})")
    if not isinstance(meta.get("kind"), str):
        raise I2TError(f"{path / CONFIG}: key 'kind' must be a model kind such as \"captioner\"")
    for key, typ in (("config", dict), ("inference", dict), ("info", dict), ("weights_sha256", str),
                     ("vocab_sha256", str)):
        if meta.get(key) is not None and not isinstance(meta[key], typ):
            raise I2TError(f"{path / CONFIG}: key {key!r} must be a JSON {'object' if typ is dict else 'string'}")
    if kind is not None and meta.get("kind") != kind:
        raise I2TError(f"{path} holds a {meta.get('kind')} model, not a {kind}")
    want = meta.get("weights_sha256")
    if want and sha256_file(path / WEIGHTS) != want:
        raise I2TError(f"{path / WEIGHTS} is corrupt or truncated (sha256 does not match config.json)")
    try:
        state = load_file(str(path / WEIGHTS))
    except (SafetensorError, OSError, ValueError, MemoryError) as e:
        raise I2TError(f"{path / WEIGHTS} cannot be read: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    state = {k: (v.float() if v.dtype == torch.float16 else v) for k, v in state.items()}
    try:
        vocab = Vocabulary.load(path / VOCAB)
        words_ok = all(isinstance(w, str) for w in vocab.itos)
    except (AttributeError, ValueError, TypeError, KeyError, RecursionError, OSError):
        words_ok = False
    if not words_ok:
        raise I2TError(f"{path / VOCAB}: not a valid vocab.json (expected {{\"format\": ..., \"words\": [...]}})")
    if meta.get("vocab_sha256") and vocab.sha256 != meta["vocab_sha256"]:
        raise I2TError(f"{path / VOCAB} does not match the vocabulary the weights were trained with")
    return Checkpoint(path, meta["kind"], meta.get("config") or {}, state, vocab, read_metrics(path),
                      meta.get("info") or {}, meta.get("inference") or {})


def read_metrics(path: str | Path) -> dict:
    """A checkpoint folder's `metrics.json` ({} when absent or unreadable) without reading its weights: tables that
    only need a run's numbers (training time, scores) should not pay for loading and hashing every model."""
    try:
        metrics = json.loads((Path(path) / METRICS).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return metrics if isinstance(metrics, dict) else {}


def load_trainer_state(path: str | Path) -> dict | None:
    """The optimizer/scheduler/RNG state saved beside a checkpoint for `--resume`, or None."""
    path = Path(path)
    if not (path / TRAINER_JSON).exists():
        return None
    try:
        skeleton = json.loads((path / TRAINER_JSON).read_text(encoding="utf-8"))
        state = unflatten_state(load_file(str(path / TRAINER_TENSORS)), skeleton)
    except (OSError, ValueError, SafetensorError, KeyError, TypeError, RecursionError) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else (str(e).splitlines()[0] if str(e) else "")
        raise I2TError(f"--resume: the trainer state in {path} is damaged or truncated ({type(e).__name__}"
                       f"{': ' + why[:120] if why else ''}); start afresh with --force") from None
    if not isinstance(state, dict):
        raise I2TError(f"--resume: the trainer state in {path / TRAINER_JSON} is not a trainer state")
    return state


# Optimizer and RNG states are nested dicts/lists of tensors and numbers; safetensors holds only flat tensor maps,
# so tensors go to the safetensors file under a path key and the structure goes to JSON (no pickle anywhere).


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, torch.Tensor], Any]:
    tensors: dict[str, torch.Tensor] = {}

    def walk(o: Any, key: str) -> Any:
        if isinstance(o, torch.Tensor):
            tensors[key] = o.detach().cpu().contiguous()
            return {"__tensor__": key}
        if isinstance(o, dict):
            return {"__dict__": [[walk(k, f"{key}.k{i}"), walk(v, f"{key}.{i}")] for i, (k, v) in enumerate(o.items())]}
        if isinstance(o, (list, tuple)):
            return {"__list__" if isinstance(o, list) else "__tuple__": [walk(v, f"{key}.{i}") for i, v in enumerate(o)]}
        if o is None or isinstance(o, (bool, int, float, str)):
            return o
        raise TypeError(f"cannot store {type(o).__name__} in trainer state")

    return tensors, walk(obj, prefix or "s")


def unflatten_state(tensors: dict[str, torch.Tensor], skeleton: Any) -> Any:
    def walk(o: Any) -> Any:
        if isinstance(o, dict):
            if "__tensor__" in o:
                return tensors[o["__tensor__"]]
            if "__dict__" in o:
                return {walk(k): walk(v) for k, v in o["__dict__"]}
            if "__list__" in o:
                return [walk(v) for v in o["__list__"]]
            if "__tuple__" in o:
                return tuple(walk(v) for v in o["__tuple__"])
        return o

    return walk(skeleton)


def check_target(path: str | Path, force: bool = False, what: str = "model",
                 is_ours: Callable[[Path], bool] | None = None) -> None:
    """Refuse to write a model or run folder where that would lose something: `path` may be absent or empty; a
    folder of this command's own kind is replaced only with `force`; anything else (a file, a folder of other
    things, a folder of the other kind) never is. The kind is `is_ours` when given, else a checkpoint folder
    (`what="model"`, holding nothing but a checkpoint's files) or a training run (`what="training run"`: best/
    and last/ checkpoints, and what the run wrote beside them)."""
    path = Path(path)
    if not path.exists() and not path.is_symlink():
        return
    if not path.is_dir():
        raise I2TError(f"{path} is a file, not a {what} folder; choose another place")
    try:
        entries = list(path.iterdir())
    except OSError as e:
        raise I2TError(f"{path}: cannot look inside ({e.strerror or e}); choose another place") from None
    if not entries:
        return
    if is_ours is not None:
        ours = is_ours(path)
    elif what == "training run":
        ours = is_run_folder(path)
    else:
        ours = is_checkpoint_folder(path)
    if not ours:
        other = ("a training run" if what != "training run" and is_run_folder(path) else
                 "a model, not a training run" if what == "training run" and is_checkpoint_folder(path) else None)
        raise I2TError(f"{path} exists and does not hold a {what}" + (f" (it holds {other})" if other else "")
                       + "; choose another place")
    if is_ours is None and what != "training run":
        foreign = sorted(p.name for p in entries if p.name not in OWN_FILES)
        if foreign:
            raise I2TError(f"{path} holds a {what} and other files ({', '.join(foreign[:3])}"
                           f"{', ...' if len(foreign) > 3 else ''}) that replacing it would delete; move them or "
                           "choose another place")
    if not force:
        raise I2TError(f"{path} already holds a {what}; pass --force to replace it")


def is_run_folder(path: str | Path) -> bool:
    """A training run: a checkpoint in best/ or last/, and no other kind of folder there."""
    path = Path(path)
    subs = [path / "best", path / "last"]
    if not any(checkpoint_exists(s) for s in subs):
        return False
    return all(checkpoint_exists(s) or not s.exists() or (s.is_dir() and not any(s.iterdir())) for s in subs)
