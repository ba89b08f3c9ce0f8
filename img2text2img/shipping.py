"""The one way a trained model becomes a shipped one: a compact fp16 folder that says how it was made.

Every trainer, `i2t ship` and the scripts go through `ship()`, so each shipped folder records the same provenance:
the command that trained it, the git commit of the code, the parent checkpoints it started from (by name and weights
fingerprint) and the date. Nothing recorded is a path of the machine it was made on: folders are named by their last
component, paths inside the repository relative to it.
"""
from __future__ import annotations

import datetime as dt
import json
import shlex
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from img2text2img.checkpoint import OWN_FILES, check_target, read_metrics
from img2text2img.config import config_from_dict, config_to_dict
from img2text2img.errors import I2TError
from img2text2img.models import load_model, resolve_checkpoint_dir, weights_sha256
from img2text2img.runtime import RUNTIME_DIR, has_runtime

REPO = Path(__file__).resolve().parent.parent
PRETRAINED = Path(__file__).resolve().parent / "pretrained"


def portable_path(path: str | Path) -> str:
    """`path` as it may be recorded: relative to the repository when inside it, else its last component."""
    p = Path(path)
    if not p.is_absolute():
        return p.as_posix()
    try:
        return p.resolve().relative_to(REPO).as_posix()
    except ValueError:
        return p.name


def portable_command(command: str | Sequence[str]) -> str:
    """A command line with every absolute path (alone or after `--opt=`) made portable."""
    tokens = shlex.split(command) if isinstance(command, str) else list(command)
    out = []
    for tok in tokens:
        key, eq, value = tok.partition("=")
        if not (tok.startswith("--") and eq):
            key, eq, value = "", "", tok
        if value.startswith("/"):
            value = portable_path(value)
        out.append(f"{key}{eq}{value}")
    return shlex.join(out)


def git_commit() -> str | None:
    """The commit of the code doing the shipping (with `+dirty` when the tree has changes), None outside git."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=REPO, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], check=False, cwd=REPO,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("+dirty" if dirty else "")


def parent_record(path: str | Path) -> dict:
    """A parent checkpoint as provenance: its portable name and the sha256 of its weights."""
    return {"name": portable_path(resolve_checkpoint_dir(path)), "weights_sha256": weights_sha256(path)}


def provenance(command: str | Sequence[str] | None = None, parents: Sequence[str | Path] = (),
               extra: dict | None = None) -> dict:
    """The `info` block of a shipped model's config.json."""
    info = {
        "command": portable_command(command) if command else None,
        "git_commit": git_commit(),
        "parents": [parent_record(p) for p in parents],
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d"),
    }
    return {**info, **(extra or {})}


def target_dir(name_or_dir: str | Path) -> Path:
    """`--as NAME` ships into the package (`img2text2img/pretrained/NAME`); anything with a slash is a folder."""
    s = str(name_or_dir)
    if "/" in s or s.startswith("."):
        return Path(s)
    if not s.replace("_", "").replace("-", "").isalnum():
        raise I2TError(f"model name {s!r}: use letters, digits, '-' and '_'")
    return PRETRAINED / s


def drop_stale_graphs(out: Path, force: bool) -> bool:
    """With `force`, remove the runtime graphs (onnx/) of a shipped folder about to be replaced, so the check sees
    the checkpoint it replaces and no graph of the old weights is left; True when there were graphs."""
    if not has_runtime(out):
        return False
    if all(p.name in OWN_FILES or p.name == RUNTIME_DIR for p in out.iterdir()):  # a shipped model and its graphs
        if not force:
            raise I2TError(f"{out} already holds a model; pass --force to replace it")
        shutil.rmtree(out / RUNTIME_DIR)
    return True


def ship(model, out: str | Path, *, command: str | Sequence[str] | None = None, parents: Sequence[str | Path] = (),
         metrics: dict | None = None, extra: dict | None = None, force: bool = False,
         runtime: bool | None = None) -> Path:
    """Write `model` (any captioner, tagger or generator) as a shipped folder at `out` (a name or a folder):
    weights in fp16 without training-only parts, its vocabulary, `metrics` and the provenance above.

    The runtime graphs (onnx/) are exported again from the shipped weights when `runtime` is True, or (None) when
    the folder replaced had them and the model's kind has an export: graphs of other weights are never shipped."""
    from img2text2img.runtime.export import export_runtime, exportable

    out = target_dir(out)
    had_graphs = drop_stale_graphs(out, force)
    check_target(out, force)
    path = model.save(out, metrics=metrics, info=provenance(command, parents, extra), half=True, full=False)
    if runtime or (runtime is None and had_graphs and exportable(path)):
        export_runtime(path, force=True)
    return path


def with_settings(model, settings: dict[str, str]):
    """`model` with some inference settings (`model.settings`, e.g. guidance, beam_size) set from text values: how a
    setting chosen on the validation split is written into the model that ships."""
    import dataclasses

    if not settings:
        return model
    fields = {f.name: f for f in dataclasses.fields(model.settings)}
    unknown = sorted(set(settings) - set(fields))
    if unknown:
        raise I2TError(f"this model has no inference setting {', '.join(unknown)}; it has: {', '.join(fields)}")
    values = {}
    for key, text in settings.items():
        kind = type(getattr(model.settings, key))
        try:
            values[key] = kind(text) if kind is not bool else text.lower() in ("1", "true", "yes")
        except ValueError:
            raise I2TError(f"--set {key}={text}: expected a {kind.__name__}") from None
    # built like a checkpoint's settings are loaded, so --set guidance=inf is refused as a config.json value would be
    model.settings = config_from_dict(type(model.settings), {**config_to_dict(model.settings), **values})
    return model


def read_summary(path: Path) -> dict:
    """A run's summary.json as provenance needs it (command: text, parents: folder names), or one line on what is
    wrong with it: a hand-edited or truncated summary must not end the shipping in a traceback."""
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise I2TError(f"{path}: not a readable run summary ({type(e).__name__}); fix or delete it") from None
    if not isinstance(summary, dict):
        raise I2TError(f"{path}: not a run summary (expected a JSON object)")
    if summary.get("command") is not None and not isinstance(summary["command"], (str, list)):
        raise I2TError(f"{path}: key 'command' must be the command line as text")
    parents = summary.get("parents", [])
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise I2TError(f"{path}: key 'parents' must be a list of checkpoint folders")
    return summary


def ship_run(run: str | Path, out: str | Path, *, settings: dict[str, str] | None = None,
             force: bool = False, runtime: bool | None = None) -> Path:
    """Ship a training run folder (its `best/`, else `last/`, or one of them named) with the command and parents its
    summary recorded, and any inference `settings` changed. The runtime graphs are exported again (from the fp16
    weights, with the new settings) when the run's checkpoint or the folder replaced had them, or `runtime`."""
    run = Path(run)
    ckpt = resolve_checkpoint_dir(run)
    summary_file = run / "summary.json"
    if not summary_file.exists() and run.name in ("best", "last"):  # a run's checkpoint named directly
        summary_file = run.parent / "summary.json"
    summary = read_summary(summary_file) if summary_file.exists() else {}
    model = with_settings(load_model(ckpt), settings or {})
    if runtime is None and has_runtime(ckpt):
        runtime = True
    return ship(model, out, command=summary.get("command"), parents=summary.get("parents", []),
                metrics=read_metrics(ckpt) or None, force=force, runtime=runtime)
