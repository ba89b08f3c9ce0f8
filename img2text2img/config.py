"""Config dataclasses that round-trip through JSON and refuse keys they do not know.

A checkpoint written by a newer or different model must fail loudly at load time, not silently drop a field. A field
that was removed from a config is listed in the class's `REMOVED` (name -> the value it had by default): checkpoints
that still carry it load as long as it holds that value, since then the network it describes is the current one.
Training recipes and inference settings are dataclasses too; their fields are made with `option()`, whose help text
the CLI shows, so adding a setting touches one place. Loading checks every value against its field's type hint and
limits, so a damaged or hand-edited config.json fails as one line naming the key, not as a traceback later.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, TypeVar

from img2text2img.errors import ConfigError, I2TError

C = TypeVar("C")


def config_to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


# Limits for fields that declare none (`option(min=, max=)` wins): a config.json is user input, and a size of
# -5 or 10**9 must be refused before a network of that size is allocated.
INT_RANGE = (0, 8192)
WIDE_INTS = {"vocab_size": 2**21, "seed": 2**63 - 1}  # counts that may legitimately exceed INT_RANGE
FLOAT_LIMIT = 1e6
UNIT_FLOATS = ("dropout",)  # fractions: 0 <= x < 1
MAX_ITEMS, MAX_TEXT = 64, 10_000


def config_from_dict(cls: type[C], d: dict) -> C:
    """Build dataclass `cls` from `d`; nested dataclass fields are built recursively; unknown keys are an error, and
    so is a value of another type than the field's hint or outside its range (`ConfigError`, naming the key)."""
    if not isinstance(d, dict):
        raise ConfigError(f"{cls.__name__}: expected a JSON object, got {type(d).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    removed = getattr(cls, "REMOVED", {})
    for k in sorted(set(d) & set(removed), key=str):
        if d[k] != removed[k] and not (isinstance(d[k], list) and tuple(d[k]) == removed[k]):
            raise ConfigError(f"{cls.__name__}: {k}={short(d[k])} is an option this version no longer has (only "
                              f"{removed[k]!r} loads); use the release that trained this model")
    d = {k: v for k, v in d.items() if k not in removed}
    unknown = sorted(map(str, set(d) - set(fields)))
    if unknown:
        raise ConfigError(f"{cls.__name__} does not know the keys {', '.join(unknown)[:200]} (checkpoint from "
                          "another version?)")
    kwargs = {k: check_value(cls.__name__, k, hints.get(k), v, fields[k].metadata) for k, v in d.items()}
    try:
        return cls(**kwargs)
    except ConfigError:
        raise
    except I2TError as e:  # the class's own checks (__post_init__)
        raise ConfigError(f"{cls.__name__}: {e}") from None
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{cls.__name__}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None


def short(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check_value(owner: str, key: str, hint: Any, v: Any, meta: Any = None) -> Any:
    """`v` checked against the type hint `hint` (int, float, str, bool, Optional, tuples, nested dataclasses,
    Literal) and the field's limits; returns it converted (lists -> tuples, objects -> dataclasses)."""
    meta = meta or {}

    def fail(want: str) -> ConfigError:
        return ConfigError(f"{owner}: key {key!r} must be {want}, got {short(v)}")

    if hint is None or hint is Any:
        return v
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return check_value(owner, key, rest[0], v, meta)
        for a in rest:
            try:
                return check_value(owner, key, a, v, meta)
            except ConfigError:
                continue
        raise fail(" or ".join(getattr(a, "__name__", str(a)) for a in rest))
    if origin is typing.Literal:
        if v not in args:
            raise fail("one of " + ", ".join(map(repr, args)))
        return v
    if dataclasses.is_dataclass(hint):
        if not isinstance(v, dict):
            raise fail("a JSON object")
        return config_from_dict(hint, v)
    if origin is tuple or hint is tuple:
        if not isinstance(v, (list, tuple)):
            raise fail("a list")
        if len(v) > MAX_ITEMS:
            raise fail(f"a list of at most {MAX_ITEMS} items")
        if len(args) == 2 and args[1] is Ellipsis:
            item_hints = [args[0]] * len(v)
        elif args:
            if len(args) != len(v):
                raise fail(f"a list of {len(args)} items")
            item_hints = list(args)
        else:
            item_hints = [None] * len(v)
        return tuple(check_value(owner, f"{key}[{i}]", h, x, meta) for i, (h, x) in enumerate(zip(item_hints, v)))
    if origin is dict or hint is dict:
        if not isinstance(v, dict) or not all(isinstance(k, str) for k in v):
            raise fail("a JSON object")
        if len(v) > MAX_ITEMS:
            raise fail(f"an object of at most {MAX_ITEMS} keys")
        return v
    if hint is bool:
        if not isinstance(v, bool):
            raise fail("true or false")
        return v
    if hint is int:
        if isinstance(v, bool) or not isinstance(v, int):
            raise fail("a whole number")
        base = key.split("[")[0]
        lo, hi = meta.get("min", INT_RANGE[0]), meta.get("max", WIDE_INTS.get(base, INT_RANGE[1]))
        if not lo <= v <= hi:
            raise fail(f"between {lo} and {hi}")
        return v
    if hint is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise fail("a finite number")
        base = key.split("[")[0]
        if base in UNIT_FLOATS and not 0 <= v < 1:
            raise fail("at least 0 and below 1")
        lo, hi = meta.get("min", -FLOAT_LIMIT), meta.get("max", FLOAT_LIMIT)
        if not lo <= v <= hi:
            raise fail(f"between {lo} and {hi}")
        return float(v)
    if hint is str:
        if not isinstance(v, str):
            raise fail("a string")
        if len(v) > MAX_TEXT:
            raise fail(f"a string of at most {MAX_TEXT:,} characters")
        return v
    return v


def option(default: Any, help: str, **limits: Any) -> Any:
    """A recipe or inference-settings field with its help text (and `min`/`max` limits) for the CLI's --help."""
    return dataclasses.field(default=default, metadata={"help": help, **limits})


MAX_SEED = 2**63 - 1  # what torch.manual_seed takes
# Sampling arguments past these draw saturated (black or white) pictures; they are typos, not settings
MAX_GUIDANCE, MAX_TEMPERATURE, MAX_PER_PROMPT = 100.0, 100.0, 10_000


def check_number(name: str, value: Any, lo: float | None = None, hi: float | None = None,
                 integer: bool = False) -> float:
    """A library function's numeric argument (temperature, guidance, n, steps) checked like a CLI option: a number,
    finite, within [lo, hi]; a one-line `I2TError` naming it otherwise (nan and inf draw black or empty pictures)."""
    kind = "a whole number" if integer else "a number"
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        raise I2TError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value):
        raise I2TError(f"{name} must be finite, got {value}")
    if lo is not None and value < lo or hi is not None and value > hi:
        span = f"between {lo} and {hi}" if lo is not None and hi is not None else (
            f"at least {lo}" if lo is not None else f"at most {hi}")
        raise I2TError(f"{name} must be {span}, got {value}")
    return value


def check_seed(seed: Any) -> int:
    """A seed as torch takes it: a whole number in 0..2**63-1."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise I2TError(f"seed must be a whole number between 0 and 2**63-1, got {seed!r}")
    return seed
