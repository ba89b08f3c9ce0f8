"""Train a latent diffusion generator (autoencoder, then denoiser) from scratch; a thin shell over the library.

    python scripts/train_diffusion.py --data flickr8k --out runs/diffusion [--resume] [--threads 1] [--steps N ...]

Every recipe field (`img2text2img.train.diffusion.DiffusionRecipe`) is an option of the same name.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

import torch

from img2text2img.errors import I2TError
from img2text2img.train.diffusion import DiffusionRecipe, train_diffusion


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="flickr8k", help="flickr8k, shapes[:N] or a caption folder")
    p.add_argument("--data-dir", default=None, help="where the dataset lives (default: found automatically)")
    p.add_argument("--out", required=True, help="run folder (stage 1 in OUT/autoencoder, the model in OUT/denoiser)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--log-every", type=int, default=50, help="steps between progress lines")
    p.add_argument("--stop-at", type=int, default=None,
                   help="end this invocation at this denoiser step, checkpointed (--resume continues)")
    hints = typing.get_type_hints(DiffusionRecipe)
    for f in dataclasses.fields(DiffusionRecipe):
        flag = "--" + f.name.replace("_", "-")
        if hints[f.name] is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=f.default, help=f.metadata["help"])
        else:
            p.add_argument(flag, type=hints[f.name], default=f.default, help=f.metadata["help"])
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = DiffusionRecipe(**{f.name: getattr(args, f.name) for f in dataclasses.fields(DiffusionRecipe)})
    try:
        summary = train_diffusion(args.data, args.out, recipe, data_dir=args.data_dir, resume=args.resume,
                                  device=args.device, log_every=args.log_every, stop_at=args.stop_at,
                                  command=["python", "scripts/train_diffusion.py", *(argv or sys.argv[1:])])
    except I2TError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if summary["denoiser"]["steps"] < recipe.steps:
        print(f"stopped at denoiser step {summary['denoiser']['steps']} of {recipe.steps} (--stop-at); "
              "--resume continues")
        return 0
    print(f"done: {summary['denoiser']['steps']} denoiser steps in {summary['denoiser']['train_seconds']} s; "
          f"the model is {args.out}/denoiser")
    return 0


if __name__ == "__main__":
    sys.exit(main())
