"""Which path runs a model: its exported ONNX graphs (no torch) or torch. One rule for the CLI's `--backend` and
the Python API's `backend=`, so the two never disagree about when the fast path is taken."""
from __future__ import annotations

import importlib.util
import warnings

from img2text2img.errors import I2TError

BACKENDS = ("auto", "torch", "onnx")


class RuntimeFallbackWarning(UserWarning):
    """The exported graphs could not be used (stale or damaged): the torch model runs instead."""


def torch_installed() -> bool:
    """Whether the `train` extra's torch is importable (checked without importing it: that alone takes seconds)."""
    return importlib.util.find_spec("torch") is not None


def choose_runtime(kind: str, model, data: str | None, device: str, backend: str | None = "auto",
                   torch_only: str | None = None, spelt: tuple[str, str] = ("backend=", "device=")):
    """The torch-free runtime model (`load_runtime`) when `backend` allows it and it can run here, else None (run
    the torch model).

    auto takes the runtime only when the model folder has an onnx/ export, `device` is surely the CPU and no
    torch-only option (`torch_only` names it) is set; graphs exported from other weights fall back to torch with a
    warning. onnx makes each of those a one-line error. None (the Python API's default) is torch when it is
    installed, else onnx. `spelt`: how the caller's user writes the two settings in errors (the CLI's
    ("--backend ", "--device ")). Nothing here imports torch."""
    from img2text2img.models import cpu_inference
    from img2text2img.models.names import resolve_model
    from img2text2img.runtime.export import exportable
    from img2text2img.runtime.load import has_runtime, load_runtime

    no_torch = backend is None and not torch_installed()
    if backend is None:
        backend = "onnx" if no_torch else "torch"
    choice = str(backend).strip().lower()
    if choice not in BACKENDS:
        raise I2TError(f"{spelt[0]}{backend!r}: use {', '.join(BACKENDS)}")
    if choice == "torch":
        return None
    folder = resolve_model(model, kind, data)
    if no_torch and (torch_only or not cpu_inference(device) or not (has_runtime(folder) or exportable(folder))):
        what = str(model) if model is not None else f"the shipped {data or 'flickr8k'} {kind}"
        raise I2TError(f"{what}{' with ' + torch_only if torch_only else ''} needs torch, which the base install "
                       "leaves out: pip install 'img2text2img[train]'")
    if choice == "onnx":
        if torch_only:
            raise I2TError(f"{spelt[0]}onnx: {torch_only} needs torch; drop one of them")
        if not cpu_inference(device):
            raise I2TError(f"{spelt[0]}onnx runs on the CPU; pass {spelt[1]}cpu (or {spelt[0]}torch for {device})")
        if not has_runtime(folder) and not exportable(folder):
            raise I2TError(f"{folder}: this model has no ONNX export (scene generators stay on torch); "
                           f"use {spelt[0]}torch")
        return load_runtime(folder, kind=kind)
    if torch_only or not cpu_inference(device) or not has_runtime(folder):
        return None
    try:
        return load_runtime(folder, kind=kind)
    except I2TError as e:  # stale or damaged graphs: the torch model still works
        warnings.warn(f"{e}; using torch", RuntimeFallbackWarning, stacklevel=2)
        return None
