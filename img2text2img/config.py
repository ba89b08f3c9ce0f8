"""Config dataclasses that round-trip through JSON and refuse keys they do not know.

A checkpoint written by a newer or different model must fail loudly at load time, not silently drop a field. A field
that was removed from a config is listed in the class's `REMOVED` (name -> the value it had by default): checkpoints
that still carry it load as long as it holds that value, since then the network it describes is the current one.
Training recipes and inference settings are dataclasses too; their fields are made with `option()`, whose help text
the CLI shows, so adding a setting touches one place.
"""
from __future__ import annotations

import dataclasses
import typing
from typing import Any, TypeVar

from img2text2img.errors import I2TError

C = TypeVar("C")


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def config_from_dict(cls: type[C], d: dict) -> C:
    """Build dataclass `cls` from `d`; nested dataclass fields are built recursively; unknown keys are an error."""
    if not isinstance(d, dict):
        raise I2TError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    removed = getattr(cls, "REMOVED", {})
    for k in sorted(set(d) & set(removed)):
        if d[k] != removed[k] and not (isinstance(d[k], list) and tuple(d[k]) == removed[k]):
            raise I2TError(f"{cls.__name__}: {k}={d[k]!r} is an option this version no longer has (only "
                           f"{removed[k]!r} loads); use the release that trained this model")
    d = {k: v for k, v in d.items() if k not in removed}
    unknown = sorted(set(d) - names)
    if unknown:
        raise I2TError(f"{cls.__name__} does not know the keys {', '.join(unknown)} (checkpoint from another version?)")
    kwargs = {}
    for k, v in d.items():
        hint = hints.get(k)
        if dataclasses.is_dataclass(hint) and isinstance(v, dict):
            v = config_from_dict(hint, v)
        elif isinstance(v, list) and typing.get_origin(hint) is tuple:
            v = tuple(v)
        kwargs[k] = v
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise I2TError(f"{cls.__name__}: {e}") from None


def option(default: Any, help: str, **limits: Any) -> Any:
    """A recipe or inference-settings field with its help text (and `min`/`max` limits) for the CLI's --help."""
    return dataclasses.field(default=default, metadata={"help": help, **limits})
