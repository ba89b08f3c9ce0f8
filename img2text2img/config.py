"""Config dataclasses that round-trip through JSON and refuse keys they do not know.

A checkpoint written by a newer or different model must fail loudly at load time, not silently drop a field.
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
