"""Where data, weights and word vectors live.

Large files are never part of the repository. Each kind of file is found, in order, through an explicit path, an
environment variable, and finally the project's sibling `shared/` folder when it exists. Nothing is cached in module
state, so tests can point the library anywhere by passing a path or setting the variable.
"""
from __future__ import annotations

import os
from pathlib import Path

from img2text2img.errors import I2TError

ENV_DATA = "I2T_DATA"  # a dataset folder (Flickr8k layout), or a folder holding several datasets
ENV_WEIGHTS = "I2T_WEIGHTS"  # a folder of encoder weight files
ENV_EMBEDDINGS = "I2T_EMBEDDINGS"  # a folder of word vectors
ENV_SHARED = "I2T_SHARED"  # the shared folder itself (data/, weights/, embeddings/)


def shared_roots() -> list[Path]:
    """Candidate `shared/` folders: `$I2T_SHARED`, then `../shared` beside the working tree or the source checkout."""
    roots = []
    if os.environ.get(ENV_SHARED):
        roots.append(Path(os.environ[ENV_SHARED]))
    here = Path(__file__).resolve().parent.parent  # the checkout root for an editable install
    for base in (Path.cwd(), here):
        roots.append(base.parent / "shared")
        roots.append(base / "shared")
    return unique_paths(roots)


def unique_paths(paths: list[Path]) -> list[Path]:
    """`paths` in order, without repeats of the same folder (compared after resolving links and `..`)."""
    seen, unique = set(), []
    for p in paths:
        key = str(p.resolve()) if p.exists() else str(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _resolve(explicit: str | Path | None, env: str, sub: str, what: str, required: bool) -> Path | None:
    tried = []
    if explicit is not None:
        p = Path(explicit).expanduser()
        if p.exists():
            return p
        raise I2TError(f"{what} not found at {p}")
    if os.environ.get(env):
        p = Path(os.environ[env]).expanduser()
        if p.exists():
            return p
        tried.append(f"${env}={p}")
    for root in shared_roots():
        p = root / sub
        if p.exists():
            return p
        tried.append(str(p))
    if required:
        raise I2TError(f"{what} not found (looked in {', '.join(tried)}); pass a path or set ${env}")
    return None


def flickr8k_dir(explicit: str | Path | None = None) -> Path:
    """The Flickr8k folder: explicit path > `$I2T_DATA` > `../shared/data/flickr8k`."""
    if explicit is None and os.environ.get(ENV_DATA):
        p = Path(os.environ[ENV_DATA]).expanduser()
        if (p / "flickr8k" / "captions.tsv").exists():
            return p / "flickr8k"
    return _resolve(explicit, ENV_DATA, "data/flickr8k", "Flickr8k dataset", required=True)


def weights_dir(explicit: str | Path | None = None) -> Path | None:
    """The folder of encoder weight files, or None when there is none."""
    return _resolve(explicit, ENV_WEIGHTS, "weights", "weights folder", required=False)


def embeddings_dir(explicit: str | Path | None = None) -> Path | None:
    """The folder of word vectors, or None when there is none."""
    return _resolve(explicit, ENV_EMBEDDINGS, "embeddings", "embeddings folder", required=False)


ENV_CACHE = "I2T_CACHE"  # generated datasets and encoder feature caches


def cache_dir(explicit: str | Path | None = None) -> Path:
    """Where generated data and feature caches go: explicit > `$I2T_CACHE` > `~/.cache/img2text2img`."""
    if explicit is not None:
        p = Path(explicit).expanduser()
    elif os.environ.get(ENV_CACHE):
        p = Path(os.environ[ENV_CACHE]).expanduser()
    else:
        p = Path.home() / ".cache" / "img2text2img"
    p.mkdir(parents=True, exist_ok=True)
    return p
