"""One training loop for every model in the toolkit.

A model family only says what a batch is and what its loss is (a `TrainTask`); `fit` does everything that must be the
same everywhere: device choice, seeding, a data order that depends only on (seed, epoch), DistributedDataParallel under
`torchrun`, mixed precision on CUDA, gradient clipping, a warm-up + cosine schedule, a progress display, atomic
checkpoints to `out/last` (and `out/best` for the best validation score), and `resume=True`, which continues from the
last checkpoint and — for a fixed seed — reaches the same weights as an uninterrupted run.

Resumption is exact because every source of randomness is either saved (torch / numpy / python RNG states, optimizer
and scheduler state) or derived from (seed, epoch, index): datasets that draw random things (a caption out of five,
an augmentation) should implement `set_epoch(epoch)` and seed from it, not from the global RNG.
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from img2text2img.checkpoint import (
    check_target,
    checkpoint_exists,
    load_checkpoint,
    load_trainer_state,
    save_checkpoint,
)
from img2text2img.config import config_to_dict
from img2text2img.errors import I2TError
from img2text2img.io import backup_of, legacy_backup_of
from img2text2img.train.checks import PRECISIONS, check_device_name, check_seed_range, check_train_config


@dataclass
class TrainConfig:
    out: str = "runs/model"  # run folder: out/last (latest checkpoint) and out/best (best validation score)
    epochs: int = 10
    max_steps: int | None = None  # stop after this many optimizer steps (overrides epochs when reached first)
    # end this invocation at this step, checkpointed, as if cut there (the schedule still runs to the total):
    # `--resume` continues; how a recipe replays a run that changed course at a known step
    stop_at: int | None = None
    batch_size: int = 64  # global batch: divided across processes under torchrun
    lr: float = 1e-3
    weight_decay: float = 0.0
    grad_clip: float | None = 5.0  # max global grad norm; None = off
    schedule: str = "cosine"  # cosine | constant
    warmup_steps: int = 0
    checkpoint_every: int = 500  # steps; a checkpoint is also written at each epoch end
    eval_every: int | None = None  # steps; None = at each epoch end
    patience: int | None = None  # early stopping: evaluations without improvement of the main metric
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_workers: int = 0
    # auto: fp16 autocast on CUDA, fp32 on the CPU; bf16: bf16 autocast (CPU or CUDA); fp32: no autocast.
    # Weights, optimizer state and the losses' reductions stay fp32 either way.
    precision: str = "auto"
    resume: bool = False
    force: bool = False  # a fresh run may replace the checkpoints of an earlier run in `out` (never other files)
    progress: bool = True
    log_every: int = 50  # steps between log lines when the output is not a terminal

    def __post_init__(self) -> None:
        check_train_config(self)


def train_config(recipe: Any, **settings: Any) -> TrainConfig:
    """A TrainConfig from a training recipe's fields of the same names (epochs, lr, ...), plus `settings` the
    command gives (out, device, resume, ...): each trainer's recipe holds its own defaults, the engine none."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    picked = {k: v for k, v in dataclasses.asdict(recipe).items() if k in names}
    return TrainConfig(**{**picked, **settings})


