#!/usr/bin/env python
"""Export model folders to ONNX graphs for the torch-free runtime (`img2text2img.runtime`).

    python scripts/export_runtime.py MODEL_DIR [MODEL_DIR ...] [--out DIR] [--force] [--fp32]

Writes MODEL_DIR/onnx/ (graphs + manifest.json), or DIR with --out (one model only); checks each graph against the
torch model on an example before writing. Refuses to replace an existing export without --force. A scene generator
(the shapes default) has no export: it stays on torch.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from img2text2img.errors import I2TError, run_reporting_errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+", type=Path, help="model folders (checkpoint or run folders)")
    ap.add_argument("--out", type=Path, default=None, help="where the graphs go (default MODEL_DIR/onnx)")
    ap.add_argument("--force", action="store_true", help="replace an existing export")
    ap.add_argument("--fp32", action="store_true", help="store every weight as float32 (default: float16 where "
                    "that is lossless)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads while exporting")
    args = ap.parse_args(argv)
    if args.out is not None and len(args.models) > 1:
        raise I2TError("--out takes one model folder; export several into their own onnx/ folders")
    import torch

    from img2text2img.runtime.export import export_runtime

    if args.threads:
        torch.set_num_threads(args.threads)
    for model in args.models:
        t0 = time.perf_counter()
        print(f"exporting {model} ...", file=sys.stderr, flush=True)
        manifest = export_runtime(model, args.out, force=args.force, half=not args.fp32)
        sizes = ", ".join(f"{name} {size / 1e6:.1f} MB" for name, size in manifest["sizes"].items())
        total = sum(manifest["sizes"].values()) / 1e6
        where = args.out or Path(model) / "onnx"
        print(f"{model}: {manifest['kind']} -> {where} ({sizes}; {total:.1f} MB in all; "
              f"{time.perf_counter() - t0:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(run_reporting_errors(main))
