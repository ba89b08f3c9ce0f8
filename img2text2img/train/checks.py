"""What a training run may be asked to do, checked before any data is read: the engine's settings (`TrainConfig`)
and device names. A `--lr nan` or a `--max-steps -5` must be one line naming the option, not a run that trains
nothing, or diverges, and still exits 0."""
from __future__ import annotations

import math
from typing import Any

import torch

from img2text2img.config import MAX_SEED
from img2text2img.errors import I2TError

PRECISIONS = ("auto", "fp32", "bf16")


def check_seed_range(seed: int, rank: int = 0) -> None:
    if not 0 <= seed <= MAX_SEED - rank:
        raise I2TError(f"seed {seed} is outside 0..2**63-1")


def check_train_config(cfg: Any) -> None:
    """Refuse `TrainConfig` settings no run can use: one line naming the option."""
    def bad(name: str, want: str) -> I2TError:
        return I2TError(f"--{name.replace('_', '-')} {getattr(cfg, name)!r}: {want}")

    ints = {"epochs": 1, "batch_size": 1, "warmup_steps": 0, "checkpoint_every": 1, "num_workers": 0, "log_every": 1}
    for name, lo in {**ints, "max_steps": 1, "eval_every": 1, "patience": 1, "seed": 0}.items():
        v = getattr(cfg, name)
        if v is None and name in ("max_steps", "eval_every", "patience"):
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise bad(name, "must be a whole number")
        if v < lo:
            raise bad(name, f"must be at least {lo}")
    if cfg.seed > MAX_SEED:
        raise bad("seed", f"must be at most 2**63-1 ({MAX_SEED})")
    for name in ("lr", "weight_decay", "grad_clip"):  # 0 is allowed: no step (tests), no decay, no clipping
        v = getattr(cfg, name)
        if v is None and name == "grad_clip":
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise bad(name, "must be a finite number")
        if v < 0:
            raise bad(name, "must not be negative")
    if cfg.schedule not in ("cosine", "constant"):
        raise bad("schedule", "must be cosine or constant")
    if cfg.precision not in PRECISIONS:
        raise I2TError(f"precision must be one of {', '.join(PRECISIONS)}, got {cfg.precision!r}")
    check_device_name(cfg.device)


DEVICE_HELP = "auto, cpu, cuda or cuda:N"


def check_device_name(device: str) -> torch.device | None:
    """The device a `--device` value names (None for auto), or a one-line error for a name torch does not know."""
    if not isinstance(device, str):
        raise I2TError(f"--device {device!r}: expected {DEVICE_HELP}")
    if device == "auto":
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise I2TError(f"--device {device!r}: not a device name; use {DEVICE_HELP}") from None
    if dev.type not in ("cpu", "cuda"):
        raise I2TError(f"--device {device!r}: this toolkit runs on {DEVICE_HELP}")
    return dev