def pick_device(device: str = "auto") -> torch.device:
    """`auto` -> the local CUDA device when there is one (per-rank under torchrun), else the CPU."""
    dev = check_device_name(device)
    if dev is None:
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise I2TError(f"--device {device} asked for, but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise I2TError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                           f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return dev


def autocast_dtype_for(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype a training step runs under, or None for plain fp32.

    Why bf16 is offered on the CPU: on CPUs with bf16 matrix units (Intel AMX, AVX512-BF16) oneDNN runs bf16 matrix
    products several times faster than fp32 (docs/BENCHMARKS.md). It is opt-in there because the numbers change
    (bf16 keeps 8 bits of mantissa) and on CPUs without those units it is slower, not faster."""
    if precision not in PRECISIONS:
        raise I2TError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto" and device.type == "cuda":
        return torch.float16
    return None


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python, numpy and torch; each rank gets its own stream so dropout differs across processes."""
    check_seed_range(seed, rank)
    s = seed + rank
    random.seed(s)
    np.random.seed(s % (2**32))
    torch.manual_seed(s)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group `torchrun` describes in the environment (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class TrainTask:
    """What a model family tells the engine. Subclasses set `kind`, `model`, `vocab` and implement `train_dataset`
    and `loss`; everything else has a sensible default."""

    kind: str = "model"
    main_metric: str | None = None  # a key of `evaluate()`'s result; higher is better
    model: nn.Module
    vocab: Any

    def train_dataset(self) -> Dataset:
        raise NotImplementedError

    def collate(self, items: list) -> Any:
        return torch.utils.data.default_collate(items)

    def sample_lengths(self) -> Sequence[int] | None:
        """Per-example sequence lengths, or None. When given, each batch is drawn from examples of similar length,
        so a batch pads to its own length rather than to the longest caption in the data: on Flickr8k that removes
        about 40% of the LSTM steps. Batches are still shuffled, and the order is a pure function of (seed, epoch),
        so resuming stays exact."""
        return None

    def loss(self, model: nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
        """`model` is `self.model`, or its DDP wrapper: call it (not `self.model`) so gradients are synchronised."""
        raise NotImplementedError

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        params = [p for p in self.model.parameters() if p.requires_grad]
        return {"main": torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)}

    def training_step(self, batch: Any, step: int, ctx: StepContext) -> dict[str, float]:
        loss, logs = self.loss(ctx.model, batch)
        ctx.backward_step(loss, "main")
        return {"loss": float(loss.detach()), **logs}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        """Validation metrics (rank 0 only, in `torch.inference_mode`); empty = no evaluation."""
        return {}

    def on_checkpoint(self, path: Path, step: int) -> None:
        """Called on rank 0 after each checkpoint is written (e.g. to write a sample grid beside it)."""

    def checkpoint_config(self) -> dict:
        return config_to_dict(self.model.config)

    def checkpoint_inference(self) -> dict | None:
        """The model's inference settings (`model.settings`, a dataclass), saved beside its network config."""
        settings = getattr(self.model, "settings", None)
        return config_to_dict(settings) if dataclasses.is_dataclass(settings) else None

    def checkpoint_state(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_checkpoint_state(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state, strict=True)

    def batch_size_of(self, batch: Any) -> int:
        t = _first_tensor(batch)
        return int(t.shape[0]) if t is not None else 0

    def tokens_in(self, batch: Any) -> int:
        """Target tokens in a batch, for the tokens/s display (0 = not a sequence model)."""
        return 0


@dataclass
class StepContext:
    """Handed to `training_step`: the (possibly DDP-wrapped) model and a correct backward/step for each optimizer."""

    model: nn.Module
    optimizers: dict[str, torch.optim.Optimizer]
    schedulers: dict[str, torch.optim.lr_scheduler.LRScheduler]
    scaler: torch.amp.GradScaler | None
    grad_clip: float | None
    device: torch.device
    dist: DistInfo = field(default_factory=DistInfo)

    def backward_step(self, loss: torch.Tensor, name: str = "main") -> None:
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(opt)
        else:
            loss.backward()
        if self.grad_clip:
            params = [p for g in opt.param_groups for p in g["params"] if p.grad is not None]
            torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        if name in self.schedulers:
            self.schedulers[name].step()


class _LengthGroupedSampler(Sampler[int]):
    """The inner sampler's epoch order, regrouped: every `group` batches' worth of indices is sorted by length and
    cut into batches, and those batches are shuffled. Consecutive runs of `batch` indices form one batch, which is
    how the DataLoader consumes them."""

    def __init__(self, inner: DistributedSampler, lengths: Sequence[int], batch: int, seed: int, group: int = 50):
        self.inner, self.lengths, self.batch, self.seed, self.group = inner, lengths, batch, seed, group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch
        self.inner.set_epoch(epoch)

    def __iter__(self) -> Iterator[int]:
        order = list(self.inner)
        g = torch.Generator().manual_seed(self.seed * 7_919 + self.epoch)
        size = self.batch * self.group
        for lo in range(0, len(order), size):
            chunk = sorted(order[lo:lo + size], key=lambda i: self.lengths[i])
            batches = [chunk[i:i + self.batch] for i in range(0, len(chunk), self.batch)]
            full = [b for b in batches if len(b) == self.batch]
            for k in torch.randperm(len(full), generator=g).tolist():
                yield from full[k]
            for b in batches[len(full):]:  # a short last batch stays last (the loader drops it)
                yield from b

    def __len__(self) -> int:
        return len(self.inner)


class _SkipSampler(Sampler[int]):
    """The epoch's index order with the first `skip` indices dropped, so a resumed epoch continues mid-way."""

    def __init__(self, inner: Sampler[int], skip: int):
        self.inner, self.skip = inner, skip

    def __iter__(self) -> Iterator[int]:
        for i, idx in enumerate(self.inner):
            if i >= self.skip:
                yield idx

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)  # type: ignore[arg-type]


def _first_tensor(obj: Any) -> torch.Tensor | None:
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        obj = list(obj.values())
    if isinstance(obj, (list, tuple)):
        for o in obj:
            t = _first_tensor(o)
            if t is not None:
                return t
    return None


def move_to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, dict):
        return {k: move_to(v, device) for k, v in obj.items()}
    if isinstance(obj, list):
        return [move_to(v, device) for v in obj]
    if isinstance(obj, tuple):
        return type(obj)(*(move_to(v, device) for v in obj)) if hasattr(obj, "_fields") else tuple(move_to(v, device) for v in obj)
    return obj


def _lr_lambda(cfg: TrainConfig, total: int):
    def f(step: int) -> float:
        if cfg.warmup_steps and step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        if cfg.schedule == "constant":
            return 1.0
        progress = (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    if cfg.schedule not in ("cosine", "constant"):
        raise I2TError(f"unknown schedule {cfg.schedule!r} (cosine or constant)")
    return f


def _rng_state() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
    }


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    n = s["numpy"]
    np.random.set_state((n[0], n[1].numpy().astype(np.uint32), n[2], n[3], n[4]))
    p = s["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


class _Display:
    """A rich progress bar on a terminal; plain log lines every `log_every` steps otherwise (logs, CI, tests)."""

    def __init__(self, enabled: bool, total: int, start: int, log_every: int):
        self.enabled, self.total, self.log_every = enabled, total, log_every
        self.tty = enabled and sys.stdout.isatty()
        self.progress = None
        if self.tty:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self.progress = Progress(TextColumn("[bold]train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                     TextColumn("{task.fields[info]}"))
            self.progress.start()
            self.task_id = self.progress.add_task("train", total=total, completed=start, info="")

    def update(self, step: int, info: str) -> None:
        if self.progress is not None:
            self.progress.update(self.task_id, completed=step, info=info)
        elif self.enabled and (step % self.log_every == 0 or step == self.total):
            print(f"step {step}/{self.total} {info}", flush=True)

    def note(self, msg: str) -> None:
        if self.progress is not None:
            self.progress.console.print(msg)
        elif self.enabled:
            print(msg, flush=True)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def check_run_target(cfg: TrainConfig) -> None:
    """Refuse a fresh run into `cfg.out` when that would lose something (an earlier run: only with `force`; other
    files: never). `fit` checks it; trainers call it too, before the slow preparation of their data."""
    if cfg.resume:
        return
    if not cfg.force and checkpoint_exists(Path(cfg.out) / "last"):
        raise I2TError(f"{cfg.out} already holds a run; pass --resume to continue it, --force to replace it, or "
                       "choose another --out")
    check_target(cfg.out, cfg.force, "training run")


def fit(task: TrainTask, cfg: TrainConfig) -> dict:
    """Train `task.model` as `cfg` says; returns a summary (steps, best metric, last metrics, samples/s, seconds)."""
    device = pick_device(cfg.device)
    dist_info = init_distributed(device)
    out = Path(cfg.out)
    last_dir, best_dir = out / "last", out / "best"
    seed_everything(cfg.seed, dist_info.rank)
    model = task.model.to(device)

    dataset = task.train_dataset()
    if len(dataset) == 0:
        raise I2TError("the training set is empty")
    per_rank_batch = max(1, cfg.batch_size // dist_info.world)
    sampler = DistributedSampler(dataset, num_replicas=dist_info.world, rank=dist_info.rank, shuffle=True,
                                 seed=cfg.seed, drop_last=True)
    lengths = task.sample_lengths()
    if lengths is not None:
        sampler = _LengthGroupedSampler(sampler, lengths, per_rank_batch, cfg.seed)
    steps_per_epoch = max(1, len(sampler) // per_rank_batch)
    total = cfg.max_steps or cfg.epochs * steps_per_epoch  # max_steps, when given, wins over epochs

    optimizers = task.configure_optimizers(cfg)
    schedulers = {k: torch.optim.lr_scheduler.LambdaLR(o, _lr_lambda(cfg, total)) for k, o in optimizers.items()}
    autocast_dtype = autocast_dtype_for(cfg.precision, device)
    scaler = torch.amp.GradScaler("cuda") if autocast_dtype == torch.float16 else None

    step, epoch, batch_in_epoch, best, bad_evals = 0, 0, 0, -math.inf, 0
    metrics: dict[str, float] = {}
    if not cfg.resume and dist_info.main:
        check_run_target(cfg)
        for sub in (last_dir, best_dir, backup_of(last_dir), backup_of(best_dir), legacy_backup_of(last_dir),
                    legacy_backup_of(best_dir)):
            if sub.is_dir() and checkpoint_exists(sub):  # --force: only the checkpoints an earlier run wrote go
                shutil.rmtree(sub)
    if cfg.resume:
        if not checkpoint_exists(last_dir):
            raise I2TError(f"--resume: no checkpoint in {last_dir}")
        ckpt = load_checkpoint(last_dir, kind=task.kind)
        task.load_checkpoint_state(ckpt.state_dict)
        model.to(device)
        state = load_trainer_state(ckpt.path)
        if state is None:
            raise I2TError(f"--resume: {ckpt.path} has no trainer state (it is a final, not a resumable, checkpoint)")
        try:
            for k, o in optimizers.items():
                o.load_state_dict(state["optimizers"][k])
            for k, s in schedulers.items():
                s.load_state_dict(state["schedulers"][k])
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            if state.get("rng") and dist_info.rank < len(state["rng"]):
                _set_rng_state(state["rng"][dist_info.rank])
            step, epoch, batch_in_epoch = (int(ckpt.info[k]) for k in ("step", "epoch", "batch_in_epoch"))
            best = ckpt.info.get("best")
            best = -math.inf if best is None else float(best)  # stored as null when nothing was evaluated yet
            bad_evals = int(ckpt.info.get("bad_evals", 0))
        except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
            raise I2TError(f"--resume: the trainer state in {ckpt.path} does not fit this run ({type(e).__name__}: "
                           f"{str(e).splitlines()[0][:120] if str(e) else ''}); start afresh with --force") from None
        metrics = ckpt.metrics.get("val", {}) if isinstance(ckpt.metrics.get("val"), dict) else {}

    wrapped: nn.Module = model
    if dist_info.enabled:
        wrapped = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, find_unused_parameters=True)
    ctx = StepContext(wrapped, optimizers, schedulers, scaler, cfg.grad_clip, device, dist_info)

    def save(target: Path, with_trainer: bool) -> None:
        if not dist_info.main:
            return
        rngs = _gather_rng(dist_info)
        trainer_state = None
        if with_trainer:
            trainer_state = {"optimizers": {k: o.state_dict() for k, o in optimizers.items()},
                             "schedulers": {k: s.state_dict() for k, s in schedulers.items()},
                             "scaler": scaler.state_dict() if scaler is not None else None, "rng": rngs}
        info = {"step": step, "epoch": epoch, "batch_in_epoch": batch_in_epoch, "best": best if math.isfinite(best) else None,
                "bad_evals": bad_evals, "seed": cfg.seed, "train_config": config_to_dict(cfg)}
        save_checkpoint(target, kind=task.kind, config=task.checkpoint_config(), state_dict=task.checkpoint_state(),
                        vocab=task.vocab, metrics={"val": metrics, "step": step, "train_seconds": round(elapsed(), 1)},
                        info=info, trainer_state=trainer_state, inference=task.checkpoint_inference())
        task.on_checkpoint(target, step)

    def evaluate() -> bool:
        """Run validation; update best/ and early-stopping counters. Returns True when training should stop."""
        nonlocal metrics, best, bad_evals
        if dist_info.main:
            model.eval()
            with torch.inference_mode():
                metrics = task.evaluate(model)
            model.train()
        stop = False
        if dist_info.main and metrics and task.main_metric:
            score = metrics[task.main_metric]
            if score > best:
                best, bad_evals = score, 0
                save(best_dir, with_trainer=False)
            else:
                bad_evals += 1
                stop = cfg.patience is not None and bad_evals >= cfg.patience
            display.note(f"step {step}: " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
                         + (" (best)" if bad_evals == 0 else f" (no gain x{bad_evals})"))
        return _broadcast_flag(stop, dist_info)

    t0, samples, tokens = time.time(), 0, 0
    elapsed = lambda: time.time() - t0
    display = _Display(cfg.progress and dist_info.main, total, step, cfg.log_every)
    model.train()
    stop = False
    cut = cfg.stop_at is not None and step >= cfg.stop_at  # resumed at or past it: nothing to do
    try:
        while step < total and not stop and not cut:
            sampler.set_epoch(epoch)
            if hasattr(dataset, "set_epoch"):
                dataset.set_epoch(epoch)
            loader = DataLoader(dataset, batch_size=per_rank_batch, sampler=_SkipSampler(sampler, batch_in_epoch * per_rank_batch),
                                collate_fn=task.collate, num_workers=cfg.num_workers, drop_last=True,
                                pin_memory=device.type == "cuda", persistent_workers=False,
                                # its own generator: creating the loader must not consume the global RNG (exact resume)
                                generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch))
            for batch in loader:
                batch = move_to(batch, device)
                autocast = (torch.autocast(device.type, dtype=autocast_dtype) if autocast_dtype is not None
                            else contextlib.nullcontext())
                with autocast:
                    logs = task.training_step(batch, step, ctx)
                step += 1
                batch_in_epoch += 1
                samples += task.batch_size_of(batch) * dist_info.world
                tokens += task.tokens_in(batch) * dist_info.world
                if not all(math.isfinite(v) for v in logs.values()):
                    raise I2TError(f"training diverged at step {step} (non-finite loss {logs}); lower --lr")
                rate = samples / max(elapsed(), 1e-9)
                info = " ".join(f"{k}={v:.3f}" for k, v in logs.items()) + f" {rate:.0f} samples/s"
                if tokens:
                    info += f" {tokens / max(elapsed(), 1e-9):.0f} tok/s"
                display.update(step, info)
                if batch_in_epoch >= steps_per_epoch:
                    epoch, batch_in_epoch = epoch + 1, 0
                if cfg.eval_every and step % cfg.eval_every == 0 or cfg.eval_every is None and batch_in_epoch == 0:
                    stop = evaluate()
                cut = cfg.stop_at is not None and step >= cfg.stop_at
                if step % cfg.checkpoint_every == 0 or batch_in_epoch == 0 or stop or cut or step >= total:
                    save(last_dir, with_trainer=True)
                if stop or cut or step >= total:
                    break
    finally:
        display.close()
    if dist_info.main and not (cut and step < total) and not math.isfinite(best):
        # nothing was ever scored: the final weights are the best we know. Rewritten even when best/ exists, since a
        # resumed run's best/ is then the weights it was resumed from (shipping it would ship the old model).
        save(best_dir, with_trainer=False)
    _barrier(dist_info)
    return {"steps": step, "epochs": epoch, "best": best if math.isfinite(best) else None, "val": metrics,
            "train_seconds": round(elapsed(), 1), "samples_per_s": round(samples / max(elapsed(), 1e-9), 1),
            "out": str(out)}


def _gather_rng(d: DistInfo) -> list[dict]:
    # Only rank 0's RNG is saved; under DDP other ranks re-seed from (seed, rank) state on resume, which keeps weights
    # identical across ranks (DDP averages gradients) but not bit-identical to the uninterrupted run's dropout masks.
    return [_rng_state()]


def _broadcast_flag(flag: bool, d: DistInfo) -> bool:
    if not d.enabled:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0])
    dist.broadcast(t, src=0)
    return bool(t.item())


def _barrier(d: DistInfo) -> None:
    if d.enabled:
        import torch.distributed as dist

        dist.barrier()
