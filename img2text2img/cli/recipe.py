"""Command-line options made from a recipe dataclass: each field made with `config.option()` becomes `--field-name`
with its help text and limits, so a training setting is declared once, in the library, and the CLI follows."""
from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import typing
from collections.abc import Callable
from typing import Annotated, Any

import typer

from img2text2img.errors import I2TError

MAX_SEED = 2**63 - 1  # what torch.manual_seed takes


def check_option(name: str, value: Any, meta: Any = None) -> None:
    """What click's ranges let through: nan and inf pass any `min`/`max` comparison, and a seed may be any size.
    Every number a recipe takes must be finite and within its limits; a seed within 0..2**63-1."""
    meta = meta or {}
    flag = "--" + name.replace("_", "-")
    if isinstance(value, (list, tuple)):
        for v in value:
            check_option(name, v, meta)
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise I2TError(f"{flag} {value}: must be a finite number")
    if "min" in meta and value < meta["min"]:
        raise I2TError(f"{flag} {value}: must be at least {meta['min']}")
    if "max" in meta and value > meta["max"]:
        raise I2TError(f"{flag} {value}: must be at most {meta['max']}")
    if (name == "seed" or name.endswith("_seed")) and not 0 <= value <= MAX_SEED:
        raise I2TError(f"{flag} {value}: a seed must be between 0 and 2**63-1")


def recipe_options(recipe_cls: type, *, panel: str = "Recipe") -> Callable[[Callable], Callable]:
    """Decorate a command `cmd(recipe: recipe_cls, **rest)`: the `recipe` parameter is replaced by one option per
    field of `recipe_cls`, and the command receives the dataclass built from them."""
    hints = typing.get_type_hints(recipe_cls)
    fields = [f for f in dataclasses.fields(recipe_cls) if f.init]

    def deco(cmd: Callable) -> Callable:
        sig = inspect.signature(cmd)
        resolved = typing.get_type_hints(cmd, include_extras=True)  # the command's own string annotations
        own = [p.replace(annotation=resolved.get(name, p.annotation)) for name, p in sig.parameters.items()
               if name != "recipe"]
        taken = {p.name for p in own}
        extra = []
        for f in fields:
            if f.name in taken:
                raise TypeError(f"{cmd.__name__}: option {f.name!r} is both a command parameter and a recipe field")
            meta = f.metadata
            limits = {k: meta[k] for k in ("min", "max") if k in meta}
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
            opt = typer.Option(help=meta.get("help", ""), rich_help_panel=panel, **limits)
            extra.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=default,
                                           annotation=Annotated[hints[f.name], opt]))
        names = {f.name for f in fields}

        @functools.wraps(cmd)
        def wrapper(**kwargs: Any):
            values = {k: kwargs.pop(k) for k in list(kwargs) if k in names}
            for f in fields:
                if f.name in values:
                    check_option(f.name, values[f.name], f.metadata)
            try:
                recipe = recipe_cls(**values)
            except (TypeError, ValueError) as e:
                raise I2TError(str(e).splitlines()[0] if str(e) else type(e).__name__) from None
            return cmd(recipe=recipe, **kwargs)

        positional = [p for p in own if p.kind is not inspect.Parameter.KEYWORD_ONLY]
        keyword = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own if p.kind is inspect.Parameter.KEYWORD_ONLY]
        wrapper.__signature__ = sig.replace(parameters=[*positional, *keyword, *extra])  # type: ignore[attr-defined]
        wrapper.__annotations__ = {}
        return wrapper

    return deco
